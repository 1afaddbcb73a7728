"""Simulated propulsion test rigs: readings every 6 minutes plus the ground truth of planted faults.

The point of the simulator is to make the detector's precision and recall *measurable*, so the
normal signal is built to be boring in exactly the way the detector assumes:

* each rig runs a slow operating cycle (idle, warm-up, steady run, cool-down) of 10-16 h, with
  smooth (cosine) transitions over 2-3 h, so a centered rolling median of 11 readings (66 min)
  follows the signal: on a straight or gently curved stretch the median sits on the reading;
* the measurement noise is SMALL AND BOUNDED: uniform noise (+-0.15 degC, +-0.4 hPa) quantised
  to the sensor resolution (0.1). For bounded uniform noise the largest deviation is only about
  twice the median absolute deviation, so max |z| = 2 * MAD / (1.4826 * MAD) ~ 1.35 before the
  detector's resolution floor (epsilon) lowers it further. Gaussian noise would instead put
  ~5 % of normal readings beyond |z| = 2 by construction, and the "ground truth" would then be
  wrong about what an anomaly is.

Faults (when `faults`) are planted on distinct readings so each has one unambiguous label:
nulls (one field), outliers (isolated spikes of +-8..25 degC or +-60..150 hPa, and pairs of
spikes 2-4 readings apart), duplicates (the same reading published again a few readings later),
drifting sensors (a linear drift for 8-16 h that crosses the absolute limit, then a
recalibration) and physically impossible values (-300 degC, 50 000 hPa, -42 h).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.rig.schema import LANDED_SCHEMA, TS_TYPE

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
TEMPERATURE_LIMIT_C = 80.0  # the absolute limits the drift is planted to cross (= Thresholds defaults)
PRESSURE_LIMIT_HPA = 1100.0

_SIGNAL_COLUMN = {"temperature": "temperature_c", "pressure": "pressure_hpa", "uptime": "uptime_h"}


def _level_exact(u: np.ndarray) -> np.ndarray:
    """Load level 0..1 over one operating cycle at phase `u` in [0, 1): idle, warm-up, run, cool-down, idle."""
    up = np.clip((u - 0.10) / 0.20, 0.0, 1.0)
    down = np.clip((u - 0.75) / 0.20, 0.0, 1.0)
    return 0.5 * (1.0 - np.cos(np.pi * up)) - 0.5 * (1.0 - np.cos(np.pi * down))


_LEVEL_GRID = np.linspace(0.0, 1.0, 4097)
_LEVEL_TABLE = _level_exact(_LEVEL_GRID)


def _level(u: np.ndarray) -> np.ndarray:
    """`_level_exact` looked up in a 4096-step table (steps of ~10 s of a cycle): far cheaper than two cosines."""
    return _LEVEL_TABLE[(u * 4096.0).astype(np.intp)]


def _scatter(col: np.ndarray, at: np.ndarray, extra: np.ndarray, extra_at: np.ndarray) -> np.ndarray:
    """`col` placed at positions `at` and `extra` at `extra_at` of one new array (np.insert without its copies)."""
    out = np.empty(col.size + extra.size, dtype=col.dtype)
    out[at] = col
    out[extra_at] = extra
    return out


def _pick_cells(rng: np.random.Generator, used: np.ndarray, count: int, limit: int) -> np.ndarray:
    """`count` distinct free cells below `limit` (flat indices), marked as used; fewer if the grid is full."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    cand = rng.integers(0, limit, size=count * 3 + 16)
    cand = cand[~used[cand]]
    _, first = np.unique(cand, return_index=True)
    cand = cand[np.sort(first)][:count]
    used[cand] = True
    return cand


def simulate_rigs(
    rigs: int,
    start_ns: int,
    hours: float,
    interval_s: float = 360.0,
    faults: bool = True,
    seed: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readings of `rigs` rigs for `hours` from `start_ns`, in publish order, and the planted faults.

    Returns (readings, ground_truth). Readings: rig_id (categorical "rig-01"...), ts (int ns UTC),
    temperature_c, pressure_hpa, uptime_h (NaN where a null is planted) and origin_seq (publish
    order). Ground truth: one row per reading a fault touched (a drift touches many) with rig_id,
    ts, kind (null|outlier|duplicate|drift|impossible), signal (temperature|pressure|uptime|None),
    origin_seq and `anomaly`: True for what the detector should find (outliers, and drift readings
    beyond the absolute limit); nulls and impossible values are cleaning's, duplicates dedup's.
    Everything is vectorised over a (reading, rig) grid laid out time-major, which is publish order.
    """
    rng = np.random.default_rng(seed)
    n = max(int(hours * 3600.0 / interval_s), 0)
    interval_ns = int(interval_s * NS_PER_S)
    width = max(2, len(str(rigs)))
    names = np.array([f"rig-{i + 1:0{width}d}" for i in range(rigs)], dtype=object)

    # Per-rig constants (broadcast over the time axis).
    offset_ns = rng.integers(0, max(interval_ns // 4, 1), size=rigs)
    period_h = rng.uniform(10.0, 16.0, size=rigs)
    phase = rng.uniform(0.0, 1.0, size=rigs)
    t_idle, t_run = rng.uniform(38.0, 45.0, size=rigs), rng.uniform(64.0, 72.0, size=rigs)
    p_idle, p_run = rng.uniform(990.0, 1005.0, size=rigs), rng.uniform(1035.0, 1052.0, size=rigs)
    wander = rng.uniform(0.0, 2 * np.pi, size=(2, rigs))
    uptime0 = rng.uniform(100.0, 5000.0, size=rigs)

    k = np.arange(n, dtype=np.int64)[:, None]
    t_h = k * (interval_s / 3600.0) + offset_ns / (3600.0 * NS_PER_S)
    level = _level(np.mod(t_h / period_h + phase, 1.0))
    temp = t_idle + (t_run - t_idle) * level + 0.6 * level * np.sin(2 * np.pi * t_h / 8.0 + wander[0])
    pres = p_idle + (p_run - p_idle) * level + 4.0 * np.sin(2 * np.pi * t_h / 30.0 + wander[1])
    running = level > 0.02
    uptime = uptime0 + np.cumsum(running, axis=0) * (interval_s / 3600.0)

    temp = temp + rng.uniform(-0.15, 0.15, size=temp.shape)
    pres = pres + rng.uniform(-0.4, 0.4, size=pres.shape)

    truth: list[tuple[np.ndarray, str, str | None, np.ndarray]] = []
    cells_dup = np.empty(0, dtype=np.int64)
    total = n * rigs
    if faults and total:
        temp, pres, uptime = temp.ravel(), pres.ravel(), uptime.ravel()
        used = np.zeros(total, dtype=bool)

        def record(cells: np.ndarray, kind: str, signal: str | None, anomaly: np.ndarray | bool) -> None:
            truth.append((cells, kind, signal, np.broadcast_to(anomaly, cells.shape)))

        # (d) drifting sensors: at least one episode when the run is long enough to show one.
        episodes = rng.poisson(hours / 250.0, size=rigs)
        if hours >= 12 and episodes.sum() == 0:
            episodes[rng.integers(rigs)] = 1
        for r in np.flatnonzero(episodes):  # a loop over rigs (and their few episodes), not readings
            for _ in range(episodes[r]):
                length = int(rng.uniform(8.0, 16.0) * 3600.0 / interval_s)
                start = int(rng.integers(0, max(n - length // 2, 1)))
                stop = min(start + length, n)
                cells = np.arange(start, stop) * rigs + r
                cells = cells[~used[cells]]
                if not cells.size:
                    continue
                used[cells] = True
                drift_h = (cells // rigs - start) * (interval_s / 3600.0)
                if rng.random() < 0.7:
                    temp[cells] += drift_h * rng.uniform(2.0, 4.0)
                    record(cells, "drift", "temperature", temp[cells] > TEMPERATURE_LIMIT_C)
                else:
                    pres[cells] += drift_h * rng.uniform(8.0, 15.0)
                    record(cells, "drift", "pressure", pres[cells] > PRESSURE_LIMIT_HPA)

        # (b) outliers: isolated spikes, and pairs a few readings apart (the second must not hide).
        pairs = _pick_cells(rng, used, max(int(rng.poisson(total / 600.0)), 1), max(total - 4 * rigs, 1))
        partner = pairs + rng.integers(2, 5, size=pairs.size) * rigs
        ok = ~used[partner]
        pairs, partner = pairs[ok], partner[ok]
        used[partner] = True
        spikes = np.concatenate([_pick_cells(rng, used, int(rng.poisson(total / 150.0)), total), pairs, partner])
        on_temp = rng.random(spikes.size) < 0.5
        sign = np.where(rng.random(spikes.size) < 0.75, 1.0, -1.0)
        tc, pc_ = spikes[on_temp], spikes[~on_temp]
        temp[tc] += sign[on_temp] * rng.uniform(8.0, 25.0, size=tc.size)
        pres[pc_] += sign[~on_temp] * rng.uniform(60.0, 150.0, size=pc_.size)
        record(tc, "outlier", "temperature", True)
        record(pc_, "outlier", "pressure", True)

        # (a) nulls and (e) impossible values, one field each.
        for kind, rate, values in (
            ("null", 300.0, {"temperature": np.nan, "pressure": np.nan, "uptime": np.nan}),
            ("impossible", 1000.0, {"temperature": -300.0, "pressure": 50_000.0, "uptime": -42.0}),
        ):
            cells = _pick_cells(rng, used, max(int(rng.poisson(total / rate)), 1), total)
            which = rng.integers(0, 3, size=cells.size)
            for i, (signal, value) in enumerate(values.items()):
                sel = cells[which == i]
                {"temperature": temp, "pressure": pres, "uptime": uptime}[signal][sel] = value
                record(sel, kind, signal, False)

        # (c) duplicates: normal readings published again 1-10 readings later.
        cells_dup = _pick_cells(rng, used, max(int(rng.poisson(total / 200.0)), 1), total)
        temp, pres, uptime = temp.reshape(n, rigs), pres.reshape(n, rigs), uptime.reshape(n, rigs)

    temp = np.round(temp, 1).ravel()
    pres = np.round(pres, 1).ravel()
    uptime = np.round(uptime, 2).ravel()
    rig_code = np.broadcast_to(np.arange(rigs, dtype=np.int32), (n, rigs)).ravel()
    ts = (start_ns + k * interval_ns + offset_ns).ravel()

    columns = {"rig_code": rig_code, "ts": ts, "temperature_c": temp, "pressure_hpa": pres, "uptime_h": uptime}
    seq_of_cell = np.arange(total, dtype=np.int64)
    dup_seq = np.empty(0, dtype=np.int64)
    if cells_dup.size:
        pos = np.minimum(cells_dup + rng.integers(1, 11, size=cells_dup.size) * rigs + 1, total)
        order = np.argsort(pos, kind="stable")
        dup_seq = np.empty_like(pos)
        dup_seq[order] = pos[order] + np.arange(pos.size)
        # An original cell's final position shifts by the copies inserted before it (at or below its index).
        seq_of_cell = seq_of_cell + np.cumsum(np.bincount(pos, minlength=total + 1))[:total]
        columns = {name: _scatter(col, seq_of_cell, col[cells_dup], dup_seq) for name, col in columns.items()}
        truth.append((cells_dup, "duplicate", None, np.zeros(cells_dup.size, dtype=bool)))

    readings = pd.DataFrame(
        {
            "rig_id": pd.Categorical.from_codes(columns["rig_code"], categories=names),
            "ts": columns["ts"],
            "temperature_c": columns["temperature_c"],
            "pressure_hpa": columns["pressure_hpa"],
            "uptime_h": columns["uptime_h"],
            "origin_seq": np.arange(columns["ts"].size, dtype=np.int64),
        }
    )

    if truth:
        sizes = [t[0].size for t in truth]
        cells = np.concatenate([t[0] for t in truth])
        kinds = np.repeat(np.array([t[1] for t in truth], dtype=object), sizes)
        seq = seq_of_cell[cells]
        seq[kinds == "duplicate"] = dup_seq
        gt = pd.DataFrame(
            {
                "rig_id": names[cells % rigs],
                "ts": ts[cells],
                "kind": kinds,
                "signal": np.repeat(np.array([t[2] for t in truth], dtype=object), sizes),
                "origin_seq": seq,
                "anomaly": np.concatenate([t[3] for t in truth]).astype(bool),
            }
        )
        gt = gt.sort_values(["rig_id", "ts", "kind"], kind="stable", ignore_index=True)
    else:
        gt = pd.DataFrame(
            {
                "rig_id": pd.Series(dtype=object),
                "ts": pd.Series(dtype=np.int64),
                "kind": pd.Series(dtype=object),
                "signal": pd.Series(dtype=object),
                "origin_seq": pd.Series(dtype=np.int64),
                "anomaly": pd.Series(dtype=bool),
            }
        )
    return readings, gt


def _empty_strings(n: int) -> pa.Array:
    """n empty strings built from buffers (all offsets zero): no Python objects for 10 M rows."""
    offsets = pa.py_buffer(np.zeros(n + 1, dtype=np.int32))
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(b"")])


def landed_table(readings: pd.DataFrame, origin_prefix: str = "rig.readings/0/") -> pa.Table:
    """`simulate_rigs` readings as the landing code would hand them over (LANDED_SCHEMA).

    Every row parsed cleanly (problems ''), NaN becomes null, origin is `origin_prefix` plus the
    publish sequence, and day is the UTC event day. The day strings are made once per distinct day
    and expanded through a dictionary, because strftime over millions of rows costs seconds.
    """
    ts = readings["ts"].to_numpy(dtype=np.int64)
    rig = readings["rig_id"]
    rig_arr = pa.array(rig.astype(object) if not isinstance(rig.dtype, pd.CategoricalDtype) else rig)
    if pa.types.is_dictionary(rig_arr.type):
        rig_arr = rig_arr.cast(pa.string())
    day_idx = ts // NS_PER_DAY
    uniq, inverse = np.unique(day_idx, return_inverse=True)
    day_strings = pa.array(np.datetime_as_string(uniq.astype("datetime64[D]"), unit="D").astype(object), pa.string())
    day = pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), day_strings).cast(pa.string())
    seq = pa.array(readings["origin_seq"].to_numpy(dtype=np.int64))
    origin = pc.binary_join_element_wise(origin_prefix, pc.cast(seq, pa.string()), "")
    n = len(readings)
    return pa.Table.from_arrays(
        [
            rig_arr,
            pa.array(ts, type=pa.int64()).cast(TS_TYPE),
            pa.array(readings["temperature_c"].to_numpy(), from_pandas=True),
            pa.array(readings["pressure_hpa"].to_numpy(), from_pandas=True),
            pa.array(readings["uptime_h"].to_numpy(), from_pandas=True),
            _empty_strings(n),
            origin,
            day,
        ],
        schema=LANDED_SCHEMA,
    )
