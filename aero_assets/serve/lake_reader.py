"""Read-only views of the lake for the API: Parquet read directly, never a DuckDB write lock.

Every function takes the lake root and validated arguments and returns plain Python or Arrow data;
the HTTP layer (app.py) only validates, pages and serialises. A partition folder is found by its
name (`run_id=<id>`, `day=<day>`, ...) built from an id that `aero_assets.ids.validate_id` passed,
so no request text becomes a path unchecked.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aero_assets.ids import validate_id

NS = 1_000_000_000


class NotFound(LookupError):
    """The thing asked for does not exist (a 404, with this message)."""


def _parts(root: Path, *asset: str) -> list[tuple[str, Path]]:
    """(partition value, data.parquet) of an asset's partitions, sorted by value."""
    base = root.joinpath(*asset)
    if not base.is_dir():
        return []
    out = []
    for d in base.iterdir():
        if "=" in d.name and (d / "data.parquet").is_file():
            out.append((d.name.split("=", 1)[1], d / "data.parquet"))
    return sorted(out)


def _part(root: Path, key: str, value: str, *asset: str, what: str = "run") -> Path:
    validate_id(value, what)
    path = root.joinpath(*asset, f"{key}={value}", "data.parquet")
    if not path.is_file():
        raise NotFound(f"no {'/'.join(asset)} for {what} {value!r}")
    return path


# -- wind tunnel ---------------------------------------------------------------------------------------------

def windtunnel_runs(root: Path, exports_root: Path) -> list[dict]:
    """Every landed run with its QC status (pass/warn/fail, or unchecked) and how far it got."""
    return [_run_summary(root, exports_root, run, raw) for run, raw in _parts(root, "windtunnel", "raw_run")]


def _run_file(root: Path, asset: str, run_id: str) -> Path:
    return root / "windtunnel" / asset / f"run_id={run_id}" / "data.parquet"


def _run_summary(root: Path, exports_root: Path, run: str, raw: Path) -> dict:
    """One landed run's QC status and how far it got, from its own files only."""
    qc = _run_file(root, "qc_report", run)
    status, failed, samples = "unchecked", None, None
    try:  # one damaged file (a bad restore, a full disk) marks its run, not the whole list
        if qc.is_file():
            table = pq.read_table(qc, columns=["status", "run_status"])
            status = table["run_status"][0].as_py() if table.num_rows else "unchecked"
            failed = int(pc.sum(pc.equal(table["status"], "fail")).as_py() or 0)
        samples = pq.ParquetFile(raw).metadata.num_rows
    except (pa.ArrowException, OSError, KeyError):
        status = "unreadable"
    return {"run_id": run, "qc_status": status, "channels_failed": failed, "samples": samples,
            "processed": _run_file(root, "processed_run", run).is_file(),
            "measured": _run_file(root, "aero_metrics", run).is_file(),
            "released": (exports_root / run / "processed.csv").is_file()}


def windtunnel_run(root: Path, exports_root: Path, run_id: str) -> dict:
    """One run: its QC per channel and its aero metrics."""
    raw = _part(root, "run_id", run_id, "windtunnel", "raw_run")  # (validates the id; NotFound when not landed)
    out = _run_summary(root, exports_root, run_id, raw)
    qc_path = _run_file(root, "qc_report", run_id)
    if qc_path.is_file():
        cols = ["channel", "category", "status", "reasons", "samples", "spike_count", "max_gap_s"]
        out["qc"] = pq.read_table(qc_path, columns=cols).to_pylist()
    metrics_path = _run_file(root, "aero_metrics", run_id)
    if metrics_path.is_file():
        cols = ["kind", "name", "unit", "value", "std_error", "ci95_low", "ci95_high"]
        out["metrics"] = pq.read_table(metrics_path, columns=cols).to_pylist()
    return out


def windtunnel_comparison(root: Path, run_id: str) -> list[dict]:
    return pq.read_table(_part(root, "run_id", run_id, "windtunnel", "run_comparison")).to_pylist()


def windtunnel_export(exports_root: Path, root: Path, run_id: str) -> Path:
    """The released CSV of a run; only runs that passed QC are released (NotFound otherwise)."""
    validate_id(run_id)
    path = exports_root / run_id / "processed.csv"
    if not path.is_file():
        qc = root / "windtunnel" / "qc_report" / f"run_id={run_id}" / "data.parquet"
        why = "it failed QC" if qc.is_file() else "it is not landed or checked yet"
        raise NotFound(f"run {run_id!r} has no released export: {why}")
    return path


SERIES_CACHE_BYTES = 256 * 1024 * 1024  # decoded channels kept across requests (a 60 s run's 72 channels: ~37 MB)


class _SeriesCache:
    """Decoded, time-sorted (t since the run's first sample, value) per (file version, channel); LRU by bytes.

    A landed Parquet file is replaced, never edited in place (tmp + rename), so `_version` (path, inode,
    ctime, mtime, size) names one version of it: a re-landed run is a new key and the old entries age out.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.items: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> tuple[np.ndarray, np.ndarray] | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key: tuple, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = value[0].nbytes + value[1].nbytes
        with self.lock:
            if key in self.items or size > self.max_bytes:
                return
            self.items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (t, v) = self.items.popitem(last=False)
                self.bytes -= t.nbytes + v.nbytes


_series_cache = _SeriesCache(SERIES_CACHE_BYTES)
RESPONSE_CACHE_BYTES = 64 * 1024 * 1024


class ResponseCache:
    """Serialised answers per (versions of the files they were read from, the question); an LRU by bytes.

    Dashboards ask the same question again and again (every viewer of a run, every refresh); the
    answer changes only when a file it was read from does, which changes its version and so the key.
    """

    def __init__(self, max_bytes: int = RESPONSE_CACHE_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.items: OrderedDict[tuple, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get_or_make(self, key: tuple, make) -> bytes:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
                return hit
        body = make()
        with self.lock:
            if key not in self.items and len(body) < self.max_bytes:
                self.items[key] = body
                self.bytes += len(body)
                while self.bytes > self.max_bytes:
                    _, old = self.items.popitem(last=False)
                    self.bytes -= len(old)
        return body


responses = ResponseCache()


def _version(path: Path) -> tuple[str, int, int, int, int]:
    """(path, inode, ctime_ns, mtime_ns, size): one version of a file the lake replaces, never edits in place.

    mtime and size alone are not enough: a restore (cp -p, rsync -a, touch -d) can bring back the old
    mtime on a same-size rewrite. A rename gives a new inode and ctime, which no tool can set back.
    """
    st = path.stat()
    return str(path), st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size


def windtunnel_series_json(root: Path, run_id: str, channels: list[str], start_s: float | None,
                           end_s: float | None, max_points: int, processed: bool = False) -> bytes:
    """`windtunnel_series` as JSON bytes, kept in `responses` per (file version, request)."""
    asset = "processed_run" if processed else "raw_run"
    path = _part(root, "run_id", run_id, "windtunnel", asset)
    key = ("series", _version(path), tuple(channels), start_s, end_s, max_points)
    return responses.get_or_make(key, lambda: json.dumps(
        windtunnel_series(root, run_id, channels, start_s, end_s, max_points, processed),
        separators=(",", ":")).encode())


def alert_versions(root: Path, end: datetime | None) -> tuple:
    """The versions of the alert files a query up to `end` reads (part of a cached answer's key)."""
    return tuple(_version(p) for p in _hour_parts(root, "alerts", None, end))


@functools.lru_cache(maxsize=256)
def _run_origin(path: Path, version: tuple[int, ...]) -> int:
    """The run's first ts (ns): from the row groups' statistics, else by reading the ts column once."""
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.names.index("ts")
    stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
    if stats and all(s is not None and s.has_min_max for s in stats):
        return min(pa.scalar(s.min, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).as_py() for s in stats)
    return pc.min(pq.read_table(path, columns=["ts"])["ts"].cast(pa.int64())).as_py()


def _load_channels(path: Path, channels: list[str] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(t, v) of the channels (every channel if None) of one landed run, each sorted by time, from the cache."""
    version = _version(path)[1:]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    missing = []
    for c in channels or []:
        hit = _series_cache.get((path, version, c))
        if hit is None:
            missing.append(c)
        else:
            out[c] = hit
    if channels is not None and not missing:
        return out
    table = pq.read_table(path, columns=["ts", "channel", "value"], read_dictionary=["channel"],
                          filters=[("channel", "in", missing)] if channels is not None else None)
    if table.num_rows == 0:
        return out
    origin = _run_origin(path, version)
    channel = table["channel"].combine_chunks()
    codes = channel.indices.to_numpy(zero_copy_only=False)
    names = channel.dictionary.to_pylist()
    ts = (table["ts"].cast(pa.int64()).to_numpy() - origin) / NS
    values = table["value"].to_numpy().astype(float, copy=False)
    by_code = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_code], np.arange(len(names) + 1))
    for code, name in enumerate(names):
        rows = by_code[bounds[code]:bounds[code + 1]]
        if rows.size == 0:
            continue
        t, v = ts[rows], values[rows]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        t.flags.writeable = v.flags.writeable = False  # shared between requests
        _series_cache.put((path, version, name), (t, v))
        out[name] = (t, v)
    return out


def windtunnel_series(root: Path, run_id: str, channels: list[str], start_s: float | None, end_s: float | None,
                      max_points: int, processed: bool = False) -> dict:
    """Channel time series of a run (seconds since its first sample), min/max-downsampled to max_points each."""
    from aero_assets.serve.downsample import minmax_downsample

    asset = "processed_run" if processed else "raw_run"
    path = _part(root, "run_id", run_id, "windtunnel", asset)
    for c in channels:
        validate_id(c, "channel")
    found = _load_channels(path, list(dict.fromkeys(channels)) if channels else None)
    if not found:
        raise NotFound(f"run {run_id!r} has none of the channels {channels}")
    series = {}
    for c in dict.fromkeys(channels) if channels else sorted(found):
        t, v = found.get(c, (np.empty(0), np.empty(0)))  # a channel the run lacks: an empty series, as before
        lo = 0 if start_s is None else int(np.searchsorted(t, start_s, side="left"))
        hi = t.size if end_s is None else int(np.searchsorted(t, end_s, side="right"))
        hi = max(lo, hi)
        t, v = minmax_downsample(t[lo:hi], v[lo:hi], max_points)
        series[c] = {"t": np.round(t, 6).tolist(), "v": v.tolist(), "points": int(t.size), "of": hi - lo}
    return {"run_id": run_id, "source": asset, "series": series}


# -- tires, F1, rig ------------------------------------------------------------------------------------------

def _hour_parts(root: Path, asset: str, start: datetime | None, end: datetime | None) -> list[Path]:
    out = []
    for hour, path in _parts(root, "tires", asset):
        at = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        if (start is None or at.timestamp() + 3600 > start.timestamp()) and (end is None or at <= end):
            out.append(path)
    return out


def _filter(table: pa.Table, conditions: list) -> pa.Table:
    """Rows where every condition (a boolean array over the table) holds."""
    mask = None
    for cond in conditions:
        mask = cond if mask is None else pc.and_(mask, cond)
    return table if mask is None else table.filter(mask)


def _time_conditions(table: pa.Table, column: str, start: datetime | None, end: datetime | None) -> list:
    ts_type = table.schema.field(column).type
    out = []
    if start is not None:
        out.append(pc.greater_equal(table[column], pa.scalar(start, ts_type)))
    if end is not None:
        out.append(pc.less_equal(table[column], pa.scalar(end, ts_type)))
    return out


@functools.lru_cache(maxsize=8)
def _newest_alerts(versions: tuple[tuple[str, int, int], ...]) -> pa.Table:
    """The alert files (by version) read and reduced to the newest row of each episode; kept per set of versions."""
    table = pa.concat_tables([pq.read_table(v[0]) for v in versions], promote_options="default")
    if table.num_rows > 1:  # an episode spanning hours is written by each: keep its newest row
        table = table.sort_by([("alert_id", "ascending"), ("last_at", "descending")])
        ids = table["alert_id"]
        changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
        table = table.filter(pa.array(np.concatenate([[True], changed])))
    return table


def tire_alerts(root: Path, vehicle: str | None, start: datetime | None, end: datetime | None,
                open_only: bool) -> pa.Table:
    """Alert episodes (the newest state of each), optionally of one vehicle, opened in [start, end], still open."""
    paths = _hour_parts(root, "alerts", None, end)
    if not paths:
        return pa.table({"alert_id": pa.array([], pa.string())})
    table = _newest_alerts(tuple(_version(p) for p in paths))
    conditions = _time_conditions(table, "opened_at", start, end)
    if vehicle is not None:
        conditions.append(pc.equal(table["vehicle_id"], validate_id(vehicle, "vehicle")))
    if open_only:
        conditions.append(pc.invert(table["closed"]))
    table = _filter(table, conditions)
    return table.sort_by([("opened_at", "descending"), ("alert_id", "ascending")]) if table.num_rows else table


def tire_windows(root: Path, vehicle: str | None, start: datetime | None, end: datetime | None) -> pa.Table:
    tables = [pq.read_table(p) for p in _hour_parts(root, "window_aggregates", start, end)]
    if not tables:
        return pa.table({"window_start": pa.array([], pa.timestamp("ns", tz="UTC"))})
    table = pa.concat_tables(tables, promote_options="default")
    conditions = _time_conditions(table, "window_start", start, end)
    if vehicle is not None:
        conditions.append(pc.equal(table["vehicle_id"], validate_id(vehicle, "vehicle")))
    return _filter(table, conditions).sort_by([("window_start", "ascending"), ("vehicle_id", "ascending"),
                                               ("tire", "ascending")])


def fleet_status(root: Path, start: datetime | None, end: datetime | None) -> pa.Table:
    """The fleet per minute (active vehicles, readings, open alerts by kind), oldest first."""
    tables = [pq.read_table(p) for p in _hour_parts(root, "fleet_status", start, end)]
    if not tables:
        return pa.table({"minute": pa.array([], pa.timestamp("ns", tz="UTC"))})
    table = pa.concat_tables(tables, promote_options="default").replace_schema_metadata(None)
    return _filter(table, _time_conditions(table, "minute", start, end)).sort_by("minute")


def f1_sessions(root: Path) -> list[dict]:
    out = []
    for session, path in _parts(root, "f1", "lap_summaries"):
        laps = pq.read_table(path, columns=["lap", "lap_time_s"])
        times = [t for t in laps["lap_time_s"].to_pylist() if t is not None]
        out.append({"session_id": session, "laps": laps.num_rows, "best_lap_s": min(times) if times else None})
    return out


def f1_laps(root: Path, session_id: str) -> list[dict]:
    return pq.read_table(_part(root, "session_id", session_id, "f1", "lap_summaries", what="session")).to_pylist()


def f1_lap_trace(root: Path, topic: str, session_id: str, lap: int, max_points: int) -> dict:
    """One lap's speed trace against distance, and the time since the lap began at each point.

    Read from the landed telemetry (the session's current incarnation); the trace is min/max-
    downsampled on speed, and the time is kept at the same points, so two laps can be compared at
    equal distances (the explorer's delta time).
    """
    from aero_assets.f1.assets import session_telemetry
    from aero_assets.serve.downsample import minmax_downsample
    from resources import LakeResource

    validate_id(session_id, "session")
    if not (root / "f1" / "lap_summaries" / f"session_id={session_id}").is_dir():
        raise NotFound(f"no F1 session {session_id!r}")
    table = session_telemetry(LakeResource(root=str(root)), topic, session_id)
    table = table.filter(pc.equal(table["lap"], lap)) if table.num_rows else table
    if table.num_rows == 0:
        raise NotFound(f"session {session_id!r} has no telemetry of lap {lap}")
    table = table.sort_by("ts")
    t = (pc.cast(table["ts"], pa.int64()).to_numpy() - pc.cast(table["ts"][0], pa.int64()).as_py()) / NS
    d = table["distance_m"].to_numpy(zero_copy_only=False).astype(float)
    v = table["speed_kph"].to_numpy(zero_copy_only=False).astype(float)
    order = np.argsort(d, kind="stable")  # (distance rises along a lap; sorting keeps a glitch from folding it)
    d, v, t = d[order], v[order], t[order]
    dd, vd = minmax_downsample(d, v, max_points)
    td = np.interp(dd, d, t)
    return {"session_id": session_id, "lap": lap, "distance_m": np.round(dd, 2).tolist(),
            "speed_kph": np.round(vd, 2).tolist(), "t_s": np.round(td, 4).tolist(), "points": int(dd.size),
            "of": int(d.size)}


def _day_range(root: Path, asset: str, start: str | None, end: str | None) -> pa.Table | None:
    tables = [pq.read_table(p) for day, p in _parts(root, "rig", asset)
              if (start is None or day >= start) and (end is None or day <= end)]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def rig_kpis(root: Path, start: str | None, end: str | None, rig: str | None) -> pa.Table | None:
    table = _day_range(root, "kpis", start, end)
    if table is not None and rig is not None:
        table = table.filter(pc.equal(table["rig_id"], validate_id(rig, "rig")))
    return table


def rig_anomalies(root: Path, start: str | None, end: str | None, rig: str | None) -> pa.Table | None:
    table = _day_range(root, "anomalies", start, end)
    if table is not None and rig is not None:
        table = table.filter(pc.equal(table["rig_id"], validate_id(rig, "rig")))
    return table


# -- forecast ------------------------------------------------------------------------------------------------

def forecast_stations(root: Path) -> list[str]:
    base = root / "forecast" / "model_evaluation"
    found: set[str] = set()
    for asset in ("model_evaluation", "champion_model"):
        base = root / "forecast" / asset
        if base.is_dir():
            found |= {d.name.split("=", 1)[1] for d in base.iterdir() if d.name.startswith("station=")}
    return sorted(found)


def forecast_evaluation(root: Path, station: str) -> dict:
    validate_id(station, "station")
    path = root / "forecast" / "model_evaluation" / f"station={station}" / "evaluation.json"
    if not path.is_file():
        raise NotFound(f"no model evaluation for station {station!r}")
    return json.loads(path.read_text())
