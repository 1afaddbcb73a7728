"""Raw rig readings (text, from CSV cells or JSON values) -> the landed schema, without losing a row.

Both sources go through this one vectorised parser, so a value means the same whether it came in a
CSV file or a Kafka message, and a row that cannot be parsed is still landed - with its fields null
and a `problems` text saying what was wrong - so cleaning can quarantine it with that reason
(input rows = clean + quarantined holds from the first byte).

- numbers: optional sign, digits, a decimal point, an exponent; surrounding blanks are ignored;
  empty means missing (null, no problem: cleaning calls it missing), anything else is a problem
  ('abc', '1,5', 'NaN', 'inf');
- timestamps: ISO-8601 (`T` or a blank between date and time, fractions, an offset; no offset is
  taken as UTC, the rigs' convention), or epoch milliseconds as digits;
- `day` is the event day, or the landing day when the timestamp is missing or unparseable, so every
  row belongs to exactly one daily partition.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.ids import is_safe_id
from aero_assets.rig.schema import LANDED_SCHEMA

COLUMNS = ("rig_id", "ts", "temperature_c", "pressure_hpa", "uptime_h")
NUMBERS = ("temperature_c", "pressure_hpa", "uptime_h")
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_EPOCH_MS = r"^\s*\d{10,16}\s*$"  # whole milliseconds (a float would lose the last digits of ns)
MAX_TEXT = 200  # longest cell quoted back in a problem


def _text(col: pa.Array) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _quote(values: pa.Array) -> np.ndarray:
    text = pc.utf8_slice_codeunits(pc.fill_null(values, ""), 0, MAX_TEXT).to_numpy(zero_copy_only=False)
    return np.array([repr(t) for t in text], dtype=object) if len(text) else np.array([], dtype=object)


def parse_numbers(col: pa.Array, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(float64 values, rows with a problem, problem texts for those rows)."""
    col = _text(col)
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
    ok = pc.fill_null(pc.match_substring_regex(col, _NUMBER), False)
    values = pc.cast(pc.utf8_trim_whitespace(pc.if_else(ok, col, pa.scalar(None, pa.string()))), pa.float64())
    bad = ~np.asarray(ok) & ~np.asarray(blank)
    texts = np.array([], dtype=object)
    if bad.any():
        texts = np.array([f"{name} {q} is not a number" for q in _quote(col.filter(pa.array(bad)))], dtype=object)
    return values, bad, texts


TS_MIN = np.datetime64("2000-01-01T00:00:00", "ns")  # a rig reading before this is a broken clock or a unit error
MAX_AHEAD = np.timedelta64(1, "D")  # ... and so is one more than a day ahead of the landing


def parse_ts(col: pa.Array, now_ns: int | None = None) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(timestamp[ns, UTC] values, rows with a problem, problem texts).

    A time outside 2000 .. a day after now (epoch seconds read as milliseconds land in 1970, a typo
    in 2999) is a problem, not a reading: such a row has no day of its own and would otherwise fall
    outside every daily partition, neither clean nor quarantined.
    """
    col = _text(col)
    n = len(col)
    text = col.to_numpy(zero_copy_only=False)
    blank = np.asarray(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True))
    epoch = np.asarray(pc.fill_null(pc.match_substring_regex(col, _EPOCH_MS), False))
    ns = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    if epoch.any():
        ms = pc.cast(pc.utf8_trim_whitespace(col.filter(pa.array(epoch))), pa.int64()).to_numpy()
        fits = np.abs(ms) < 9_000_000_000_000  # ms * 10**6 must stay inside int64 (year 2255)
        ns[np.flatnonzero(epoch)[fits]] = ms[fits] * 1_000_000
    iso = ~epoch & ~blank
    if iso.any():
        parsed = pd.to_datetime(pd.Series(text[iso]), format="ISO8601", utc=True, errors="coerce")
        values = parsed.dt.tz_localize(None).to_numpy()  # datetime64 at pandas' chosen unit, NaT where bad
        with np.errstate(invalid="ignore"):
            inside = ~np.isnat(values) & (values >= np.datetime64("1678-01-01")) & (
                values <= np.datetime64("2261-12-31"))
        out = np.full(values.shape, np.iinfo(np.int64).min, dtype=np.int64)
        out[inside] = values[inside].astype("datetime64[ns]").astype(np.int64)
        ns[iso] = out
    valid = ns != np.iinfo(np.int64).min
    now = np.datetime64(time.time_ns() if now_ns is None else now_ns, "ns")
    in_range = valid & (ns >= TS_MIN.astype(np.int64)) & (ns <= (now + MAX_AHEAD).astype(np.int64))
    bad_format = ~valid & ~blank
    out_of_range = valid & ~in_range
    texts_by_row = np.full(n, "", dtype=object)
    if bad_format.any():
        texts_by_row[bad_format] = [f"ts {q} is not a timestamp" for q in _quote(col.filter(pa.array(bad_format)))]
    if out_of_range.any():
        texts_by_row[out_of_range] = [f"ts {q} is before 2000 or more than a day ahead (a clock or unit error?)"
                                      for q in _quote(col.filter(pa.array(out_of_range)))]
    bad = bad_format | out_of_range
    return pa.array(ns, mask=~in_range).cast(LANDED_SCHEMA.field("ts").type), bad, texts_by_row[bad]


def parse_raw(raw: dict[str, pa.Array], origin: pa.Array, landed_ns: int | None = None,
              extra_problems: np.ndarray | None = None) -> pa.Table:
    """Cells of the five columns as text (null = absent) -> rows in the landed schema, one per input row."""
    n = len(origin)
    problems = np.full(n, "", dtype=object) if extra_problems is None else extra_problems.astype(object)

    def note(bad: np.ndarray, texts: np.ndarray) -> None:
        if not bad.any():
            return
        idx = np.flatnonzero(bad)
        cur = problems[idx]
        problems[idx] = np.where(cur == "", texts, cur + "; " + texts)

    rig = _text(raw.get("rig_id", pa.nulls(n, pa.string())))
    rig = pc.if_else(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(rig), ""), True),
                     pa.scalar(None, pa.string()), pc.utf8_trim_whitespace(rig))
    # a rig id travels into Postgres keys, file names and the UI: 1-128 safe characters, checked once per
    # distinct value (a NUL byte or a 10 KB id would wedge the serving table's primary key)
    distinct = [v for v in pc.unique(rig).drop_null().to_pylist() if not is_safe_id(v, "rig id")]
    if distinct:
        unsafe = np.asarray(pc.fill_null(pc.is_in(rig, value_set=pa.array(distinct, pa.string())), False))
        note(unsafe, np.array([f"rig_id {q} is not a safe id (1-128 letters, digits, _ . -)"
                               for q in _quote(rig.filter(pa.array(unsafe)))], dtype=object))
        rig = pc.if_else(pa.array(unsafe), pa.scalar(None, pa.string()), rig)
    ts, bad, texts = parse_ts(raw.get("ts", pa.nulls(n, pa.string())), landed_ns)
    note(bad, texts)
    cols = {}
    for name in NUMBERS:
        cols[name], bad, texts = parse_numbers(raw.get(name, pa.nulls(n, pa.string())), name)
        note(bad, texts)
    landed_day = datetime.fromtimestamp((landed_ns or 0) / 1e9 if landed_ns else datetime.now(UTC).timestamp(),
                                        tz=UTC).strftime("%Y-%m-%d")
    return pa.table({"rig_id": rig, "ts": ts, **cols, "problems": pa.array(problems, pa.string()),
                     "origin": _text(origin), "day": day_strings(ts, landed_day)}, schema=LANDED_SCHEMA)


def day_strings(ts: pa.Array, fallback: str) -> pa.Array:
    """'YYYY-MM-DD' of each timestamp (`fallback` where null), formatted once per distinct day, not per row."""
    if len(ts) == 0:
        return pa.array([], pa.string())
    ns = ts.cast(pa.int64())
    valid = np.asarray(ns.is_valid())
    days = np.where(valid, np.asarray(pc.fill_null(ns, 0)) // 86_400_000_000_000, np.iinfo(np.int64).min)
    uniq, inverse = np.unique(days, return_inverse=True)
    names = [fallback if d == np.iinfo(np.int64).min else
             datetime.fromtimestamp(int(d) * 86_400, tz=UTC).strftime("%Y-%m-%d") for d in uniq]
    return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), pa.array(names, pa.string())
                                          ).cast(pa.string())

