"""Lap summaries from 100 Hz telemetry: one vectorised pass per statistic, no per-sample Python.

Telemetry of a session arrives in time order almost always, so a lap is a contiguous run of rows
and every statistic is a `ufunc.reduceat` over the run starts (memory-bound: ~45 M rows/s per
statistic per core). Order is checked, not assumed: out-of-order packets are put back in time order,
duplicated packets (same session and timestamp) keep the last one landed, and a lap counter that
goes back makes its laps gather their rows again by (session, lap, time) - all counted and flagged,
so a summary is never computed over the wrong rows.

Line-crossing times are interpolated from the first and last sample of a lap (distance to the line
over speed), so a lap time is not quantised to the 10 ms sample period and does not need the next
lap to have started; sector times likewise at the sector boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.codec import TS_TYPE

GAP_NS = 50_000_000  # a sample period above 50 ms inside a lap is a gap
FULL_THROTTLE = 0.98
BRAKING = 0.05
LINE_TOLERANCE = 0.01  # a lap starts (ends) at the line if its first (last) sample is within 1 % of the lap
FLAGS = ("out_lap", "has_gap", "lap_counter_jump", "lap_counter_back", "distance_not_monotonic", "short_of_line")


@dataclass
class Telemetry:
    """Columns of landed telemetry as NumPy arrays; `session` holds codes into `sessions`."""

    session: np.ndarray  # int32 codes
    sessions: list[str]
    ts: np.ndarray  # int64 ns
    lap: np.ndarray
    distance_m: np.ndarray
    speed_kph: np.ndarray
    throttle: np.ndarray
    brake: np.ndarray
    gear: np.ndarray
    g_lat: np.ndarray
    g_long: np.ndarray
    fuel_kg: np.ndarray

    COLUMNS = ("session_id", "ts", "lap", "distance_m", "speed_kph", "throttle", "brake", "gear", "g_lat",
               "g_long", "fuel_kg")

    @classmethod
    def from_table(cls, table: pa.Table) -> Telemetry:
        sid = table["session_id"]
        if not pa.types.is_dictionary(sid.type):
            sid = pc.dictionary_encode(sid)
        sid = sid.unify_dictionaries() if isinstance(sid, pa.ChunkedArray) else sid
        if isinstance(sid, pa.ChunkedArray):
            chunks = sid.chunks
            names = chunks[0].dictionary.to_pylist() if chunks else []
            codes = (np.concatenate([np.asarray(c.indices, dtype=np.int32) for c in chunks]) if chunks
                     else np.zeros(0, np.int32))
        else:
            names, codes = sid.dictionary.to_pylist(), np.asarray(sid.indices, dtype=np.int32)

        def col(name):
            c = table[name]
            return c.to_numpy() if c.num_chunks != 1 else c.chunk(0).to_numpy(zero_copy_only=False)

        ts = table["ts"]
        ts = ts.cast(pa.int64()) if pa.types.is_timestamp(ts.type) else ts
        return cls(codes, names, np.asarray(ts.to_numpy(), dtype=np.int64),
                   *(col(c) for c in cls.COLUMNS[2:]))

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Telemetry:
        return Telemetry(self.session[idx], self.sessions, *(getattr(self, c)[idx] for c in self.COLUMNS[1:]))


@dataclass
class OrderReport:
    """What had to be repaired before summarising, for metadata and checks."""

    rows_in: int = 0
    out_of_order: int = 0
    duplicates_dropped: int = 0
    lap_counter_back: int = 0
    lap_counter_jumps: int = 0
    sorted_by: str = "as landed"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rows_in": self.rows_in, "out_of_order_rows": self.out_of_order,
                "duplicates_dropped": self.duplicates_dropped, "lap_counter_went_back": self.lap_counter_back,
                "lap_counter_jumps": self.lap_counter_jumps, "sorted_by": self.sorted_by}


def put_in_order(t: Telemetry) -> tuple[Telemetry, OrderReport]:
    """Time order per session, duplicates (same session and ts) dropped keeping the last landed row,
    and rows grouped by lap if a lap counter went back. O(n) checks; sorts only when needed."""
    rep = OrderReport(rows_in=len(t))
    if len(t) < 2:
        return t, rep
    same = t.session[1:] == t.session[:-1]
    back_in_time = same & (t.ts[1:] < t.ts[:-1])
    rep.out_of_order = int(back_in_time.sum())
    runs = np.concatenate(([0], np.flatnonzero(~same) + 1))
    contiguous = len(np.unique(t.session[runs])) == len(runs)
    if rep.out_of_order or not contiguous:
        t = t.take(np.lexsort((t.ts, t.session)))  # stable: among equal timestamps, landing order is kept
        rep.sorted_by = "session, time"
        same = t.session[1:] == t.session[:-1]
    dup = same & (t.ts[1:] == t.ts[:-1])
    if dup.any():
        rep.duplicates_dropped = int(dup.sum())
        t = t.take(np.flatnonzero(~np.concatenate((dup, [False]))))  # keep the later of each equal pair
        same = t.session[1:] == t.session[:-1]
    lap = t.lap.astype(np.int64)
    back = same & (lap[1:] < lap[:-1])
    rep.lap_counter_jumps = int((same & (lap[1:] > lap[:-1] + 1)).sum())
    if back.any():
        rep.lap_counter_back = int(back.sum())
        # both laps involved: the one the counter left and the one it went back to
        rep.extra["laps_seen_out_of_order"] = sorted({(int(t.session[i]), int(t.lap[j]))
                                                      for i in np.flatnonzero(back)[:1000] for j in (i, i + 1)})
        t = t.take(np.lexsort((t.ts, t.lap, t.session)))
        rep.sorted_by = "session, lap, time"
    return t, rep


def summarise_laps(t: Telemetry, track_length_m: float, sectors_m: tuple[float, float],
                   finished_sessions: set[str] | frozenset[str] = frozenset(), *,
                   ordered: bool = False) -> tuple[pa.Table, OrderReport]:
    """One row per (session, lap) with times, sectors, speeds, pedals, fuel, g and flags.

    `complete` is true when the next lap of the session has started, or the session has finished and
    the lap reached the line; callers publish only complete laps (a lap in progress has no time yet).
    """
    if not ordered:
        t, rep = put_in_order(t)
    else:
        rep = OrderReport(rows_in=len(t))
    n = len(t)
    if n == 0:
        return empty_summaries(), rep
    L = float(track_length_m)
    tol = LINE_TOLERANCE * L
    sess, lap = t.session, t.lap
    change = (sess[1:] != sess[:-1]) | (lap[1:] != lap[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.concatenate((starts[1:], [n]))
    last = ends - 1
    cnt = ends - starts
    ts, dist = t.ts, t.distance_m
    v_ms = lambda i: np.maximum(t.speed_kph[i].astype(np.float64) / 3.6, 1.0)  # noqa: E731

    d_first, d_last = dist[starts].astype(np.float64), dist[last].astype(np.float64)
    t_first, t_last = ts[starts], ts[last]
    at_start = d_first <= tol
    reaches_line = (L - d_last) <= tol
    t_start = np.where(at_start, t_first - d_first / v_ms(starts) * 1e9, t_first.astype(np.float64))
    t_end = np.where(reaches_line, t_last + (L - d_last) / v_ms(last) * 1e9, np.nan)

    run_sess = sess[starts]
    run_lap = lap[starts].astype(np.int64)
    has_next = np.concatenate((run_sess[1:] == run_sess[:-1], [False]))
    finished_codes = np.array([i for i, s in enumerate(t.sessions) if s in finished_sessions], dtype=np.int64)
    finished = np.isin(run_sess, finished_codes)
    complete = has_next | (finished & reaches_line)

    def per_lap(ufunc, values, dtype=None):
        return ufunc.reduceat(values, starts, dtype=dtype) if dtype else ufunc.reduceat(values, starts)

    # within-lap differences: the first row of a lap differs from the previous lap's last, not itself
    dts = np.empty(n, dtype=np.int64)
    dts[0] = 0
    np.subtract(ts[1:], ts[:-1], out=dts[1:])
    dts[starts] = 0
    max_gap_ms = per_lap(np.maximum, dts) / 1e6
    speed = t.speed_kph
    seg = np.empty(n, dtype=np.float64)  # trapezoid of speed over time: the distance the speed sensor saw
    seg[0] = 0.0
    seg[1:] = (speed[1:].astype(np.float64) + speed[:-1]) * (dts[1:] / 7.2e9)
    seg[starts] = 0.0
    distance = per_lap(np.add, seg) + np.where(at_start, d_first, 0.0) + np.where(reaches_line, L - d_last, 0.0)
    dd = np.empty(n, dtype=bool)
    dd[0] = False
    np.less(dist[1:], dist[:-1] - 1.0, out=dd[1:])
    dd[starts] = False
    not_monotonic = per_lap(np.add, dd, np.int64) > 0
    gear = t.gear
    gc = np.empty(n, dtype=bool)
    gc[0] = False
    np.not_equal(gear[1:], gear[:-1], out=gc[1:])
    gc[starts] = False

    # sectors: rows before each boundary, then the crossing interpolated from the first row past it
    crossings = []
    for b in sectors_m:
        before = per_lap(np.add, dist < b, np.int64)
        idx = np.minimum(starts + before, last)
        ok = (d_first < b) & (before < cnt)
        crossings.append(np.where(ok, ts[idx] - (dist[idx].astype(np.float64) - b) / v_ms(idx) * 1e9, np.nan))
    c1, c2 = crossings
    sector1 = np.where(at_start, c1 - t_start, np.nan)
    lap_time = (t_end - t_start) / 1e9
    span_s = np.maximum((t_last - t_first) / 1e9, 1e-9)
    fuel_used = (t.fuel_kg[starts].astype(np.float64) - t.fuel_kg[last]) * np.where(
        np.isfinite(lap_time), lap_time / span_s, 1.0)

    prev_lap = np.concatenate(([-1], run_lap[:-1]))
    prev_same = np.concatenate(([False], run_sess[1:] == run_sess[:-1]))
    seen_back = {(s, lp) for s, lp in rep.extra.get("laps_seen_out_of_order", [])}
    back = (np.array([(int(s), int(lp)) in seen_back for s, lp in zip(run_sess, run_lap, strict=True)], dtype=bool)
            if seen_back else np.zeros(len(starts), dtype=bool))
    flags = {
        "out_lap": ~at_start | (run_lap == 0),
        "has_gap": max_gap_ms > GAP_NS / 1e6,
        "lap_counter_jump": prev_same & (run_lap > prev_lap + 1),
        "lap_counter_back": back,
        "distance_not_monotonic": not_monotonic,
        "short_of_line": ~reaches_line,
    }
    flag_text = np.full(len(starts), "", dtype=object)
    for name, mask in flags.items():
        flag_text[mask] = flag_text[mask] + (name + " ")
    names = np.array(t.sessions, dtype=object)
    out = pa.table({
        "session_id": pa.array(names[run_sess] if len(names) else [], pa.string()),
        "lap": pa.array(run_lap, pa.int32()),
        "lap_start": pa.array(np.nan_to_num(t_start, nan=0).astype(np.int64)).cast(TS_TYPE),
        "lap_time_s": _f(lap_time),
        "sector1_s": _f(sector1 / 1e9),
        "sector2_s": _f((c2 - c1) / 1e9),
        "sector3_s": _f((t_end - c2) / 1e9),
        "samples": pa.array(cnt, pa.int64()),
        "distance_m": _f(distance),
        "avg_speed_kph": _f(per_lap(np.add, speed, np.float64) / cnt),
        "max_speed_kph": _f(per_lap(np.maximum, speed)),
        "throttle_pct": _f(per_lap(np.add, t.throttle, np.float64) / cnt * 100),
        "full_throttle_pct": _f(per_lap(np.add, t.throttle >= FULL_THROTTLE, np.int64) / cnt * 100),
        "brake_pct": _f(per_lap(np.add, t.brake > BRAKING, np.int64) / cnt * 100),
        "fuel_used_kg": _f(fuel_used),
        "peak_lat_g": _f(per_lap(np.maximum, np.abs(t.g_lat))),
        "peak_long_accel_g": _f(per_lap(np.maximum, t.g_long)),
        "peak_braking_g": _f(-per_lap(np.minimum, t.g_long)),
        "gear_changes": pa.array(per_lap(np.add, gc, np.int64), pa.int64()),
        "max_gap_ms": _f(max_gap_ms),
        "complete": pa.array(complete),
        **{name: pa.array(mask) for name, mask in flags.items()},
        "flags": pa.array([s.strip() for s in flag_text], pa.string()),
    })
    return out, rep


def _f(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.float64), pa.float64(), from_pandas=True)


def empty_summaries() -> pa.Table:
    t = Telemetry(np.zeros(1, np.int32), ["x"], np.zeros(1, np.int64), np.zeros(1, np.int32),
                  *(np.zeros(1, np.float32) for _ in range(3)), np.zeros(1, np.float32), np.zeros(1, np.int8),
                  *(np.zeros(1, np.float32) for _ in range(3)))
    return summarise_laps(t, 1.0, (0.3, 0.6), ordered=True)[0].slice(0, 0)
