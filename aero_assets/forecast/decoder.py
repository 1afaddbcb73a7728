"""`weather.observations` wire format: `{"station", "ts", "temperature_c", "windspeed_ms", "pressure_hpa"}`.

Key = station. A message holds one observation, several as newline-delimited objects (an upload of an hour),
or an Arrow IPC stream of rows with those columns. `windspeed_ms` and `pressure_hpa` may be null (or absent):
a temperature-only station has no anemometer and no barometer. The key is required and must be the station
of every observation, so a station's readings stay in one partition, in order.

What is refused (DLQ, with the reason): a missing or unsafe station id, a station that differs from the key,
a ts that is not ISO-8601 with an offset or epoch milliseconds, a missing or NaN temperature, values that
are not numbers, and values outside the physical limits (`weather_settings`). A temperature above the limit
that is a plausible Kelvin or Fahrenheit reading says so in the reason. Gaps and duplicate timestamps are
facts about a station's series, not a message: they land, and `dataset.hourly` resolves them.

One vectorised `validate` serves both paths, so `decode_batch` (the landing's fast path) and `decode` (the
authority that gives a refused message its reason) cannot disagree about a value.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.codec import (
    ARROW,
    TS_TYPE,
    Decoded,
    DecodeError,
    arrow_block,
    json_ts_column,
    parse_float,
    parse_ts_ns,
)
from aero_assets.forecast.weather_settings import WeatherLimits
from aero_assets.ids import is_safe_id
from aero_assets.json_batch import BatchDecoded, decode_json_batch, json_objects, verdicts

SCHEMA = pa.schema([
    ("station", pa.string()),
    ("ts", TS_TYPE),
    ("temperature_c", pa.float64()),
    ("windspeed_ms", pa.float64()),
    ("pressure_hpa", pa.float64()),
])
VALUES = ("temperature_c", "windspeed_ms", "pressure_hpa")
OPTIONAL = ("windspeed_ms", "pressure_hpa")
MAX_LINES = 10_000  # observations one message may carry
MAX_ARROW_ROWS = 1_000_000
KELVIN = 273.15

R_STATION = "station is missing or not a safe id (1-128 letters, digits, _ . -)"
R_KEY = "the message key must be the station id of every observation"
R_TS = "ts is missing"
R_TEMPERATURE_MISSING = "temperature_c is missing or NaN (every observation needs a temperature)"

_PARSE_ISO = pa.schema([("station", pa.string()), ("ts", pa.string()),
                        *[(c, pa.float64()) for c in VALUES]])
# integer epoch ms before float: exact in int64, as the per-message path reads an integer literal
_PARSE_EPOCH_MS_INT = _PARSE_ISO.set(1, pa.field("ts", pa.int64()))
_PARSE_EPOCH_MS = _PARSE_ISO.set(1, pa.field("ts", pa.float64()))


class Reasons:
    """The DLQ reasons for one set of limits (they name the limits, so an operator sees what applied)."""

    def __init__(self, limits: WeatherLimits):
        lo, hi = limits.temperature_min_c, limits.temperature_max_c
        self.kelvin = (lo + KELVIN, hi + KELVIN)
        self.fahrenheit_hi = hi * 1.8 + 32.0
        self.temperature_kelvin = (f"temperature_c is above {hi:g} °C and between {lo + KELVIN:g} and "
                                   f"{hi + KELVIN:g}: it looks like Kelvin; send degrees Celsius (K - 273.15)")
        self.temperature_fahrenheit = (f"temperature_c is above {hi:g} °C but at most {self.fahrenheit_hi:g}: it "
                                       "looks like Fahrenheit; send degrees Celsius ((°F - 32) / 1.8)")
        self.temperature_range = f"temperature_c is outside {lo:g} to {hi:g} °C (not a physical air temperature)"
        self.windspeed = (f"windspeed_ms is NaN or outside 0-{limits.windspeed_max_ms:g} m/s (send null when the "
                          "station has no anemometer)")
        plo, phi = limits.pressure_min_hpa, limits.pressure_max_hpa
        self.pressure_units = [  # (lo, hi, hint) of pressures in another unit
            (plo * 100, phi * 100, "it looks like Pa; send hPa (Pa / 100)"),
            (plo / 10, phi / 10, "it looks like kPa; send hPa (kPa x 10)"),
            (plo * 0.02953, phi * 0.02953, "it looks like inHg; send hPa (inHg x 33.864)"),
        ]
        self.pressure = (f"pressure_hpa is NaN or outside {plo:g}-{phi:g} hPa (send null when the station has no "
                         "barometer)")
        self.ahead = (f"ts is more than {limits.max_ahead_days:g} days ahead of the landing's clock "
                      "(AERO_WEATHER_MAX_AHEAD_DAYS)")


def validate(station: pa.Array, keys: pa.Array, ts_valid: np.ndarray, cols: dict[str, np.ndarray],
             nulls: dict[str, np.ndarray], limits: WeatherLimits,
             reasons: Reasons | None = None, ts: pa.Array | None = None,
             now_ns: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Per row: valid or not, and the reasons found (vectorised; one function for both paths).

    `cols` hold float64 values (NaN where null), `nulls` where each value was null on the wire; `ts` and
    `now_ns` (the landing's clock) refuse observations dated more than `limits.max_ahead_days` ahead.
    """
    r = reasons or Reasons(limits)
    problems: list[tuple[np.ndarray, str]] = []
    if ts is not None and now_ns is not None:
        ts_ns = np.asarray(pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        problems.append((ts_ns > now_ns + round(limits.max_ahead_days * 86_400) * 1_000_000_000, r.ahead))
    # ids are checked once per distinct value (a deployment has few stations), then mapped onto the rows
    safe = pa.array([s for s in pc.unique(station).drop_null().to_pylist() if is_safe_id(s, "station")], pa.string())
    problems.append((~np.asarray(pc.fill_null(pc.is_in(station, value_set=safe), False)), R_STATION))
    problems.append((~np.asarray(pc.fill_null(pc.equal(keys, station.cast(pa.binary())), False)), R_KEY))
    problems.append((~ts_valid, R_TS))
    t = cols["temperature_c"]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(t)
        problems.append((~finite, R_TEMPERATURE_MISSING))
        kelvin = finite & (t >= r.kelvin[0]) & (t <= r.kelvin[1]) & (t > limits.temperature_max_c)
        fahrenheit = finite & ~kelvin & (t > limits.temperature_max_c) & (t <= r.fahrenheit_hi)
        outside = finite & ((t < limits.temperature_min_c) | (t > limits.temperature_max_c))
        problems.append((kelvin, r.temperature_kelvin))
        problems.append((fahrenheit, r.temperature_fahrenheit))
        problems.append((outside & ~kelvin & ~fahrenheit, r.temperature_range))
        w = cols["windspeed_ms"]
        problems.append((~nulls["windspeed_ms"] & ~(np.isfinite(w) & (w >= 0) & (w <= limits.windspeed_max_ms)),
                         r.windspeed))
        p = cols["pressure_hpa"]
        bad_p = ~nulls["pressure_hpa"] & ~(np.isfinite(p) & (p >= limits.pressure_min_hpa)
                                           & (p <= limits.pressure_max_hpa))
        hinted = np.zeros(len(p), dtype=bool)
        for lo, hi, hint in r.pressure_units:
            unit = bad_p & ~hinted & (p >= lo) & (p <= hi)
            problems.append((unit, f"{r.pressure}: {hint}"))
            hinted |= unit
        problems.append((bad_p & ~hinted, r.pressure))
    return verdicts(problems, len(station))


def _f64(col) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with NaN for null, where null) of a numeric column."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    nulls = ~np.asarray(col.is_valid(), dtype=bool)
    # unsafe: an integer beyond 2**53 becomes a nearby float, which the limits refuse
    values = np.asarray(pc.fill_null(col.cast(pa.float64(), safe=False), np.nan).to_numpy(zero_copy_only=False),
                        dtype=np.float64)
    return values, nulls


def _table(station: pa.Array, ts: pa.Array, cols: dict[str, np.ndarray], nulls: dict[str, np.ndarray]) -> pa.Table:
    data = {"station": station, "ts": ts}
    for c in VALUES:
        data[c] = pa.array(cols[c], pa.float64(), mask=nulls[c])
    return pa.table(data, schema=SCHEMA)


class WeatherDecoder:
    """Decoder for `weather.observations` (unsplit: one append-only landing); `decode_batch` is the fast path."""

    schema = SCHEMA
    split_column = None

    def __init__(self, limits: WeatherLimits | None = None, clock_ns=time.time_ns):
        self.limits = limits or WeatherLimits()
        self._clock_ns = clock_ns
        self._reasons = Reasons(self.limits)
        self._empty = SCHEMA.empty_table()

    # -- one message (the authority for DLQ reasons) ----------------------------------------------
    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if not value or not value.strip():
            raise DecodeError("empty message")
        if key is None:
            raise DecodeError("the message key must be the station id (it keeps a station's observations in order)")
        if content_type == ARROW:
            station, ts, cols, nulls = self._arrow_columns(value)
        else:
            station, ts, cols, nulls = self._json_columns(value)
        keys = pa.array([key] * len(station), pa.binary())
        ok, reasons = validate(station, keys, np.asarray(ts.is_valid(), dtype=bool), cols, nulls, self.limits,
                               self._reasons, ts=ts, now_ns=self._clock_ns())
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            first = ", ".join(f"{c}={'null' if nulls[c][i] else repr(float(cols[c][i]))}" for c in VALUES)
            raise DecodeError(f"{'; '.join(reasons)} (first refused observation: station={station[i].as_py()!r}, "
                              f"{first})")
        return Decoded(_table(station, ts, cols, nulls), None)

    def _json_columns(self, value: bytes):
        objs = json_objects(value, MAX_LINES, noun="observation")
        stations, ts = [], []
        vals: dict[str, list[float | None]] = {c: [] for c in VALUES}
        for obj in objs:  # a message holds one observation, or an upload of a few (NDJSON)
            sid = obj.get("station")
            if sid is not None and not isinstance(sid, str):
                raise DecodeError(f"station must be a string, got {type(sid).__name__}")
            stations.append(sid)
            ts.append(parse_ts_ns(obj.get("ts")))
            for c in VALUES:
                vals[c].append(parse_float(obj.get(c), c, nullable=True))
        cols, nulls = {}, {}
        for c in VALUES:
            cols[c], nulls[c] = _f64(pa.array(vals[c], pa.float64()))
        return pa.array(stations, pa.string()), pa.array(ts, pa.int64()).cast(TS_TYPE), cols, nulls

    def _arrow_columns(self, value: bytes):
        table, sid, ts = arrow_block(value, required=("station", "ts", "temperature_c"), id_column="station",
                                     max_rows=MAX_ARROW_ROWS, what="observations")
        cols, nulls = {}, {}
        for c in VALUES:
            if c not in table.column_names:  # a temperature-only station may leave them out
                cols[c], nulls[c] = np.full(table.num_rows, np.nan), np.ones(table.num_rows, dtype=bool)
                continue
            col = table[c]
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise DecodeError(f"{c} must be a numeric column, got {col.type}")
            cols[c], nulls[c] = _f64(col)
        return sid, ts, cols, nulls

    # -- a fetched batch (the fast path) ----------------------------------------------------------
    def decode_batch(self, values: list[bytes | None], keys: list[bytes | None],
                     content_types: list[str]) -> BatchDecoded:
        def finish(parsed: pa.Table, row_keys: pa.Array):
            converted = json_ts_column(parsed["ts"])
            if converted is None:  # a naive or malformed time: find it alone
                return None
            ts, exact = converted  # exact: rows whose ts equals the per-message path's (None: all)
            station = parsed["station"].combine_chunks()
            cols, nulls = {}, {}
            for c in VALUES:
                cols[c], nulls[c] = _f64(parsed[c])
            ok, _ = validate(station, row_keys, np.asarray(ts.is_valid(), dtype=bool), cols, nulls, self.limits,
                             self._reasons, ts=ts, now_ns=self._clock_ns())
            if exact is not None:
                ok &= exact
            return _table(station, ts, cols, nulls), ok, None

        return decode_json_batch(values, keys, content_types,
                                 parse_schemas=[_PARSE_ISO, _PARSE_EPOCH_MS_INT, _PARSE_EPOCH_MS], finish=finish,
                                 decode_one=self.decode, empty=self._empty, max_lines=MAX_LINES)


__all__ = ["SCHEMA", "WeatherDecoder", "validate"]
