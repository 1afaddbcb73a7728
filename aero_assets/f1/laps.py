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
MAX_EXTRAPOLATION_S = 0.5  # ... and the car covers the rest to the line at its speed within this time
MIN_LINE_SPEED_MS = 5.0  # a car slower than this at its last sample is not crossing the line, it has stopped
FLAGS = ("out_lap", "started_past_line", "has_gap", "lap_counter_jump", "lap_counter_back", "distance_not_monotonic",
         "short_of_line")


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
    if len(t) == 0:
        return empty_summaries(), rep
    parts = lap_partials(t, sectors_m)
    return finish_laps(merge_partials([parts]), t.sessions, track_length_m, sectors_m, finished_sessions, rep), rep


def lap_partials(t: Telemetry, sectors_m: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per run of rows with one (session, lap): the sums, extremes, first and last values of the run.

    Partials of consecutive chunks of an ordered stream merge into laps (`merge_partials`), so a big
    file is summarised row group by row group, in parallel, without holding it all; what happens
    between the last row of one chunk and the first of the next is added back at the merge.
    """
    n = len(t)
    sess, lap, ts, dist, speed, gear = t.session, t.lap, t.ts, t.distance_m, t.speed_kph, t.gear
    change = (sess[1:] != sess[:-1]) | (lap[1:] != lap[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    last = np.concatenate((starts[1:], [n])) - 1

    def inside(x: np.ndarray, out_dtype, op) -> np.ndarray:
        """op(x[i], x[i-1]) inside a run, 0 on a run's first row."""
        out = np.empty(n, dtype=out_dtype)
        op(x[1:], x[:-1], out=out[1:])
        out[starts] = 0
        return out

    def red(ufunc, values, dtype=None):
        return ufunc.reduceat(values, starts, dtype=dtype) if dtype else ufunc.reduceat(values, starts)

    dts = inside(ts, np.int64, np.subtract)
    seg = np.empty(n, dtype=np.float64)  # trapezoid of speed over time: the distance the speed sensor saw
    np.add(speed[1:], speed[:-1], out=seg[1:], dtype=np.float64)
    seg[0] = 0.0
    seg *= dts  # 0 on each run's first row
    dd = np.empty(n, dtype=bool)  # distance going back by more than a metre inside a lap
    np.less(dist[1:], dist[:-1] - 1.0, out=dd[1:])
    dd[starts] = False
    part = {
        "session": sess[starts], "lap": lap[starts].astype(np.int64), "samples": np.diff(np.append(starts, n)),
        "sum_speed": red(np.add, speed, np.float64), "max_speed": red(np.maximum, speed),
        "sum_throttle": red(np.add, t.throttle, np.float64),
        "n_full": red(np.add, t.throttle >= FULL_THROTTLE, np.int64),
        "n_brake": red(np.add, t.brake > BRAKING, np.int64), "sum_seg": red(np.add, seg) / 7.2e9,
        "n_gc": red(np.add, inside(gear, bool, np.not_equal), np.int64), "n_dd": red(np.add, dd, np.int64),
        "max_gap": red(np.maximum, dts), "max_lat": red(np.maximum, np.abs(t.g_lat)),
        "max_long": red(np.maximum, t.g_long), "min_long": red(np.minimum, t.g_long),
    }
    for end, idx in (("first", starts), ("last", last)):
        part[f"{end}_ts"] = ts[idx]
        part[f"{end}_d"] = dist[idx].astype(np.float64)
        part[f"{end}_v"] = speed[idx].astype(np.float64)
        part[f"{end}_fuel"] = t.fuel_kg[idx].astype(np.float64)
        part[f"{end}_gear"] = gear[idx]
    cnt = part["samples"]
    for k, b in enumerate(sectors_m):
        before = red(np.add, dist < b, np.int64)
        idx = np.minimum(starts + before, last)  # first row at or past the boundary (distance rises in a lap)
        part[f"before{k}"] = before
        part[f"cross{k}"] = np.where(before < cnt, ts[idx] - (dist[idx].astype(np.float64) - b)
                                     / np.maximum(speed[idx].astype(np.float64) / 3.6, 1.0) * 1e9, np.nan)
    return part


def in_order_inside(t: Telemetry) -> bool:
    """Rows strictly in time and laps non-decreasing within each session (the fast path's premise)."""
    same = t.session[1:] == t.session[:-1]
    return not ((same & (t.ts[1:] <= t.ts[:-1])).any() or (same & (t.lap[1:] < t.lap[:-1])).any())


_SUM = ("samples", "sum_speed", "sum_throttle", "n_full", "n_brake", "sum_seg", "n_gc", "n_dd", "before0", "before1")
_MAX = ("max_speed", "max_gap", "max_lat", "max_long")
_FIRST = ("session", "lap", "first_ts", "first_d", "first_v", "first_fuel", "first_gear")
_LAST = ("last_ts", "last_d", "last_v", "last_fuel", "last_gear")


def merge_partials(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Partials of consecutive chunks -> one row per lap (adjacent rows with the same session and lap)."""
    p = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
    m = len(p["session"])
    if m == 0:
        return p
    change = (p["session"][1:] != p["session"][:-1]) | (p["lap"][1:] != p["lap"][:-1])
    g = np.concatenate(([0], np.flatnonzero(change) + 1))
    if len(g) == m:
        return p
    # where a lap continues from one partial into the next: the step between them, as inside a partial
    joined = np.concatenate(([False], ~change))
    dt = np.where(joined, p["first_ts"] - np.roll(p["last_ts"], 1), 0)
    p["sum_seg"] = p["sum_seg"] + np.where(joined, (p["first_v"] + np.roll(p["last_v"], 1)) * dt / 7.2e9, 0.0)
    p["max_gap"] = np.maximum(p["max_gap"], dt)
    p["n_gc"] = p["n_gc"] + (joined & (p["first_gear"] != np.roll(p["last_gear"], 1)))
    p["n_dd"] = p["n_dd"] + (joined & (p["first_d"] < np.roll(p["last_d"], 1) - 1.0))
    glast = np.concatenate((g[1:], [m])) - 1
    out = {k: np.add.reduceat(p[k], g) for k in _SUM}
    out.update({k: np.maximum.reduceat(p[k], g) for k in _MAX})
    out["min_long"] = np.minimum.reduceat(p["min_long"], g)
    out.update({k: p[k][g] for k in _FIRST})
    out.update({k: p[k][glast] for k in _LAST})
    for k in (0, 1):  # the crossing is in the first partial of the lap that has rows past the boundary
        has = np.where(p[f"before{k}"] < p["samples"], np.arange(m), m)
        first = np.minimum.reduceat(has, g)
        out[f"cross{k}"] = np.where(first < m, p[f"cross{k}"][np.minimum(first, m - 1)], np.nan)
    return out


def partials_in_order(p: dict[str, np.ndarray], strict_laps: bool = False) -> bool:
    """Consecutive partials (or merged laps): each session in one block, laps not going back (rising when
    `strict_laps`), time rising strictly from each one's last row to the next one's first (no duplicate
    or late row hiding at a boundary)."""
    sess = p["session"]
    if not len(sess):
        return True
    same = sess[1:] == sess[:-1]
    runs = np.concatenate(([0], np.flatnonzero(~same) + 1))
    back = p["lap"][1:] <= p["lap"][:-1] if strict_laps else p["lap"][1:] < p["lap"][:-1]
    return (len(np.unique(sess[runs])) == len(runs) and not (same & back).any()
            and not (same & (p["first_ts"][1:] <= p["last_ts"][:-1])).any())


def finish_laps(p: dict[str, np.ndarray], sessions: list[str], track_length_m: float,
                sectors_m: tuple[float, float], finished_sessions: set[str] | frozenset[str],
                rep: OrderReport) -> pa.Table:
    """Merged per-lap aggregates -> the summary table (times from interpolated crossings, flags)."""
    L = float(track_length_m)
    tol = LINE_TOLERANCE * L
    cnt = p["samples"]
    v_first, v_last = np.maximum(p["first_v"] / 3.6, 1.0), np.maximum(p["last_v"] / 3.6, 1.0)
    d_first, d_last = p["first_d"], p["last_d"]
    t_first, t_last = p["first_ts"], p["last_ts"]
    # a crossing is interpolated only over a short, moving stretch: a car stopped 40 m short of the line
    # has not crossed it, and a lap whose first samples are missing did not start where its data does
    raw_first, raw_last = p["first_v"] / 3.6, p["last_v"] / 3.6
    at_start = (d_first <= tol) & (d_first <= np.maximum(raw_first, 0) * MAX_EXTRAPOLATION_S + 1.0)
    reaches_line = ((L - d_last) <= tol) & (raw_last >= MIN_LINE_SPEED_MS) & (
        (L - d_last) <= raw_last * MAX_EXTRAPOLATION_S + 1.0)
    t_start = np.where(at_start, t_first - d_first / v_first * 1e9, t_first.astype(np.float64))
    t_end = np.where(reaches_line, t_last + (L - d_last) / v_last * 1e9, np.nan)
    run_sess, run_lap = p["session"], p["lap"]
    has_next = np.concatenate((run_sess[1:] == run_sess[:-1], [False]))
    finished_codes = np.array([i for i, s in enumerate(sessions) if s in finished_sessions], dtype=np.int64)
    complete = has_next | (np.isin(run_sess, finished_codes) & reaches_line)
    # a gap at the line belongs to both laps around it: time between one lap's last sample and the next's first
    same_prev = np.concatenate(([False], run_sess[1:] == run_sess[:-1]))
    gap_before = np.where(same_prev, p["first_ts"] - np.roll(p["last_ts"], 1), 0)
    gap_after = np.concatenate((gap_before[1:], [0]))
    max_gap_ms = np.maximum(p["max_gap"], np.maximum(gap_before, gap_after)) / 1e6
    distance = p["sum_seg"] + np.where(at_start, d_first, 0.0) + np.where(reaches_line, L - d_last, 0.0)
    c1 = np.where(d_first < sectors_m[0], p["cross0"], np.nan)  # a lap that began past a boundary never crossed it
    c2 = np.where(d_first < sectors_m[1], p["cross1"], np.nan)
    sector1 = np.where(at_start, c1 - t_start, np.nan)
    lap_time = (t_end - t_start) / 1e9
    span_s = np.maximum((t_last - t_first) / 1e9, 1e-9)
    fuel_used = (p["first_fuel"] - p["last_fuel"]) * np.where(np.isfinite(lap_time), lap_time / span_s, 1.0)

    prev_lap = np.concatenate(([-1], run_lap[:-1]))
    prev_same = same_prev
    seen_back = {(s, lp) for s, lp in rep.extra.get("laps_seen_out_of_order", [])}
    back = (np.array([(int(s), int(lp)) in seen_back for s, lp in zip(run_sess, run_lap, strict=True)], dtype=bool)
            if seen_back else np.zeros(len(run_sess), dtype=bool))
    first_of_session = ~same_prev
    flags = {
        "out_lap": (run_lap == 0) | (first_of_session & ~at_start),
        "started_past_line": ~at_start & ~((run_lap == 0) | first_of_session),
        "has_gap": max_gap_ms > GAP_NS / 1e6,
        "lap_counter_jump": prev_same & (run_lap > prev_lap + 1),
        "lap_counter_back": back,
        "distance_not_monotonic": p["n_dd"] > 0,
        "short_of_line": ~reaches_line,
    }
    flag_text = np.full(len(run_sess), "", dtype=object)
    for name, mask in flags.items():
        flag_text[mask] = flag_text[mask] + (name + " ")
    names = np.array(sessions, dtype=object)
    return pa.table({
        "session_id": pa.array(names[run_sess] if len(names) else [], pa.string()),
        "lap": pa.array(run_lap, pa.int32()),
        "lap_start": pa.array(np.nan_to_num(t_start, nan=0).astype(np.int64)).cast(TS_TYPE),
        "lap_time_s": _f(lap_time),
        "sector1_s": _f(sector1 / 1e9),
        "sector2_s": _f((c2 - c1) / 1e9),
        "sector3_s": _f((t_end - c2) / 1e9),
        "samples": pa.array(cnt, pa.int64()),
        "distance_m": _f(distance),
        "avg_speed_kph": _f(p["sum_speed"] / cnt),
        "max_speed_kph": _f(p["max_speed"]),
        "throttle_pct": _f(p["sum_throttle"] / cnt * 100),
        "full_throttle_pct": _f(p["n_full"] / cnt * 100),
        "brake_pct": _f(p["n_brake"] / cnt * 100),
        "fuel_used_kg": _f(fuel_used),
        "peak_lat_g": _f(p["max_lat"]),
        "peak_long_accel_g": _f(p["max_long"]),
        "peak_braking_g": _f(-p["min_long"]),
        "gear_changes": pa.array(p["n_gc"], pa.int64()),
        "max_gap_ms": _f(max_gap_ms),
        "complete": pa.array(complete),
        **{name: pa.array(mask) for name, mask in flags.items()},
        "flags": pa.array([x.strip() for x in flag_text], pa.string()),
    })


def _f(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.float64), pa.float64(), from_pandas=True)


def empty_summaries() -> pa.Table:
    t = Telemetry(np.zeros(1, np.int32), ["x"], np.zeros(1, np.int64), np.zeros(1, np.int32),
                  *(np.zeros(1, np.float32) for _ in range(3)), np.zeros(1, np.float32), np.zeros(1, np.int8),
                  *(np.zeros(1, np.float32) for _ in range(3)))
    return summarise_laps(t, 1.0, (0.3, 0.6), ordered=True)[0].slice(0, 0)


def summarise_parquet(path, track_length_m: float, sectors_m: tuple[float, float],
                      finished_sessions: set[str] | frozenset[str] = frozenset(),
                      threads: int = 2) -> tuple[pa.Table, OrderReport]:
    """Summaries of a Parquet file of telemetry, row group by row group on `threads` threads.

    Parquet decoding and NumPy reductions release the GIL, so two row groups are decoded and reduced
    at once, and no more than a row group per thread is in memory. The streamed result is the
    whole-table result whenever the file is in order; if any row group or boundary is not (late,
    duplicated or renumbered rows), the file is read whole and repaired by `summarise_laps` instead.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    local = threading.local()
    columns = list(Telemetry.COLUMNS)

    def one(i: int):
        f = getattr(local, "file", None)
        if f is None:
            f = local.file = pq.ParquetFile(path, read_dictionary=["session_id"])
        t = Telemetry.from_table(f.read_row_group(i, columns=columns))
        return t.sessions, lap_partials(t, sectors_m), in_order_inside(t), len(t)

    meta = pq.ParquetFile(path).metadata
    groups = [i for i in range(meta.num_row_groups) if meta.row_group(i).num_rows]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(one, groups))
    names: dict[str, int] = {}
    parts, ordered, rows = [], True, 0
    for sessions, part, ok, n in results:
        remap = np.array([names.setdefault(s, len(names)) for s in sessions], dtype=np.int64)
        part["session"] = remap[part["session"]]
        parts.append(part)
        ordered &= ok
        rows += n
    if not parts:
        return empty_summaries(), OrderReport()
    chain = {k: np.concatenate([x[k] for x in parts]) for k in ("session", "lap", "first_ts", "last_ts")}
    merged = merge_partials(parts)
    if not (ordered and partials_in_order(chain) and partials_in_order(merged, strict_laps=True)):
        table = pq.read_table(path, columns=columns, read_dictionary=["session_id"])
        return summarise_laps(Telemetry.from_table(table), track_length_m, sectors_m, finished_sessions)
    rep = OrderReport(rows_in=rows, sorted_by="as stored (streamed by row group)")
    rep.lap_counter_jumps = int(((merged["session"][1:] == merged["session"][:-1])
                                 & (merged["lap"][1:] > merged["lap"][:-1] + 1)).sum())
    return finish_laps(merged, list(names), track_length_m, sectors_m, finished_sessions, rep), rep
