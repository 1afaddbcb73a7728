"""Wind-tunnel run simulator: physically plausible 72-channel signals with optional injected faults.

Physics (enough for QC and metrics to have something true to find):
- the tunnel ramps to the run's wind speed, holds it, and ramps down; air density follows the
  ideal gas law from the environment channels, dynamic pressure q = 1/2 rho V^2;
- forces are q * A_ref * coefficient; the coefficients depend on front/rear ride height and yaw
  (downforce falls as ride height rises, drag and side force grow with yaw);
- component loads split the downforce by aero balance; pressure taps follow a Cp distribution over
  a front-wing section (suction peak near the leading edge) scaled by the same load factor;
- noise is white sensor noise plus slow AR(1) unsteadiness, all generated vectorised.

Faults (ground truth returned with the run and written next to the lake by the CLI):
spike, dropout (a gap: samples removed), flatline (stuck at one value), out_of_range, drift (a ramp
from 20 % of the run to its end), drift_rezero (a ramp over part of the steady hold, then the sensor
is re-zeroed: it steps back to the true value before the hold ends) and drift_hold (a ramp over part
of the hold that then stops and keeps its offset). QC reports all three drifts as "drift"
(`aero_assets.windtunnel.qc.expected_kind`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from aero_assets.windtunnel.catalog import A_REF, WHEELBASE, Catalog, load_catalog

FAULT_KINDS = ("spike", "dropout", "flatline", "out_of_range", "drift", "drift_rezero", "drift_hold")
R_AIR = 287.05


@dataclass(frozen=True)
class RunConfig:
    wind_speed_ms: float = 50.0
    ride_height_front_mm: float = 30.0
    ride_height_rear_mm: float = 70.0
    yaw_deg: float = 0.0
    air_temp_c: float = 21.0
    air_pressure_pa: float = 101_325.0


@dataclass(frozen=True)
class Fault:
    channel: str
    kind: str
    start_s: float
    end_s: float
    magnitude: float = 0.0


@dataclass
class SimulatedRun:
    run_id: str
    started_ns: int
    config: RunConfig
    table: pa.Table  # long format, sorted by ts: ts, channel, value
    faults: list[Fault] = field(default_factory=list)

    @property
    def sample_count(self) -> int:
        return self.table.num_rows

    def ground_truth(self) -> dict:
        return {"run_id": self.run_id, "config": asdict(self.config), "faults": [asdict(f) for f in self.faults]}


def coefficients(cfg: RunConfig) -> dict[str, float]:
    """Downforce/drag/side coefficients and front balance for a setup (smooth, monotone trends)."""
    dfront, drear, yaw = cfg.ride_height_front_mm - 30.0, cfg.ride_height_rear_mm - 70.0, abs(cfg.yaw_deg)
    cl = 3.1 - 0.012 * dfront - 0.006 * drear - 0.04 * yaw - 0.0002 * dfront**2
    cd = 1.05 - 0.0015 * dfront + 0.002 * drear + 0.015 * yaw
    cy = 0.12 * cfg.yaw_deg
    balance = 0.42 - 0.004 * dfront + 0.002 * drear
    return {"cl": cl, "cd": cd, "cy": cy, "balance": balance}


def tunnel_speed(t: np.ndarray, duration: float, v: float) -> np.ndarray:
    ramp = min(2.0, 0.15 * duration)
    up = np.clip(t / ramp, 0, 1)
    down = np.clip((duration - t) / ramp, 0, 1)
    return v * np.minimum(up, down)


def cp_distribution(x_c: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Cp over a cambered front-wing section (inverted: the suction side faces the ground)."""
    suction = -(0.6 + 3.2 * np.exp(-x_c / 0.07)) * (1.0 - 0.55 * x_c)
    pressure = 1.0 - 1.6 * np.sqrt(x_c) + 0.45 * x_c
    return np.where(surface == "suction", suction, pressure)


def _unsteady(rng: np.random.Generator, n: int, rate: float, rel: float) -> np.ndarray:
    """Slow AR(1) unsteadiness (time constant ~0.3 s), unit-variance scaled by `rel`."""
    from scipy.signal import lfilter

    a = np.exp(-1.0 / (0.3 * rate))
    x = lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(n))
    return rel * x


def _signals(cat: Catalog, cfg: RunConfig, duration: float, rng: np.random.Generator) -> dict[str, tuple]:
    """Per channel: (t seconds, values) at the channel's nominal rate, without faults."""
    c = coefficients(cfg)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    frame = cat.frame
    by_rate: dict[int, dict[str, np.ndarray]] = {}

    def base(rate: int) -> dict[str, np.ndarray]:
        if rate not in by_rate:
            t = np.arange(round(duration * rate)) / rate
            # closed-loop temperature control: slow wander of a few hundredths of a degree, no trend
            temp = cfg.air_temp_c + 0.03 * _unsteady(rng, t.size, rate, 1.0) + 0.02 * rng.standard_normal(t.size)
            p = cfg.air_pressure_pa + 2.0 * rng.standard_normal(t.size)
            rho = p / (R_AIR * (temp + 273.15))
            v = tunnel_speed(t, duration, cfg.wind_speed_ms) * (1 + _unsteady(rng, t.size, rate, 0.003))
            by_rate[rate] = {"t": t, "temp": temp, "p": p, "rho": rho, "v": v, "q": 0.5 * rho * v * v}
        return by_rate[rate]

    def noisy(x: np.ndarray, rate: int, rel: float, absolute: float) -> np.ndarray:
        return x * (1 + _unsteady(rng, x.size, rate, rel)) + absolute * rng.standard_normal(x.size)

    for ch, row in frame.iterrows():  # per channel (72), never per sample
        rate = int(row["rate_hz"])
        b = base(rate)
        t, q, n = b["t"], b["q"], b["t"].size
        down = q * A_REF * c["cl"]
        cat_name = row["category"]
        if ch == "FB_FX":
            y = noisy(q * A_REF * c["cd"], rate, 0.01, 2.0)
        elif ch == "FB_FY":
            y = noisy(q * A_REF * c["cy"] * np.pi / 180 * 10, rate, 0.02, 3.0)
        elif ch == "FB_FZ":
            y = noisy(-down, rate, 0.01, 4.0)
        elif ch == "FB_MX":
            y = noisy(q * A_REF * c["cy"] * 0.05, rate, 0.02, 1.0)
        elif ch == "FB_MY":
            y = noisy(down * (c["balance"] - 0.5) * WHEELBASE, rate, 0.02, 2.0)
        elif ch == "FB_MZ":
            y = noisy(q * A_REF * c["cy"] * 0.3, rate, 0.02, 1.0)
        elif cat_name == "component_loads":
            share = {
                "CL_FW_L": c["balance"] * 0.30, "CL_FW_R": c["balance"] * 0.30,
                "CL_FLOOR_F": c["balance"] * 0.40, "CL_RW_L": (1 - c["balance"]) * 0.22,
                "CL_RW_R": (1 - c["balance"]) * 0.22, "CL_FLOOR_R": (1 - c["balance"]) * 0.26,
                "CL_DIFF": (1 - c["balance"]) * 0.20, "CL_BEAM": (1 - c["balance"]) * 0.10,
            }[ch]
            y = noisy(down * share, rate, 0.015, 1.5)
        elif cat_name == "pressure_taps":
            cp = cp_distribution(np.array([row["x_c"]]), np.array([row["surface"]]))[0]
            y = noisy(cp * q * (c["cl"] / 3.1), rate, 0.02, 5.0)
        elif ch == "FLOW_V":
            y = b["v"] + 0.05 * rng.standard_normal(n)
        elif ch == "FLOW_Q":
            y = q + 0.5 * rng.standard_normal(n)
        elif ch == "FLOW_PS":
            y = -0.02 * q + 1.0 * rng.standard_normal(n)
        elif ch == "FLOW_PT":
            y = 0.98 * q + 1.0 * rng.standard_normal(n)
        elif ch == "FLOW_TI":
            y = 0.25 + 0.02 * rng.standard_normal(n)
        elif ch == "FLOW_ANGLE":
            y = 0.1 * cfg.yaw_deg + 0.05 * rng.standard_normal(n)
        elif ch == "ENV_T":
            y = b["temp"]
        elif ch == "ENV_P":
            y = b["p"]
        elif ch == "ENV_RH":
            y = 45.0 + 0.2 * rng.standard_normal(n)
        elif ch == "ENV_RHO":
            y = b["rho"]
        elif ch == "POS_RH_F":
            y = cfg.ride_height_front_mm + 0.02 * rng.standard_normal(n)
        elif ch == "POS_RH_R":
            y = cfg.ride_height_rear_mm + 0.02 * rng.standard_normal(n)
        elif ch == "POS_YAW":
            y = cfg.yaw_deg + 0.005 * rng.standard_normal(n)
        elif ch == "POS_ROLL":
            y = 0.005 * rng.standard_normal(n)
        else:  # a catalog channel the physics does not know: plausible mid-range noise
            y = (row["min"] + row["max"]) / 2 + 0.01 * (row["max"] - row["min"]) * rng.standard_normal(n)
        out[ch] = (t, y.astype(np.float64))
    return out


def _inject(ch: str, t: np.ndarray, y: np.ndarray, kind: str, duration: float, lo: float, hi: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Fault]:
    span = hi - lo
    steady0, steady1 = 0.2 * duration, 0.8 * duration
    length = float(rng.uniform(0.05, 0.15) * duration)
    start = float(rng.uniform(steady0, max(steady0, steady1 - length)))
    end = start + length
    sel = (t >= start) & (t < end)
    if kind == "spike":
        idx = rng.choice(np.flatnonzero(sel), size=min(int(sel.sum()), int(rng.integers(3, 9))), replace=False)
        mag = float(rng.uniform(0.25, 0.45) * span)
        y = y.copy()
        y[idx] += mag * rng.choice([-1.0, 1.0], size=idx.size)
        return t, y, Fault(ch, kind, float(t[idx].min()), float(t[idx].max()), mag)
    if kind == "dropout":
        keep = ~sel
        return t[keep], y[keep], Fault(ch, kind, start, end)
    y = y.copy()
    if kind == "flatline":
        y[sel] = y[sel][0] if sel.any() else y[0]
        return t, y, Fault(ch, kind, start, end)
    if kind == "out_of_range":
        mag = float(hi + rng.uniform(0.1, 0.3) * span)
        y[sel] = mag + 0.001 * span * rng.standard_normal(int(sel.sum()))
        return t, y, Fault(ch, kind, start, end, mag)
    if kind == "drift":
        scale = max(float(np.std(y[(t > steady0) & (t < steady1)])), 1e-3 * span)
        mag = float(rng.uniform(8, 15) * scale)
        ramp = np.clip((t - steady0) / (duration - steady0), 0, 1)
        return t, y + mag * ramp, Fault(ch, kind, steady0, duration, mag)
    if kind in ("drift_rezero", "drift_hold"):  # draws of their own after the shared ones: other kinds unchanged
        scale = max(float(np.std(y[(t > steady0) & (t < steady1)])), 1e-3 * span)
        mag = float(rng.uniform(8, 15) * scale)
        d0 = float(rng.uniform(0.2, 0.35) * duration)  # the ramp starts inside the hold ...
        d1 = d0 + float(rng.uniform(0.15, 0.35) * duration)  # ... and ends by 70 % of the run
        ramp = np.clip((t - d0) / (d1 - d0), 0, 1)
        if kind == "drift_rezero":  # re-zeroed at d1: back to the true value for the rest of the hold
            return t, y + mag * np.where(t < d1, ramp, 0.0), Fault(ch, kind, d0, d1, mag)
        return t, y + mag * ramp, Fault(ch, kind, d0, duration, mag)
    raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS}")


def simulate_run(run_id: str, *, duration_s: float, started_ns: int, config: RunConfig | None = None,
                 fault_rate: float = 0.0, seed: int = 0, catalog: Catalog | None = None,
                 fault_kinds: tuple[str, ...] = FAULT_KINDS) -> SimulatedRun:
    """Simulate one run; each channel gets a fault with probability `fault_rate`."""
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    if not 0 <= fault_rate <= 1:
        raise ValueError("fault rate must be between 0 and 1")
    cat = catalog or load_catalog()
    cfg = config or RunConfig()
    rng = np.random.default_rng(seed)
    signals = _signals(cat, cfg, duration_s, rng)
    faults: list[Fault] = []
    names, ts_parts, val_parts, codes = [], [], [], []
    for i, (ch, (t, y)) in enumerate(signals.items()):
        if fault_rate and rng.random() < fault_rate and t.size > 20:
            row = cat.frame.loc[ch]
            t, y, fault = _inject(ch, t, y, str(rng.choice(fault_kinds)), duration_s,
                                  float(row["min"]), float(row["max"]), rng)
            faults.append(fault)
        names.append(ch)
        ts_parts.append(started_ns + np.round(t * 1e9).astype(np.int64))
        val_parts.append(y)
        codes.append(np.full(t.size, i, dtype=np.int32))
    ts = np.concatenate(ts_parts)
    order = np.argsort(ts, kind="stable")
    channel = pa.DictionaryArray.from_arrays(pa.array(np.concatenate(codes)[order]), pa.array(names))
    table = pa.table({
        "ts": pa.array(ts[order]).cast(pa.timestamp("ns", tz="UTC")),
        "channel": channel.cast(pa.string()),
        "value": pa.array(np.concatenate(val_parts)[order]),
    })
    return SimulatedRun(run_id, started_ns, cfg, table, faults)


def random_config(rng: np.random.Generator) -> RunConfig:
    """A plausible variant setup: ride heights and yaw around the baseline."""
    return RunConfig(
        wind_speed_ms=float(rng.choice([40.0, 50.0, 60.0])),
        ride_height_front_mm=float(np.round(rng.uniform(20, 45), 1)),
        ride_height_rear_mm=float(np.round(rng.uniform(55, 90), 1)),
        yaw_deg=float(np.round(rng.choice([0.0, 0.0, 1.5, 3.0]), 1)),
    )
