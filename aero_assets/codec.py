"""Wire formats (DESIGN.md): decode and validate one Kafka message into an Arrow table.

Each topic has a `Decoder`. Decoding either returns rows in the topic's landed schema or raises
`DecodeError` with a reason a human can act on; the landing sends such messages to the DLQ.
The content type comes from the `content-type` header, or is sniffed from the bytes when the
header is missing (Arrow IPC streams start with the 0xFFFFFFFF continuation marker).

Performance: the Arrow path does a few O(1) schema/null-count checks per message and no work per
sample; JSON is one object per message by nature, so its cost is per message.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.arrow_limits import ArrowLimitError, ArrowMalformed, check_decoded_size
from aero_assets.ids import InvalidIdentifier, validate_id

JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
_ARROW_MAGIC = b"\xff\xff\xff\xff"
TS_TYPE = pa.timestamp("ns", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Decoded bytes one Arrow message may expand to (buffer compression makes a small message large).
# A 4,000-sample block is ~120 KB decoded; 64 MiB leaves room for blocks 500x larger.
MAX_DECODED_BYTES = 64 * 1024 * 1024
MAX_COLUMNS = 1000


class DecodeError(ValueError):
    """The message cannot be decoded or fails validation; the text goes into the DLQ header."""


@dataclass(frozen=True)
class Decoded:
    table: pa.Table
    split: str | None  # value of the landing's split column (e.g. run id), None for unsplit topics


class Decoder(Protocol):
    """Decodes one message of a topic. `split_column` names the column files are split by."""

    schema: pa.Schema
    split_column: str | None

    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded: ...


def content_type_of(headers: list[tuple[str, bytes]] | None, value: bytes | None) -> str:
    for name, raw in headers or ():
        if name.lower() == "content-type" and raw is not None:
            ct = raw.decode("utf-8", "replace").split(";")[0].strip().lower()
            if ct in (JSON, ARROW):
                return ct
            raise DecodeError(f"unsupported content-type {ct!r}: use {JSON} or {ARROW}")
    if not value:
        raise DecodeError("empty message")
    if value[:4] == _ARROW_MAGIC:
        return ARROW
    if value.lstrip()[:1] in (b"{", b"["):
        return JSON
    raise DecodeError("no content-type header and the bytes are neither JSON nor an Arrow IPC stream")


# -- scalar parsing for JSON -----------------------------------------------------------------------
# timestamp[ns] holds 1677-09-21 .. 2262-04-11; anything outside cannot be stored and must be refused
_NS_MIN, _NS_MAX = -(2**63) + 1, 2**63 - 1
_INT64_MAX = 2**63 - 1


def _ns_in_range(ns: int, field: str, raw: Any) -> int:
    if not _NS_MIN <= ns <= _NS_MAX:
        raise DecodeError(f"{field} {raw!r} is outside the storable range (years 1678-2262)")
    return ns


def parse_ts_ns(value: Any, field: str = "ts") -> int:
    """ISO-8601 with an offset, or epoch milliseconds, to epoch nanoseconds (UTC)."""
    if isinstance(value, bool) or value is None:
        raise DecodeError(f"{field} is missing or not a timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise DecodeError(f"{field} is not finite")
        if abs(value) > 9.2e15:  # epoch ms beyond the ns range; also keeps float * 1e6 exact enough
            raise DecodeError(f"{field} {value!r} is outside the storable range (years 1678-2262)")
        return _ns_in_range(round(value * 1_000_000), field, value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"{field} {value!r} is not ISO-8601") from None
        if dt.tzinfo is None:
            raise DecodeError(f"{field} {value!r} has no UTC offset (add 'Z' or '+00:00')")
        return _ns_in_range(((dt - _EPOCH) // timedelta(microseconds=1)) * 1000, field, value)
    raise DecodeError(f"{field} must be an ISO-8601 string or epoch milliseconds, got {type(value).__name__}")


def parse_float(value: Any, field: str, nullable: bool = False) -> float | None:
    if value is None:
        if nullable:
            return None
        raise DecodeError(f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{field} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise DecodeError(f"{field} is too large for a 64-bit float") from None


def json_object(value: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _key_id(key: bytes | None, what: str) -> str | None:
    if key is None:
        return None
    try:
        return validate_id(key.decode("utf-8"), what)
    except UnicodeDecodeError:
        raise DecodeError(f"message key is not UTF-8 ({what} expected)") from None
    except InvalidIdentifier as exc:
        raise DecodeError(f"invalid message key: {exc}") from None


def _checked_id(value: Any, key_id: str | None, what: str) -> str:
    if value is None:
        if key_id is None:
            raise DecodeError(f"{what} is missing (neither in the message key nor in the body)")
        return key_id
    try:
        ident = validate_id(value, what)
    except InvalidIdentifier as exc:
        raise DecodeError(str(exc)) from None
    if key_id is not None and ident != key_id:
        raise DecodeError(f"{what} {ident!r} in the body differs from the message key {key_id!r}")
    return ident


def _optional_id(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    try:
        return validate_id(value, field)
    except InvalidIdentifier as exc:
        raise DecodeError(str(exc)) from None


def read_arrow_stream(value: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> pa.Table:
    """An Arrow IPC stream as a table; refused with a reason if broken or if it would expand too far."""
    try:
        check_decoded_size(value, max_decoded_bytes)
        table = pa.ipc.open_stream(value).read_all()
        if table.num_columns > MAX_COLUMNS:
            raise DecodeError(f"Arrow block has {table.num_columns} columns; at most {MAX_COLUMNS} are accepted")
        # Full validation (offsets within buffers, dictionary indices within the dictionary, UTF-8):
        # pyarrow's cheap checks let a 600-byte block with lying offsets through, which then crashes
        # the Parquet writer or copies foreign memory into the lake. 13 us per 4,000-sample block.
        table.validate(full=True)
        return table
    except ArrowLimitError as exc:
        raise DecodeError(f"Arrow IPC stream refused: {exc}") from None
    except ArrowMalformed as exc:
        raise DecodeError(f"Arrow IPC stream is truncated or corrupt ({exc})") from None
    except (OSError, pa.ArrowException) as exc:  # pyarrow reports framing errors as OSError
        raise DecodeError(f"Arrow IPC stream is truncated or corrupt ({_arrow_problem(exc)})") from None


def arrow_block(value: bytes, required: Iterable[str], id_column: str, max_rows: int,
                what: str) -> tuple[pa.Table, pa.Array, pa.Array]:
    """A row-per-record Arrow block read and checked: `(table, id_array, ts_array)`.

    Refuses a block that lacks any `required` column, has no rows or more than `max_rows` (`what` names
    a row in the reason, e.g. "samples"), whose `id_column` is not a string (dictionary<string> is
    decoded), or whose `ts` is not a time-zone-aware timestamp storable as timestamp[ns, UTC].
    """
    table = read_arrow_stream(value)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DecodeError(f"Arrow block lacks column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise DecodeError("Arrow block has no rows")
    if table.num_rows > max_rows:
        raise DecodeError(f"an Arrow block may carry at most {max_rows} {what}")
    ids = table[id_column].combine_chunks()
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    if not pa.types.is_string(ids.type):
        raise DecodeError(f"{id_column} must be a string column, got {ids.type}")
    ts = table["ts"].combine_chunks()
    if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
        raise DecodeError(f"ts must be timestamp with a time zone (timestamp[ns, UTC]), got {ts.type}")
    try:
        ts = pc.cast(ts, TS_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DecodeError(f"ts cannot be stored as timestamp[ns]: {exc}") from None
    return table, ids, ts


def _arrow_problem(exc: Exception) -> str:
    text = str(exc).strip()
    if "Expected to be able to read" in text or "Expected to read" in text:
        return f"the message ends before the stream does: {text}"
    if "flatbuffer" in text.lower():
        return f"the batch metadata is not valid Arrow: {text}"
    if "compress" in text.lower():
        return f"a compressed buffer does not decompress: {text}"
    return text or type(exc).__name__


# -- windtunnel.samples ---------------------------------------------------------------------------
class WindtunnelSamplesDecoder:
    """Long-format samples of one run; key = run id. Arrow IPC or two JSON shapes."""

    schema = pa.schema([("ts", TS_TYPE), ("channel", pa.string()), ("value", pa.float64())])
    split_column = "run_id"

    def __init__(self, max_decoded_bytes: int = MAX_DECODED_BYTES):
        self.max_decoded_bytes = max_decoded_bytes

    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        run_id = _key_id(key, "run id")
        if not value:
            raise DecodeError("empty message")
        if content_type == ARROW:
            if run_id is None:
                raise DecodeError("Arrow sample blocks need the run id as the message key")
            return Decoded(self._arrow(value), run_id)
        obj = json_object(value)
        run_id = _checked_id(obj.get("run_id"), run_id, "run id")
        ts = parse_ts_ns(obj.get("ts"))
        if "values" in obj:
            values = obj["values"]
            if not isinstance(values, dict) or not values:
                raise DecodeError("'values' must be a non-empty object {channel: value}")
            channels = [str(c) for c in values]
            vals = [parse_float(v, f"values.{c}", nullable=True) for c, v in values.items()]
        else:
            channel = obj.get("channel")
            if not isinstance(channel, str) or not channel:
                raise DecodeError("channel is missing or not a string")
            channels, vals = [channel], [parse_float(obj.get("value"), "value", nullable=True)]
        table = pa.table(
            {
                "ts": pa.array(np.full(len(channels), ts, dtype="int64")).cast(TS_TYPE),
                "channel": pa.array(channels, pa.string()),
                "value": pa.array(vals, pa.float64()),
            }
        )
        return Decoded(table, run_id)

    def _arrow(self, value: bytes) -> pa.Table:
        return self._validate(read_arrow_stream(value, self.max_decoded_bytes))

    def _validate(self, table: pa.Table) -> pa.Table:
        if table.schema.equals(self.schema):  # fast path: the simulator's and well-behaved rigs' schema
            if table["ts"].null_count or table["channel"].null_count:
                raise DecodeError("ts and channel must not be null")
            return table
        names = table.column_names
        dupes = sorted(n for n, k in Counter(names).items() if k > 1)
        if dupes:
            raise DecodeError(f"Arrow block has duplicate column(s) {', '.join(dupes)}")
        missing = [n for n in ("ts", "channel", "value") if n not in names]
        if missing:
            raise DecodeError(f"Arrow block lacks column(s) {', '.join(missing)}")
        ts = table["ts"]
        if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
            raise DecodeError(f"ts must be timestamp with a time zone (timestamp[ns, UTC]), got {ts.type}")
        ch = table["channel"]
        if pa.types.is_dictionary(ch.type):
            self._check_dictionary_expansion(ch)
            ch = ch.cast(pa.string())
        if not (pa.types.is_string(ch.type) or pa.types.is_large_string(ch.type)):
            raise DecodeError(f"channel must be string or dictionary<string>, got {ch.type}")
        val = table["value"]
        if not (pa.types.is_floating(val.type) or pa.types.is_integer(val.type)):
            raise DecodeError(f"value must be numeric, got {val.type}")
        if ts.null_count or ch.null_count:
            raise DecodeError("ts and channel must not be null")
        try:
            return pa.table(
                {"ts": pc.cast(ts, TS_TYPE), "channel": ch.cast(pa.string()), "value": val.cast(pa.float64())}
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # e.g. timestamps out of the ns range
            raise DecodeError(f"cannot convert the block to the samples schema: {exc}") from None


    def _check_dictionary_expansion(self, column: pa.ChunkedArray) -> None:
        """Refuse a dictionary column whose string form would exceed the decoded-bytes limit.

        A one-entry dictionary of a 20 KB string indexed by 100,000 int8s is 100 KB on the wire and
        2 GB once cast to plain strings, which the decoded-size check of the buffers cannot see.
        """
        if not pa.types.is_string(column.type.value_type) and not pa.types.is_large_string(column.type.value_type):
            return  # not a string dictionary: the type check after the cast refuses it
        expanded = 0
        for chunk in column.chunks:
            lengths = pc.binary_length(chunk.dictionary)
            expanded += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
        if expanded > self.max_decoded_bytes:
            raise DecodeError(f"channel dictionary expands to {expanded:,} bytes of strings, over the "
                              f"{self.max_decoded_bytes:,}-byte limit per message")


# -- windtunnel.runs (lifecycle) ------------------------------------------------------------------
class RunEventsDecoder:
    """Lifecycle events `run_started` / `run_finished`; key = run id (JSON only)."""

    schema = pa.schema(
        [
            ("event", pa.string()),
            ("ts", TS_TYPE),
            ("session_id", pa.string()),
            ("baseline_run_id", pa.string()),
            ("sample_count", pa.int64()),
            ("config", pa.string()),
        ]
    )
    split_column = "run_id"

    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if content_type != JSON:
            raise DecodeError("lifecycle events must be JSON")
        obj = json_object(value or b"")
        run_id = _checked_id(obj.get("run_id"), _key_id(key, "run id"), "run id")
        event = obj.get("event")
        session_id = baseline = config = None
        count = None
        if event == "run_started":
            ts = parse_ts_ns(obj.get("started_at"), "started_at")
            session_id = _optional_id(obj, "session_id")
            baseline = _optional_id(obj, "baseline_run_id")
            cfg = obj.get("config", {})
            if not isinstance(cfg, dict):
                raise DecodeError("config must be an object")
            config = json.dumps(cfg, sort_keys=True)
        elif event == "run_finished":
            ts = parse_ts_ns(obj.get("finished_at"), "finished_at")
            count = obj.get("sample_count")
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _INT64_MAX:
                raise DecodeError("sample_count must be a non-negative 64-bit integer")
        else:
            raise DecodeError(f"event must be 'run_started' or 'run_finished', got {event!r}")
        row = {
            "event": [event],
            "ts": pa.array([ts], pa.int64()).cast(TS_TYPE),
            "session_id": [session_id],
            "baseline_run_id": [baseline],
            "sample_count": pa.array([count], pa.int64()),
            "config": [config],
        }
        return Decoded(pa.table(row, schema=self.schema), run_id)


_MAX_EPOCH_MS = 9_000_000_000_000  # year 2255: below it ms * 10**6 fits an int64; beyond, decided one by one


def json_ts_column(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray | None] | None:
    """A `ts` column from a batch JSON reader as timestamp[ns, UTC], exactly as `parse_ts_ns` reads each value.

    Returns (timestamps, rows known to match the per-message path or None for all of them), or None
    when the column cannot be converted as a whole (a naive or malformed time): the batch path then
    isolates the culprit, whose reason comes from `parse_ts_ns`.
    - ISO strings: `datetime.fromisoformat` keeps microseconds, so digits beyond are truncated here too;
    - integer epoch ms: exact in int64 (never through float64, which is 128 ns coarse at today's times);
    - float epoch ms: rounded as `parse_ts_ns` does; an integral value may have been an integer literal
      (an exact product), so where the two would differ the row is decided alone.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_string(col.type):
        try:
            ts = pc.cast(col, TS_TYPE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        ns = np.asarray(pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        if np.any(ns % 1000):
            ts = pa.array(ns // 1000 * 1000, mask=~np.asarray(ts.is_valid())).cast(TS_TYPE)
        return ts, None
    if pa.types.is_integer(col.type):
        ms = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        exact = np.asarray(col.is_valid()) & (np.abs(ms) <= _MAX_EPOCH_MS)
        return pa.array(np.where(exact, ms, 0) * 1_000_000, mask=~exact).cast(TS_TYPE), exact
    ms = np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        exact = np.isfinite(ms) & (np.abs(ms) <= _MAX_EPOCH_MS)
    ms = np.where(exact, ms, 0.0)
    ns = np.round(ms * 1_000_000).astype(np.int64)
    integral = ms == np.floor(ms)
    exact &= ~integral | (ns == ms.astype(np.int64) * 1_000_000)
    return pa.array(ns, mask=~exact).cast(TS_TYPE), exact
