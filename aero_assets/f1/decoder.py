"""`f1.telemetry` and `f1.sessions` wire formats (DESIGN.md), decoded and validated.

Telemetry: 100 Hz samples `session_id, ts, lap, distance_m, x_m, y_m, speed_kph, throttle, brake,
gear, rpm, g_lat, g_long, fuel_kg`, key = session id. A message holds one sample (the seed's packet),
several as newline-delimited objects (a car's radio frame), or an Arrow IPC stream of rows.

Both paths - `decode_batch` over a fetched batch and `decode` per message - run the same
vectorised `validate` on their columns, so they cannot disagree about a value; the per-message path
adds the type checks that the batch parser enforces by refusing to parse, and is what gives a
refused message its DLQ reason. Impossible values (negative speed, throttle outside 0-1, gear
outside 0-8, ...) are refused here; lap counters that jump or go back, duplicates and out-of-order
packets are facts about a session, not a message, and are flagged by the lap summaries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.codec import (
    ARROW,
    JSON,
    TS_TYPE,
    Decoded,
    DecodeError,
    arrow_block,
    json_object,
    json_ts_column,
    parse_float,
    parse_ts_ns,
)
from aero_assets.ids import InvalidIdentifier, is_safe_id, validate_id
from aero_assets.json_batch import BatchDecoded, decode_json_batch, json_objects, verdicts

F32 = pa.float32()
SCHEMA = pa.schema([
    ("session_id", pa.string()),
    ("ts", TS_TYPE),
    ("lap", pa.int32()),
    ("distance_m", F32),
    ("x_m", F32),
    ("y_m", F32),
    ("speed_kph", F32),
    ("throttle", F32),
    ("brake", F32),
    ("gear", pa.int8()),
    ("rpm", F32),
    ("g_lat", F32),
    ("g_long", F32),
    ("fuel_kg", F32),
])
FLOATS = ("distance_m", "x_m", "y_m", "speed_kph", "throttle", "brake", "rpm", "g_lat", "g_long", "fuel_kg")
INTS = ("lap", "gear")


@dataclass(frozen=True)
class Bound:
    lo: float
    hi: float
    unit: str = ""

    def reason(self, name: str) -> str:
        return f"{name} is missing, not finite or outside {self.lo:g}-{self.hi:g}{self.unit}"


# what a car can physically report; outside is a broken sensor or a bad message, never a sample
BOUNDS: dict[str, Bound] = {
    "lap": Bound(0, 10_000),
    "distance_m": Bound(0, 100_000, " m"),
    "x_m": Bound(-1e6, 1e6, " m"),
    "y_m": Bound(-1e6, 1e6, " m"),
    "speed_kph": Bound(0, 450, " km/h"),
    "throttle": Bound(0, 1),
    "brake": Bound(0, 1),
    "gear": Bound(0, 8),
    "rpm": Bound(0, 25_000, " rpm"),
    "g_lat": Bound(-10, 10, " g"),
    "g_long": Bound(-10, 10, " g"),
    "fuel_kg": Bound(0, 250, " kg"),
}
TS_MIN_NS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
MAX_FUTURE_S = 3600
MAX_LINES = 10_000
R_SESSION = "session_id is missing or not a safe id (1-128 letters, digits, _ . -)"
R_KEY = "the message key must be the session id of every sample"
R_TS = f"ts is before 2000 or more than {MAX_FUTURE_S // 60} minutes in the future"

_PARSE_ISO = pa.schema([("session_id", pa.string()), ("ts", pa.string()),
                        *[(c, pa.int64()) for c in INTS], *[(c, pa.float64()) for c in FLOATS]])
# integer epoch ms first: what the simulator and most loggers send (exact in int64); an ISO producer costs one
# failed parse per slice; float epoch ms last
_PARSE_EPOCH_MS_INT = _PARSE_ISO.set(1, pa.field("ts", pa.int64()))
_PARSE_EPOCH_MS = _PARSE_ISO.set(1, pa.field("ts", pa.float64()))


def validate(cols: dict[str, np.ndarray], session: pa.Array, keys: pa.Array, ts_ns: np.ndarray,
             now_ns: int) -> tuple[np.ndarray, list[str]]:
    """Per row: valid or not, and the reasons found (vectorised; one function for both paths)."""
    problems: list[tuple[np.ndarray, str]] = []
    distinct = pc.unique(session).drop_null().to_pylist()
    safe = pa.array([s for s in distinct if _is_safe_id(s)], pa.string())
    problems.append((~np.asarray(pc.fill_null(pc.is_in(session, value_set=safe), False)), R_SESSION))
    problems.append((~np.asarray(pc.fill_null(pc.equal(keys, session.cast(pa.binary())), False)), R_KEY))
    for name, bound in BOUNDS.items():
        v = cols[name]
        with np.errstate(invalid="ignore"):
            problems.append((~(np.isfinite(v) & (v >= bound.lo) & (v <= bound.hi)), bound.reason(name)))
    problems.append(((ts_ns < TS_MIN_NS) | (ts_ns > now_ns + MAX_FUTURE_S * 1_000_000_000), R_TS))
    return verdicts(problems, len(session))


def _is_safe_id(value: str) -> bool:
    return is_safe_id(value, "session id")


def _f64(col) -> np.ndarray:
    # unsafe: an integer beyond 2**53 (a hostile lap number) becomes a nearby float, which the bounds refuse,
    # instead of an exception that would fail the whole batch
    return np.asarray(pc.fill_null(col.cast(pa.float64(), safe=False), np.nan).to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def _table(session: pa.Array, ts: pa.Array, cols: dict[str, np.ndarray]) -> pa.Table:
    data = {"session_id": session, "ts": ts}
    for name in (*INTS, *FLOATS):
        data[name] = pa.array(cols[name]).cast(SCHEMA.field(name).type, safe=False)
    return pa.table(data, schema=SCHEMA)


def _parse_int(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{name} must be a whole number, got {type(value).__name__}"
                          if value is not None else f"{name} is missing")
    return float(value) if abs(value) < 2**53 else float("inf")


class F1TelemetryDecoder:
    """Decoder for `f1.telemetry`, split by session id; `decode_batch` is the landing's fast path."""

    schema = SCHEMA
    split_column = "session_id"

    def __init__(self, clock_ns=time.time_ns):
        self._clock_ns = clock_ns
        self._empty = SCHEMA.empty_table()

    # -- one message (the authority for DLQ reasons) ----------------------------------------------
    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if not value:
            raise DecodeError("empty message")
        if key is None:
            raise DecodeError("the message key must be the session id (it keeps a session's samples in order)")
        if content_type == ARROW:
            session, ts, cols = self._arrow_columns(value)
        else:
            session, ts, cols = self._json_columns(value)
        ts_ns = np.asarray(ts.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        keys = pa.array([key] * len(session), pa.binary())
        ok, reasons = validate(cols, session, keys, ts_ns, self._clock_ns())
        if not ok.all():
            raise DecodeError("; ".join(reasons))
        return Decoded(_table(session, ts, cols), session[0].as_py())

    def _json_columns(self, value: bytes):
        objs = json_objects(value, MAX_LINES, noun="sample")
        sessions, ts = [], []
        cols: dict[str, list[float]] = {c: [] for c in (*INTS, *FLOATS)}
        for obj in objs:
            sid = obj.get("session_id")
            if sid is not None and not isinstance(sid, str):
                raise DecodeError(f"session_id must be a string, got {type(sid).__name__}")
            sessions.append(sid)
            ts.append(parse_ts_ns(obj.get("ts")))
            for c in INTS:
                cols[c].append(_parse_int(obj.get(c), c))
            for c in FLOATS:
                cols[c].append(parse_float(obj.get(c), c))
        return (pa.array(sessions, pa.string()), pa.array(ts, pa.int64()).cast(TS_TYPE),
                {c: np.asarray(v, dtype=np.float64) for c, v in cols.items()})

    def _arrow_columns(self, value: bytes):
        table, sid, ts = arrow_block(value, required=SCHEMA.names, id_column="session_id",
                                     max_rows=MAX_LINES * 10, what="samples")
        cols = {}
        for c in (*INTS, *FLOATS):
            col = table[c]
            if not (pa.types.is_integer(col.type) if c in INTS else
                    pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise DecodeError(f"{c} must be {'an integer' if c in INTS else 'a numeric'} column, got {col.type}")
            cols[c] = _f64(col)
        return sid, ts, cols

    # -- a fetched batch (the fast path) ----------------------------------------------------------
    def decode_batch(self, values: list[bytes | None], keys: list[bytes | None],
                     content_types: list[str]) -> BatchDecoded:
        now = self._clock_ns()

        def finish(parsed: pa.Table, row_keys: pa.Array):
            converted = json_ts_column(parsed["ts"])
            if converted is None:
                return None
            ts, exact = converted
            ts_ns = np.asarray(pc.fill_null(ts.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy(
                zero_copy_only=False), dtype=np.int64)
            session = parsed["session_id"].combine_chunks()
            cols = {c: _f64(parsed[c]) for c in (*INTS, *FLOATS)}
            ok, _ = validate(cols, session, row_keys, ts_ns, now)
            if exact is not None:
                ok &= exact
            table = _table(session, ts, cols) if ok.all() else _table(
                session, ts, {c: np.where(ok, v, 0) for c, v in cols.items()})
            return table, ok, session.to_pylist()

        return decode_json_batch(values, keys, content_types,
                                 parse_schemas=[_PARSE_EPOCH_MS_INT, _PARSE_ISO, _PARSE_EPOCH_MS], finish=finish,
                                 decode_one=self.decode, empty=self._empty, max_lines=MAX_LINES)


# -- f1.sessions (lifecycle) ----------------------------------------------------------------------
EVENTS = ("session_started", "lap_completed", "session_finished")
EVENTS_SCHEMA = pa.schema([
    ("event", pa.string()),
    ("ts", TS_TYPE),
    ("lap", pa.int32()),  # lap_completed: the lap; session_finished: laps driven
    ("lap_time_s", pa.float64()),
    ("track", pa.string()),
    ("detail", pa.string()),  # the event as JSON, for what is not a column
])
_TIME_FIELD = {"session_started": "started_at", "lap_completed": "completed_at", "session_finished": "finished_at"}


class SessionEventsDecoder:
    """`session_started` / `lap_completed` / `session_finished`, key = session id (JSON only)."""

    schema = EVENTS_SCHEMA
    split_column = "session_id"

    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if content_type != JSON:
            raise DecodeError("session events must be JSON")
        obj = json_object(value or b"")
        event = obj.get("event")
        if event not in EVENTS:
            raise DecodeError(f"event must be one of {', '.join(EVENTS)}, got {event!r}")
        try:
            sid = validate_id(obj.get("session_id"), "session id")
        except InvalidIdentifier as exc:
            raise DecodeError(str(exc)) from None
        if key is None or key != sid.encode():
            raise DecodeError("the message key must be the session id")
        ts = parse_ts_ns(obj.get(_TIME_FIELD[event]), _TIME_FIELD[event])
        lap = lap_time = None
        if event in ("lap_completed", "session_finished"):
            field = "lap" if event == "lap_completed" else "laps"
            raw = obj.get(field)
            if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= BOUNDS["lap"].hi:
                raise DecodeError(f"{field} must be a whole number from 0 to {BOUNDS['lap'].hi:g}")
            lap = raw
        if event == "lap_completed" and obj.get("lap_time_s") is not None:
            lap_time = parse_float(obj.get("lap_time_s"), "lap_time_s")
        track = obj.get("track")
        if track is not None and not isinstance(track, str):
            raise DecodeError("track must be a string")
        row = {"event": [event], "ts": pa.array([ts], pa.int64()).cast(TS_TYPE), "lap": pa.array([lap], pa.int32()),
               "lap_time_s": pa.array([lap_time], pa.float64()), "track": [track],
               "detail": [json.dumps(obj, sort_keys=True)[:4096]]}
        return Decoded(pa.table(row, schema=EVENTS_SCHEMA), sid)
