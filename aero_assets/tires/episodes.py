"""Alert episodes: when a tire crosses a threshold, for how long, how bad. One pure function for both paths.

The hourly `tires/alerts` asset and the live `aero stream tires-alerts` consumer both call
`detect_episodes`, so they find the same episodes with the same ids. That only works if an
episode depends on nothing but the log, so the rules are stated on the log:

- Readings of a tire are taken in log order (partition, offset; the key is the vehicle id, so a
  vehicle's readings share a partition). A reading is *in order* if its `ts` is later than every
  earlier reading of its tire; late readings still count in the window aggregates (event time)
  but never open, extend or close an episode - a stream processor cannot wait for them either.
- Conditions on in-order readings: `low_pressure` (pressure < threshold), `high_temperature`
  (temperature > threshold) and `rapid_pressure_loss` (pressure falling faster than a rate over a
  rolling window, for punctures).
- An episode is a run of in-condition readings of one tire and type in which consecutive ones are
  at most `clear_s` apart: noise around a threshold does not flap, and a tire "recovers" when it
  stays out of the condition for `clear_s`. It is *closed* once an in-order reading of the tire
  arrives more than `clear_s` after its last in-condition reading.
- Its id hashes vehicle, tire, type and the event time of the opening reading.

Every rule looks back a bounded time (`Thresholds.lookback_ns`), so episodes opened at or after
time T are found exactly from the readings with `ts >= T - lookback`: the hourly asset needs
only a few minutes before its hour, and the live consumer keeps only that much per tire.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.codec import TS_TYPE
from aero_assets.tires.decoder import TIRES

LOW_PRESSURE = "low_pressure"
HIGH_TEMPERATURE = "high_temperature"
RAPID_PRESSURE_LOSS = "rapid_pressure_loss"
ALERT_TYPES = (LOW_PRESSURE, HIGH_TEMPERATURE, RAPID_PRESSURE_LOSS)
_NS = 1_000_000_000


@dataclass(frozen=True)
class Thresholds:
    low_pressure_kpa: float = 200.0
    high_temperature_c: float = 90.0
    rapid_loss_kpa_per_min: float = 20.0
    rapid_loss_window_s: float = 30.0
    clear_s: float = 60.0

    @property
    def lookback_ns(self) -> int:
        """How far before a reading the rules look: the previous in-condition reading (`clear_s`),
        whose own rate needs the rolling window before it, plus a margin."""
        return int((self.clear_s + self.rapid_loss_window_s + 10.0) * _NS)

    def threshold(self, alert_type: str) -> float:
        return {LOW_PRESSURE: self.low_pressure_kpa, HIGH_TEMPERATURE: self.high_temperature_c,
                RAPID_PRESSURE_LOSS: self.rapid_loss_kpa_per_min}[alert_type]


EPISODE_SCHEMA = pa.schema([
    ("alert_id", pa.string()),
    ("vehicle_id", pa.string()),
    ("tire", pa.string()),
    ("alert_type", pa.string()),
    ("opened_at", TS_TYPE),
    ("last_at", TS_TYPE),
    ("closed", pa.bool_()),
    ("threshold", pa.float64()),
    ("peak_value", pa.float64()),
    ("duration_s", pa.float64()),
    ("readings", pa.int64()),
    ("open_partition", pa.int32()),
    ("open_offset", pa.int64()),
])


def alert_id(vehicle_id: str, tire: str, alert_type: str, opened_at_ns: int) -> str:
    return hashlib.sha256(f"{vehicle_id}\x1f{tire}\x1f{alert_type}\x1f{opened_at_ns}".encode()).hexdigest()[:24]


def codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values as an object array, code per row) of a string or dictionary column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    enc = pc.dictionary_encode(arr)
    return (np.asarray(enc.dictionary.to_pylist(), dtype=object),
            enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def _in_order(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Rows (sorted by group, then log order) whose ts is later than every earlier row of the group."""
    running = pd.Series(ts).groupby(group, sort=False).cummax().to_numpy(np.int64)  # int64 stays exact
    first = np.ones(len(ts), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    prev = np.empty_like(running)
    prev[0] = 0
    prev[1:] = running[:-1]
    return first | (ts > prev)


def _loss_rate(group: np.ndarray, ts: np.ndarray, pressure: np.ndarray, window_ns: int) -> np.ndarray:
    """kPa per minute lost over the rolling window before each in-order reading (NaN if it spans < half)."""
    base = ts.min() if len(ts) else 0
    key = group.astype(np.int64) * (1 << 40) + (ts - base) // 1_000_000  # (group, ms) in one sortable int
    j = np.searchsorted(key, key - window_ns // 1_000_000, side="left")
    span = (ts - ts[j]) / _NS
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (pressure[j] - pressure) / span * 60.0
    return np.where(span >= window_ns / _NS / 2, rate, np.nan)


def detect_episodes(readings: pa.Table, thresholds: Thresholds, *, new_from: np.ndarray | None = None) -> pd.DataFrame:
    """Episodes in `readings` (vehicle_id, tire, ts, pressure_kpa, temperature_c, _partition, _offset).

    Returns one row per episode (EPISODE_SCHEMA columns) plus `open_is_new`, `new_readings` and
    `new_peak`: with `new_from` (a bool per input row, True for rows the caller has not seen
    before) the live consumer can tell continuing episodes from new ones.
    """
    n = readings.num_rows
    if n == 0:
        return _empty()
    # integer codes, not strings: the live consumer calls this on every fetch over minutes of history
    vehicles, vcode = codes(readings["vehicle_id"])
    tires, tcode = codes(readings["tire"])
    g_all = vcode * len(tires) + tcode
    order = np.lexsort((readings["_offset"].to_numpy(), readings["_partition"].to_numpy(), g_all))
    g = g_all[order]
    ts = readings["ts"].cast(pa.int64()).to_numpy()[order]
    keep = _in_order(g, ts)
    last_ts = np.full(int(g.max()) + 1, np.iinfo(np.int64).min)
    np.maximum.at(last_ts, g, ts)  # latest in-order ts = latest ts of the tire
    sel = order[keep]  # in-order rows: within a group, ts increases with log order
    gi, tsi = g[keep], ts[keep]
    pi = readings["pressure_kpa"].to_numpy()[sel]
    ti = readings["temperature_c"].to_numpy()[sel]
    part = readings["_partition"].to_numpy()[sel]
    off = readings["_offset"].to_numpy()[sel]
    newi = np.ones(len(sel), dtype=bool) if new_from is None else np.asarray(new_from, dtype=bool)[sel]
    rate_loss = _loss_rate(gi, tsi, pi, int(thresholds.rapid_loss_window_s * _NS))
    with np.errstate(invalid="ignore"):
        conditions = {
            LOW_PRESSURE: (pi < thresholds.low_pressure_kpa, pi, np.minimum),
            HIGH_TEMPERATURE: (ti > thresholds.high_temperature_c, ti, np.maximum),
            RAPID_PRESSURE_LOSS: (rate_loss >= thresholds.rapid_loss_kpa_per_min, rate_loss, np.maximum),
        }
    clear_ns = int(thresholds.clear_s * _NS)
    frames = []
    for alert_type, (cond, value, peak_op) in conditions.items():
        idx = np.flatnonzero(cond)
        if not len(idx):
            continue
        cg, cts = gi[idx], tsi[idx]
        opens = np.ones(len(idx), dtype=bool)
        opens[1:] = (cg[1:] != cg[:-1]) | (cts[1:] - cts[:-1] > clear_ns)
        starts = np.flatnonzero(opens)
        ends = np.append(starts[1:], len(idx)) - 1
        v = value[idx]
        is_new = newi[idx]
        first, last = idx[starts], idx[ends]
        new_v = np.where(is_new, v, np.nan)
        with np.errstate(invalid="ignore"):
            new_peak = (np.fmin if peak_op is np.minimum else np.fmax).reduceat(new_v, starts)
        frames.append(pd.DataFrame({
            "vehicle_id": vehicles[cg[starts] // len(tires)],
            "tire": tires[cg[starts] % len(tires)],
            "alert_type": alert_type,
            "opened_at": tsi[first],
            "last_at": tsi[last],
            "closed": last_ts[cg[starts]] > tsi[last] + clear_ns,
            "threshold": thresholds.threshold(alert_type),
            "peak_value": peak_op.reduceat(v, starts),
            "readings": np.diff(np.append(starts, len(idx))),
            "open_partition": part[first],
            "open_offset": off[first],
            "open_is_new": is_new[starts],
            "new_readings": np.add.reduceat(is_new.astype(np.int64), starts),
            "new_peak": new_peak,
        }))
    if not frames:
        return _empty()
    out = pd.concat(frames, ignore_index=True)
    out["duration_s"] = (out["last_at"] - out["opened_at"]) / _NS
    out["alert_id"] = [alert_id(v, t, k, o) for v, t, k, o in
                       zip(out["vehicle_id"], out["tire"], out["alert_type"], out["opened_at"], strict=True)]
    return out.sort_values(["opened_at", "alert_id"], ignore_index=True)


def _empty() -> pd.DataFrame:
    cols = {f.name: pd.Series(dtype="object") for f in EPISODE_SCHEMA}
    cols.update(open_is_new=pd.Series(dtype=bool), new_readings=pd.Series(dtype="int64"),
                new_peak=pd.Series(dtype="float64"))
    return pd.DataFrame(cols)


def episodes_table(episodes: pd.DataFrame) -> pa.Table:
    """The published/landed form of episodes (EPISODE_SCHEMA)."""
    if episodes.empty:
        return EPISODE_SCHEMA.empty_table()
    return pa.table({
        "alert_id": pa.array(episodes["alert_id"], pa.string()),
        "vehicle_id": pa.array(episodes["vehicle_id"], pa.string()),
        "tire": pa.array(episodes["tire"], pa.string()),
        "alert_type": pa.array(episodes["alert_type"], pa.string()),
        "opened_at": pa.array(episodes["opened_at"].astype(np.int64), pa.int64()).cast(TS_TYPE),
        "last_at": pa.array(episodes["last_at"].astype(np.int64), pa.int64()).cast(TS_TYPE),
        "closed": pa.array(episodes["closed"].astype(bool)),
        "threshold": pa.array(episodes["threshold"].astype(float)),
        "peak_value": pa.array(episodes["peak_value"].astype(float)),
        "duration_s": pa.array(episodes["duration_s"].astype(float)),
        "readings": pa.array(episodes["readings"].astype(np.int64)),
        "open_partition": pa.array(episodes["open_partition"].astype(np.int32)),
        "open_offset": pa.array(episodes["open_offset"].astype(np.int64)),
    }, schema=EPISODE_SCHEMA)


def episode_message(row: dict) -> dict:
    """One alert as published on `tires.alerts` (key = alert id): plain JSON types, ISO times."""
    def iso(ns: int) -> str:
        return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")

    return {
        "alert_id": row["alert_id"], "vehicle_id": row["vehicle_id"], "tire": row["tire"],
        "alert_type": row["alert_type"], "status": "closed" if row["closed"] else "open",
        "opened_at": iso(row["opened_at"]), "last_at": iso(row["last_at"]),
        "threshold": float(row["threshold"]), "peak_value": round(float(row["peak_value"]), 3),
        "duration_s": round(float(row["duration_s"]), 3), "readings": int(row["readings"]),
        "source": f"{int(row['open_partition'])}/{int(row['open_offset'])}",
    }


__all__ = ["ALERT_TYPES", "EPISODE_SCHEMA", "HIGH_TEMPERATURE", "LOW_PRESSURE", "RAPID_PRESSURE_LOSS", "TIRES",
           "Thresholds", "alert_id", "detect_episodes", "episode_message", "episodes_table"]
