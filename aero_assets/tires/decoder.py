"""`tires.raw` wire format: `{"vehicle_id", "tire", "pressure_kpa", "temperature_c", "ts"}`, key = vehicle id.

A message holds one reading, or several as newline-delimited objects (a gateway sending the four
tires of a tick together). The key is required: readings of one vehicle must stay in one partition,
in order, because alert episodes are found in log order (see `episodes`).

One set of vectorised checks (`validate_rows`) serves both paths, so the batch path and the
per-message path accept and refuse exactly the same readings; the per-message path is what gives
a refused message its DLQ reason.
"""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.codec import JSON, TS_TYPE, Decoded, DecodeError, json_ts_column, parse_float, parse_ts_ns
from aero_assets.ids import is_safe_id
from aero_assets.json_batch import BatchDecoded, decode_json_batch, json_objects, verdicts

TIRES = ("FL", "FR", "RL", "RR")
SCHEMA = pa.schema([
    ("vehicle_id", pa.string()),
    ("tire", pa.string()),
    ("ts", TS_TYPE),
    ("pressure_kpa", pa.float64()),
    ("temperature_c", pa.float64()),
])
# physically possible bounds: a value outside is a broken sensor or a bad message, never a reading
PRESSURE_RANGE_KPA = (0.0, 1000.0)
TEMPERATURE_RANGE_C = (-60.0, 250.0)
TS_MIN_NS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
MAX_FUTURE_S = 3600  # sensor clocks drift; an hour ahead of the landing's clock is refused
MAX_LINES = 10_000  # readings one message may carry
_FIELDS = ("vehicle_id", "tire", "pressure_kpa", "temperature_c", "ts")

_PARSE_ISO = pa.schema([("vehicle_id", pa.string()), ("tire", pa.string()), ("pressure_kpa", pa.float64()),
                        ("temperature_c", pa.float64()), ("ts", pa.string())])
# epoch ms as integers first: pyarrow's int64 column takes integer literals only, and an integer
# literal is exact in the per-message path (int * 10**6) where a float is not (float * 1e6, rounded)
_PARSE_EPOCH_MS_INT = _PARSE_ISO.set(4, pa.field("ts", pa.int64()))
_PARSE_EPOCH_MS = _PARSE_ISO.set(4, pa.field("ts", pa.float64()))


R_VEHICLE = "vehicle_id is missing or not a safe id (1-128 letters, digits, _ . -)"
R_KEY = "the message key must be the vehicle id of every reading"
R_TIRE = f"tire must be one of {', '.join(TIRES)}"
R_PRESSURE = (f"pressure_kpa is missing, not finite or outside {PRESSURE_RANGE_KPA[0]:g}-"
              f"{PRESSURE_RANGE_KPA[1]:g} kPa")
R_TEMPERATURE = (f"temperature_c is missing, not finite or outside {TEMPERATURE_RANGE_C[0]:g}-"
                 f"{TEMPERATURE_RANGE_C[1]:g} °C")
R_TS = f"ts is before 2000 or more than {MAX_FUTURE_S // 60} minutes in the future"


def row_problems(vehicle: str | None, tire: str | None, ts_ns: int, pressure: float, temperature: float,
                 key: bytes | None, now_ns: int) -> list[str]:
    """The checks of `validate_rows` for one reading, in plain Python (the per-message path).

    Kept rule for rule equal to `validate_rows`; `test_tires_decoder` feeds both the same hostile
    corpus and requires the same verdicts.
    """
    out = []
    if vehicle is None or not _is_safe_id(vehicle):
        out.append(R_VEHICLE)
    if key is None or vehicle is None or key != vehicle.encode():
        out.append(R_KEY)
    if tire not in TIRES:
        out.append(R_TIRE)
    if not (math.isfinite(pressure) and PRESSURE_RANGE_KPA[0] <= pressure <= PRESSURE_RANGE_KPA[1]):
        out.append(R_PRESSURE)
    if not (math.isfinite(temperature) and TEMPERATURE_RANGE_C[0] <= temperature <= TEMPERATURE_RANGE_C[1]):
        out.append(R_TEMPERATURE)
    if not TS_MIN_NS <= ts_ns <= now_ns + MAX_FUTURE_S * 1_000_000_000:
        out.append(R_TS)
    return out


def validate_rows(vehicle: pa.Array, tire: pa.Array, ts_ns: np.ndarray, pressure: np.ndarray,
                  temperature: np.ndarray, keys: pa.Array, now_ns: int) -> tuple[np.ndarray, list[str]]:
    """Per row: valid or not, and for the first bad row of each kind a reason (vectorised)."""
    n = len(vehicle)
    problems: list[tuple[np.ndarray, str]] = []
    # ids are checked once per distinct value (a fleet has few vehicles), then mapped onto the rows
    distinct = pc.unique(vehicle).drop_null()
    safe = [v for v in distinct.to_pylist() if _is_safe_id_cached(v)]
    vid_ok = pc.fill_null(pc.is_in(vehicle, value_set=pa.array(safe, pa.string())), False)
    problems.append((~np.asarray(vid_ok), R_VEHICLE))
    key_ok = pc.fill_null(pc.equal(keys, vehicle.cast(pa.binary())), False)
    problems.append((~np.asarray(key_ok), R_KEY))
    tire_ok = pc.fill_null(pc.is_in(tire, value_set=pa.array(TIRES)), False)
    problems.append((~np.asarray(tire_ok), R_TIRE))
    with np.errstate(invalid="ignore"):
        problems.append((~(np.isfinite(pressure) & (pressure >= PRESSURE_RANGE_KPA[0])
                           & (pressure <= PRESSURE_RANGE_KPA[1])),
                         R_PRESSURE))
        problems.append((~(np.isfinite(temperature) & (temperature >= TEMPERATURE_RANGE_C[0])
                           & (temperature <= TEMPERATURE_RANGE_C[1])),
                         R_TEMPERATURE))
    problems.append(((ts_ns < TS_MIN_NS) | (ts_ns > now_ns + MAX_FUTURE_S * 1_000_000_000),
                     R_TS))
    return verdicts(problems, n)


def _is_safe_id(value: str) -> bool:
    return is_safe_id(value, "vehicle id")


# the batch path checks each distinct id of a slice; a fleet's few thousand ids come back in every
# slice, so their verdicts are kept (the same function, so the same verdict)
_is_safe_id_cached = functools.lru_cache(maxsize=65_536)(_is_safe_id)


def _float_column(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


class TireReadingsDecoder:
    """Decoder for `tires.raw`; `decode_batch` is the fast path the landing prefers."""

    schema = SCHEMA
    split_column = None

    def __init__(self, clock_ns=time.time_ns):
        self._clock_ns = clock_ns
        self._empty = SCHEMA.empty_table()

    # -- one message (the authority) -------------------------------------------------------------
    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if content_type != JSON:
            raise DecodeError("tire readings must be JSON (content-type application/json)")
        if not value or not value.strip():
            raise DecodeError("empty message")
        if key is None:
            raise DecodeError("the message key must be the vehicle id (it keeps a vehicle's readings in order)")
        objs = json_objects(value, MAX_LINES)
        now = self._clock_ns()
        rows = {f: [] for f in _FIELDS}
        for obj in objs:  # a message holds one reading, or a few (NDJSON)
            vid, tire = obj.get("vehicle_id"), obj.get("tire")
            if vid is not None and not isinstance(vid, str):
                raise DecodeError(f"vehicle_id must be a string, got {type(vid).__name__}")
            if tire is not None and not isinstance(tire, str):
                raise DecodeError(f"tire must be a string, got {type(tire).__name__}")
            pressure = parse_float(obj.get("pressure_kpa"), "pressure_kpa")
            temperature = parse_float(obj.get("temperature_c"), "temperature_c")
            ts = parse_ts_ns(obj.get("ts"))
            problems = row_problems(vid, tire, ts, pressure, temperature, key, now)
            if problems:
                raise DecodeError("; ".join(problems))
            for f, v in zip(_FIELDS, (vid, tire, pressure, temperature, ts), strict=True):
                rows[f].append(v)
        table = pa.table({"vehicle_id": pa.array(rows["vehicle_id"], pa.string()),
                          "tire": pa.array(rows["tire"], pa.string()),
                          "ts": pa.array(rows["ts"], pa.int64()).cast(TS_TYPE),
                          "pressure_kpa": pa.array(rows["pressure_kpa"], pa.float64()),
                          "temperature_c": pa.array(rows["temperature_c"], pa.float64())}, schema=SCHEMA)
        return Decoded(table, None)

    # -- a batch (the fast path) -------------------------------------------------------------------
    def decode_batch(self, values: list[bytes | None], keys: list[bytes | None],
                     content_types: list[str]) -> BatchDecoded:
        now = self._clock_ns()

        def finish(parsed: pa.Table, row_keys: pa.Array):
            converted = json_ts_column(parsed["ts"])
            if converted is None:  # a naive or malformed time: find it alone
                return None
            ts, exact = converted  # exact: rows whose ts is known to equal the per-message path's (None: all)
            ts_ns = np.asarray(pc.fill_null(ts.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy(
                zero_copy_only=False), dtype=np.int64)
            vehicle, tire = parsed["vehicle_id"].combine_chunks(), parsed["tire"].combine_chunks()
            pressure, temperature = _float_column(parsed["pressure_kpa"]), _float_column(parsed["temperature_c"])
            ok, _ = validate_rows(vehicle, tire, ts_ns, pressure, temperature, row_keys, now)
            if exact is not None:
                ok &= exact
            table = pa.table({"vehicle_id": vehicle, "tire": tire, "ts": ts, "pressure_kpa": pressure,
                              "temperature_c": temperature}, schema=SCHEMA)
            return table, ok, None

        return decode_json_batch(values, keys, content_types,
                                 parse_schemas=[_PARSE_ISO, _PARSE_EPOCH_MS_INT, _PARSE_EPOCH_MS], finish=finish,
                                 decode_one=self.decode, empty=self._empty,
                                 max_lines=MAX_LINES)
