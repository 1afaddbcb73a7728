"""Cleaning of landed rig readings: every row either comes out clean or is quarantined with a reason.

Nothing is dropped silently: `rows in = clean + quarantined` holds for any table, so an operator
can always answer "where did reading X go?". Reasons are checked in a fixed order and the first
match wins, so a row has exactly one reason, and each reason names the field and the value:

1. unparseable      -- landing could not parse it; its `problems` text is repeated verbatim;
2. missing          -- rig_id missing/empty, or ts or a measured field null;
3. impossible       -- a value outside `PhysicalBounds` (or NaN): a broken sensor, not an anomaly;
4. duplicate        -- the same (rig_id, ts) as an earlier *clean* row in landing order; the first
                       one is kept and the reason names its origin ("duplicate of rig.readings/0/17").

Duplicates are looked for among rows that passed 1-3, so a valid resend of a reading whose first
copy was broken is kept rather than quarantined against a row that is itself in quarantine.

The clean rows come out sorted by (rig_id, ts): the duplicate search needs that order anyway, and
the anomaly scorer needs it too, so the one sort of the pipeline happens here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.rig import kernels
from aero_assets.rig.schema import CLEAN_SCHEMA, LANDED_SCHEMA, QUARANTINE_SCHEMA, SIGNALS

_UNIT = {"temperature_c": "°C", "pressure_hpa": "hPa", "uptime_h": "h"}
_CLEAN, _UNPARSEABLE, _MISSING, _IMPOSSIBLE, _DUPLICATE = range(5)
NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class PhysicalBounds:
    """What a working sensor can report at all (inclusive). Outside is a broken sensor, not an anomaly.

    Deliberately wide: these separate impossible from implausible, and implausible is the
    anomaly detector's job (a 95 degC reading is an alert, -300 degC is a fault).
    """

    temperature_c: tuple[float, float] = (-60.0, 300.0)
    pressure_hpa: tuple[float, float] = (0.0, 3000.0)
    uptime_h: tuple[float, float] = (0.0, 1e6)


def _flat(x: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array: case_when wants its arguments chunked alike, and a plain array always is."""
    if isinstance(x, pa.ChunkedArray):
        return x.chunk(0) if x.num_chunks == 1 else x.combine_chunks()  # (combine_chunks copies even one chunk)
    return x


def to_numpy(col: pa.ChunkedArray | pa.Array, fill: float | int | None = None) -> np.ndarray:
    """A numeric column as NumPy, without a copy when it is one chunk without nulls (the usual case).

    ChunkedArray.to_numpy always concatenates, i.e. copies 80 MB per 10 M-row column; on this
    path a copy is not just the memcpy but fresh pages the kernel must fault in and zero.
    Nulls become `fill` (which then must be given).
    """
    if col.null_count:
        col = col.fill_null(fill)
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            col = col.chunk(0)
        else:
            return col.to_numpy()
    return col.to_numpy(zero_copy_only=False)


def neighbour_changes(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """col[i + 1] != col[i] for every neighbour pair (a string comparison, cheaper than dictionary-encoding)."""
    n = len(col)
    return pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)


def values_ignoring_nulls(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column's data buffer as NumPy, whatever its null slots hold (one chunk: no copy).

    For callers that never read a null row's value (cleaning masks them as missing first), this
    spares the 80 MB copy per 10 M-row column that filling the nulls would make.
    """
    arr = _flat(col)
    if not arr.null_count or arr.type.bit_width not in (32, 64) or not pa.types.is_floating(arr.type):
        return to_numpy(arr, 0.0)
    dtype = np.float64 if arr.type.bit_width == 64 else np.float32
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype().itemsize)


def lex_rig_codes(rig_id: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of rig_id in lexicographic order (-1 for null) and the sorted dictionary.

    Dictionary encoding numbers rigs by first appearance; re-ranking the (small) dictionary makes
    sorting by code the same as sorting by the string, at the cost of sorting a few names.
    """
    encoded = pc.dictionary_encode(rig_id).combine_chunks()
    dictionary = encoded.dictionary
    order = np.argsort(np.asarray(dictionary.to_pylist(), dtype=object), kind="stable")
    rank = np.empty(len(dictionary) + 1, dtype=np.int32)
    rank[order] = np.arange(len(dictionary), dtype=np.int32)
    rank[-1] = -1  # null rig_id: index -1 picks this
    codes = rank[to_numpy(encoded.indices, -1)]
    return codes, dictionary.take(pa.array(order))


def sort_by_rig_ts(codes: np.ndarray, ts: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Row numbers ordered by (rig code, ts), ties in landing order; only rows where `keep` is true."""
    return order_by_rig_ts(codes, ts, keep)[0]


def order_by_rig_ts(
    codes: np.ndarray, ts: np.ndarray, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, codes[order], ts[order]): rows by (rig code, ts), ties in landing order, only where `keep`.

    See `kernels.order_rows`: a counting sort by rig, then only the late rows of each rig moved.
    """
    if keep is None:
        keep = np.ones(codes.size, dtype=bool)
    if codes.size == 0 or not keep.any():
        empty = np.empty(0, dtype=np.int64)
        return empty, codes[:0], ts[:0]
    c_min, c_max = int(codes[keep].min()), int(codes[keep].max())
    order, rig_sorted, ts_sorted, _, _ = ordered_rows(codes, ts, keep, c_min, c_max - c_min + 1, dedup=False)
    return order, rig_sorted.astype(codes.dtype, copy=False), ts_sorted


def ordered_rows(
    codes: np.ndarray, ts: np.ndarray, keep: np.ndarray, c_min: int, n_codes: int, dedup: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`kernels.order_rows` with its outputs allocated here: (order, rig_sorted, ts_sorted, dup_rows, dup_first)."""
    n = codes.size
    order, rig_sorted, ts_sorted = np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.int32)
    kept, dup_rows, dup_first = kernels.order_rows(
        codes, np.ascontiguousarray(ts, dtype=np.int64), keep, c_min, n_codes, dedup, order, rig_sorted, ts_sorted
    )
    return order[:kept], rig_sorted[:kept], ts_sorted[:kept], dup_rows, dup_first


def _missing_reason(sub: pa.Table) -> pa.Array:
    no_rig = pc.fill_null(pc.equal(sub["rig_id"], ""), True)
    parts = [pc.if_else(no_rig, pa.scalar("rig_id is missing"), pa.scalar(None, pa.string()))]
    for name in ("ts", *SIGNALS):
        parts.append(pc.if_else(pc.is_null(sub[name]), pa.scalar(f"{name} is null"), pa.scalar(None, pa.string())))
    return join_parts(parts)


def _impossible_reason(sub: pa.Table, bounds: PhysicalBounds) -> pa.Array:
    parts = []
    for name in SIGNALS:
        lo, hi = getattr(bounds, name)
        value = sub[name]
        inside = pc.and_kleene(pc.greater_equal(value, lo), pc.less_equal(value, hi))
        text = pc.binary_join_element_wise(
            f"{name} ", pc.cast(value, pa.string()), f" {_UNIT[name]} is outside {lo:g}..{hi:g} {_UNIT[name]}", ""
        )
        parts.append(pc.if_else(pc.fill_null(pc.invert(inside), False), text, pa.scalar(None, pa.string())))
    return join_parts(parts)


def join_parts(parts: list) -> pa.Array:
    """Join the non-null parts with "; ".

    Built by hand because binary_join_element_wise(null_handling="skip") returns an empty array
    when every part is null in pyarrow 26; here each part becomes "text; " or "", and the last
    separator is trimmed (every part ends in a letter or a digit, never in ';' or ' ').
    """
    padded = [pc.fill_null(pc.binary_join_element_wise(_flat(p), "; ", ""), "") for p in parts]
    return pc.utf8_rtrim(_flat(pc.binary_join_element_wise(*padded, "")), characters="; ")


def clean(table: pa.Table, bounds: PhysicalBounds | None = None) -> tuple[pa.Table, pa.Table]:
    """Split landed rows into (clean, quarantined); see the module docstring for the rules.

    clean: rig_id, ts, temperature_c, pressure_hpa, uptime_h, origin, day, sorted by (rig_id, ts).
    quarantined: every landed column plus `reason`, in landing order. `bounds=None` means `PhysicalBounds()`.
    """
    bounds = bounds or PhysicalBounds()
    if table.schema != LANDED_SCHEMA:
        table = table.select(LANDED_SCHEMA.names).cast(LANDED_SCHEMA)
    n = table.num_rows
    if n == 0:
        return CLEAN_SCHEMA.empty_table(), QUARANTINE_SCHEMA.empty_table()

    # Independent steps overlap on a second and third thread: Arrow and the kernels release the GIL.
    with ThreadPoolExecutor(3) as pool:
        rig_codes = pool.submit(lex_rig_codes, table["rig_id"])
        code, values = _row_codes(table, bounds)
        codes, dictionary = rig_codes.result()
        ts = to_numpy(table["ts"].cast(pa.int64()), 0)
        ordered, rig_sorted, ts_sorted, dup_rows, dup_first = ordered_rows(
            codes, ts, code == _CLEAN, 0, max(len(dictionary), 1), dedup=True
        )
        code[dup_rows] = _DUPLICATE
        quarantine = pool.submit(_quarantine, table, code, dup_rows, dup_first, bounds)
        clean_table = _take_clean(pool, table, ordered, rig_sorted, dictionary, ts_sorted, values, ts, code == _CLEAN)
        return clean_table, quarantine.result()


def _row_codes(table: pa.Table, bounds: PhysicalBounds) -> tuple[np.ndarray, dict]:
    """(code per row: clean, unparseable, missing or impossible; the signals as NumPy, nulls as 0)."""
    n = table.num_rows
    problems = table["problems"]
    if problems.null_count:  # (landing never sends null problems; a copy of 10 M strings only when it does)
        problems = problems.fill_null("")
    code = np.where(pc.not_equal(problems, "").to_numpy(zero_copy_only=False), _UNPARSEABLE, _CLEAN).astype(np.int8)

    missing = pc.fill_null(pc.equal(table["rig_id"], ""), True)
    for name in ("ts", *SIGNALS):
        missing = pc.or_(missing, pc.is_null(table[name]))
    missing_np = missing.to_numpy(zero_copy_only=False)
    code[(code == _CLEAN) & missing_np] = _MISSING

    impossible = np.zeros(n, dtype=bool)
    values = {}
    for name in SIGNALS:
        lo, hi = getattr(bounds, name)
        values[name] = x = values_ignoring_nulls(table[name])  # (a null row is missing: its value is never read)
        impossible |= ~((x >= lo) & (x <= hi))  # NaN fails both comparisons: impossible too
    code[(code == _CLEAN) & impossible & ~missing_np] = _IMPOSSIBLE
    return code, values


def _quarantine(
    table: pa.Table, code: np.ndarray, dup_rows: np.ndarray, dup_first: np.ndarray, bounds: PhysicalBounds
) -> pa.Table:
    """The rows that are not clean, in landing order, each with its reason (see the module docstring)."""
    quarantined = np.flatnonzero(code != _CLEAN)
    sub = table.take(pa.array(quarantined))
    sub_code = pa.array(code[quarantined])
    first = np.zeros(quarantined.size, dtype=np.int64)  # the row a duplicate repeats (others: unused)
    first[np.searchsorted(quarantined, dup_rows)] = dup_first
    first_origin = table["origin"].take(pa.array(first)).fill_null("<unknown origin>")  # (as before the kernels)
    reason = pc.case_when(
        pc.make_struct(*(pc.equal(sub_code, c) for c in (_UNPARSEABLE, _MISSING, _IMPOSSIBLE, _DUPLICATE))),
        *(
            _flat(x)
            for x in (
                pc.binary_join_element_wise("unparseable: ", sub["problems"].fill_null(""), ""),
                _missing_reason(sub),
                pc.binary_join_element_wise("physically impossible: ", _impossible_reason(sub, bounds), ""),
                pc.binary_join_element_wise("duplicate of ", first_origin, ""),
            )
        ),
    )
    return sub.append_column(QUARANTINE_SCHEMA.field("reason"), reason.fill_null("?"))


def _take_clean(
    pool: ThreadPoolExecutor,
    table: pa.Table,
    keep: np.ndarray,
    rig_codes: np.ndarray,
    dictionary: pa.Array,
    ts: np.ndarray,
    values: dict,
    landed_ts: np.ndarray,
    is_clean: np.ndarray,
) -> pa.Table:
    """The clean columns at rows `keep` (a permutation to (rig_id, ts) order, minus dropped rows).

    `rig_codes` and `ts` are already gathered at `keep`; `values` are the signals in landing order.

    Each column takes its cheapest road: numbers are gathered by a kernel from arrays already in
    hand (ts wrapped without a copy), rig_id is rebuilt from its small dictionary, day from ts
    (see `_days_from_ts`; `landed_ts` and `is_clean` are in landing order, for its check), and
    only origin, unique per row, needs Arrow's string take; it and the days run on `pool` meanwhile.
    """
    origin = pool.submit(lambda: _flat(table["origin"]).take(pa.array(keep)))
    days = pool.submit(_days_from_ts, table["day"], landed_ts, is_clean, ts)
    rig_id = pa.DictionaryArray.from_arrays(pa.array(rig_codes), dictionary).cast(pa.string())
    signals = []
    for name in SIGNALS:
        out = np.empty(keep.size, dtype=np.float64)
        kernels.gather(values[name], keep, out)
        signals.append(pa.array(out))
    day = days.result()
    if day is None:  # some clean row's day is not its ts's UTC date: take the landed strings as they are
        day = _flat(table["day"]).take(pa.array(keep))
    columns = [
        rig_id,
        pa.Array.from_buffers(CLEAN_SCHEMA.field("ts").type, ts.size, [None, pa.py_buffer(ts)]),
        *signals,
        origin.result(),
        day,
    ]
    return pa.Table.from_arrays(columns, schema=CLEAN_SCHEMA)


def _days_from_ts(day: pa.ChunkedArray, landed_ts: np.ndarray, is_clean: np.ndarray, ts: np.ndarray) -> pa.Array | None:
    """The clean rows' `day`, built from their int64 `ts` (already in clean order), or None.

    For a clean row, landing sets `day` to the UTC date of its ts; that is checked rather than
    assumed, in landing order and without gathering any strings, and None is returned when it
    does not hold. The days then come from a small table of formatted dates indexed by
    ts // day, instead of gathering 10 M strings.
    """
    arr = _flat(day)
    if arr.null_count or ts.size == 0:
        return None
    d_lo, d_hi = int(ts.min()) // NS_PER_DAY, int(ts.max()) // NS_PER_DAY
    if d_hi - d_lo > 1_000_000:
        return None
    dates = np.datetime_as_string(np.arange(d_lo, d_hi + 1).astype("datetime64[D]"), unit="D").astype("S10")
    table = np.frombuffer(dates.tobytes(), dtype=np.uint8).reshape(-1, 10)
    if any(len(d) != 10 for d in dates.tolist()):  # (a date that does not format to 10 characters)
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=4 * arr.offset)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    if not kernels.days_match(offsets, data, landed_ts, is_clean, d_lo, table, NS_PER_DAY):
        return None
    if ts.size >= 2**31 // 10:
        return None
    out = np.empty(10 * ts.size, dtype=np.uint8)
    kernels.dates_of(ts, d_lo, table, NS_PER_DAY, out)
    return pa.StringArray.from_buffers(
        ts.size, pa.py_buffer(np.arange(0, 10 * ts.size + 1, 10, dtype=np.int32)), pa.py_buffer(out)
    )
