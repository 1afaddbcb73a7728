"""Robust rolling z-scores of rig readings, and the alerts the seed defined on them.

Per rig and signal the baseline is a centered rolling median over WINDOW readings of that rig, and
the scale a rolling median of the absolute deviations from it (a rolling MAD), so

    z = (x - median) / (1.4826 * MAD + epsilon)

A spike is one value among WINDOW: it moves neither the median of its neighbours (so the next
spike a few readings later is still measured against the true level and is not hidden) nor their
MAD (so the reading next to a spike is not flagged, and the spike does not shrink its neighbours'
z by inflating the scale, as a rolling standard deviation would). Up to WINDOW // 2 - 1 bad values
in one window can be tolerated.

The rolling MAD is the median filter of |x - rolling median| (each reading's deviation from its own
baseline), the standard O(n log w) approximation of "MAD of the window around its median"; it
differs only where the baseline bends, and costs two median filters instead of a per-window sort.

WINDOW = 11 readings (66 min at the 6-minute cadence): long enough that two spikes a few readings
apart are a small minority of any window (2 of 11, 4 would still be tolerated), short enough that
the median follows a 2-3 h warm-up or cool-down instead of cutting its corners.

epsilon is a noise floor (0.5 degC, 1.5 hPa): on a flat quantised stretch most deviations are
exactly 0, the MAD is 0, and without a floor a one-quantum wobble would score z = inf; and where a
warm-up bends, the median lags the reading by a few tenths while the MAD stays tiny. The floor is
far below a real spike (>= 8 degC, 60 hPa).
Drift is slow, so the median follows it and z stays small: drift is caught by the absolute limits.

At the ends of a rig's series the window is padded by a point reflection (see `_edge_pad`); pass
the previous day's tail as `context` so a day's first readings get a full real window (the context
rows feed the baseline only).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.ndimage import median_filter

from aero_assets.rig.cleaning import join_parts, lex_rig_codes, sort_by_rig_ts, to_numpy
from aero_assets.rig.schema import CLEAN_SCHEMA

WINDOW = 11
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its standard deviation


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds (the seed's): |z| limits and absolute limits, plus the z denominator's floor."""

    temperature_z: float = 2.0
    pressure_z: float = 2.5
    temperature_max_c: float = 80.0
    pressure_max_hpa: float = 1100.0
    temperature_epsilon_c: float = 0.5
    pressure_epsilon_hpa: float = 1.5


SCORED_FIELDS = [
    pa.field("temperature_zscore", pa.float64(), nullable=False),
    pa.field("pressure_zscore", pa.float64(), nullable=False),
    pa.field("temperature_alert", pa.bool_(), nullable=False),
    pa.field("pressure_alert", pa.bool_(), nullable=False),
    pa.field("anomaly", pa.bool_(), nullable=False),
    pa.field("anomaly_reason", pa.string(), nullable=False),
]
SCORED_SCHEMA = pa.schema([*CLEAN_SCHEMA, *SCORED_FIELDS])


def _edge_pad(seg: np.ndarray, half: int) -> np.ndarray:
    """`half` values to put before `seg`: its point reflection about a robust anchor near the start.

    A plain mirror turns a ramp at the edge into a V whose median is off the ramp (false alerts
    on every rig's first readings during a warm-up). Reflecting through the point (2, a), with a
    the median of the first five readings, continues a straight ramp exactly, and because the
    anchor is a median and the pad reuses readings 5.., a spike at the very first reading is
    neither copied into the pad nor hidden by it.
    """
    anchor = np.median(seg[:5])
    return 2.0 * anchor - seg[4 + half : 4 : -1]


def robust_z(x: np.ndarray, bounds: np.ndarray, window: int, epsilon: float) -> np.ndarray:
    """Rolling robust z of `x`, independently within each segment [bounds[i], bounds[i+1]) (one rig each).

    A loop over segments (rigs), each a contiguous slice handed to a median filter: `_median11` for
    the usual window of 11 (the same values as scipy's, faster), else scipy's C median filter.
    """
    z = np.zeros(x.size, dtype=np.float64)
    half = window // 2
    fast = 2 * half + 1 == 11 and not np.isnan(x).any()  # (min/max order NaN unlike scipy's filter)
    for lo, hi in itertools.pairwise(bounds):
        seg = x[lo:hi]
        if seg.size < 2:
            continue  # one reading is its own median: z = 0
        if seg.size >= half + 5:
            padded = np.concatenate([_edge_pad(seg, half), seg, _edge_pad(seg[::-1], half)[::-1]])
            med = _median11(padded) if fast else median_filter(padded, size=2 * half + 1, mode="nearest")[half:-half]
        else:  # too short for the anchored pad: mirror, with the window fitting the mirrored segment
            med = median_filter(seg, size=min(2 * half + 1, 2 * seg.size - 1), mode="mirror")
        size = min(2 * half + 1, 2 * seg.size - 1)
        dev = seg - med
        if fast and seg.size > half:  # scipy's "mirror" is numpy's "reflect" (d c b | a b c d | c b a)
            mad = _median11(np.pad(np.abs(dev), half, mode="reflect"))
        else:
            mad = median_filter(np.abs(dev), size=size, mode="mirror")
        z[lo:hi] = dev / (MAD_TO_SIGMA * mad + epsilon)
    return z


_SORT5 = ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2))  # an optimal 5-sorter
_PAIRS = 8192  # window pairs per block: the block's ~25 temporaries stay in cache


def _median11(p: np.ndarray) -> np.ndarray:
    """median(p[j : j + 11]) for j = 0 .. len(p) - 11: every full window, exactly (values are picked, not computed).

    Windows 2q and 2q + 1 share the ten values p[2q+1 .. 2q+10]; with c4 <= c5 their 5th and 6th
    smallest, median(window 2q) = clip(p[2q], c4, c5) and median(window 2q+1) = clip(p[2q+11], c4, c5).
    The ten shared values are the odd-indexed o[q .. q+4] and even-indexed e[q+1 .. q+5]; each five
    is sorted by a 9-comparator network (element-wise min/max over all q at once), and the k-th
    smallest of two sorted runs a, b is min over i of max(a[i-1], b[k-i-1]). About 30 vectorised
    min/max per pair of windows, on blocks that stay in cache, instead of a heap per window.
    """
    n_out = p.size - 10
    if n_out <= 0:
        return np.empty(0, dtype=np.float64)
    if n_out % 2:
        p = np.append(p, p[-1])  # an even number of windows; the extra one is dropped
    out = np.empty(n_out + n_out % 2, dtype=np.float64)
    mn, mx = np.minimum, np.maximum
    for j0 in range(0, out.size, 2 * _PAIRS):
        q = min(_PAIRS, (out.size - j0) // 2)
        block = p[j0 : j0 + 2 * q + 10]
        even, odd = block[0::2], block[1::2]
        a = _sorted5([odd[k : k + q] for k in range(5)])
        b = _sorted5([even[k + 1 : k + 1 + q] for k in range(5)])
        c4 = mn(b[4], a[4])
        c5 = mx(a[0], b[4])
        for i in range(1, 5):
            mn(c4, mx(a[i - 1], b[4 - i]), out=c4)
            mn(c5, mx(a[i], b[4 - i]), out=c5)
        out[j0 : j0 + 2 * q : 2] = mx(c4, mn(even[:q], c5))
        out[j0 + 1 : j0 + 2 * q : 2] = mx(c4, mn(odd[5 : 5 + q], c5))
    return out[:n_out]


def _sorted5(v: list[np.ndarray]) -> list[np.ndarray]:
    """Element-wise sort of five equal-length arrays (v[0] <= ... <= v[4] afterwards), new arrays."""
    v = list(v)
    for i, j in _SORT5:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return v


def _segments(codes: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal rig codes, plus the end."""
    return np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1, [codes.size]]).astype(np.int64)


def _reason(
    z_t: np.ndarray,
    z_p: np.ndarray,
    hot: np.ndarray,
    high: np.ndarray,
    t_alert_z: np.ndarray,
    p_alert_z: np.ndarray,
    th: Thresholds,
) -> pa.Array:
    """'temperature z=+7.3; pressure > 1100 hPa' for alerted rows, '' elsewhere; text built only for alerted rows."""
    n = z_t.size
    rows = np.flatnonzero(t_alert_z | p_alert_z | hot | high)
    if not rows.size:
        return _empty_strings(n)
    parts = []
    for z, flag_z, over, label, limit in (
        (z_t, t_alert_z, hot, "temperature", f"temperature > {th.temperature_max_c:g} °C"),
        (z_p, p_alert_z, high, "pressure", f"pressure > {th.pressure_max_hpa:g} hPa"),
    ):
        zr = np.round(z[rows], 1)
        ztxt = pc.binary_join_element_wise(
            f"{label} z=", pc.if_else(pa.array(zr >= 0), "+", ""), pc.cast(pa.array(zr), pa.string()), ""
        )
        ztxt = pc.if_else(pa.array(flag_z[rows]), ztxt, pa.scalar(None, pa.string()))
        parts.append(ztxt)
        parts.append(pc.if_else(pa.array(over[rows]), pa.scalar(limit), pa.scalar(None, pa.string())))
    text = _flat_strings(join_parts(parts))
    # Spread the alerted rows' texts over all rows: '' elsewhere is just no growth of the offsets, and
    # the texts' bytes are already in row order (rows ascend), so the data buffer is reused as is.
    # (int32 throughout: the total is the texts' own length, which int32 offsets already hold.)
    t_off = np.frombuffer(text.buffers()[1], dtype=np.int32, count=rows.size + 1, offset=4 * text.offset)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[0] = t_off[0]
    offsets[rows + 1] = np.diff(t_off)
    np.cumsum(offsets, out=offsets)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), text.buffers()[2])


def _flat_strings(arr: pa.Array | pa.ChunkedArray) -> pa.StringArray:
    """One string array without nulls (a ChunkedArray combined; nulls are not expected, and become '')."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.fill_null("") if arr.null_count else arr


def _empty_strings(n: int) -> pa.StringArray:
    """n empty strings: zero offsets and no data."""
    return pa.StringArray.from_buffers(n, pa.py_buffer(np.zeros(n + 1, dtype=np.int32)), pa.py_buffer(b""))


def score(
    clean: pa.Table,
    thresholds: Thresholds | None = None,
    window: int = WINDOW,
    context: pa.Table | None = None,
) -> pa.Table:
    """Clean rows sorted by (rig_id, ts) with z-scores, alerts, `anomaly` and `anomaly_reason` (SCORED_SCHEMA).

    `window` is the number of readings in the centered window (an even number means the next odd
    one). `context` (clean rows, e.g. the previous day's tail; at least window // 2 readings per rig
    for an exact result) is scored along but not returned; it is assumed disjoint from `clean`.
    The input is not re-sorted when it already is in (rig_id, ts) order, as `clean` returns it.
    `thresholds=None` means `Thresholds()`.
    """
    th = thresholds or Thresholds()
    if clean.schema != CLEAN_SCHEMA:
        clean = clean.select(CLEAN_SCHEMA.names).cast(CLEAN_SCHEMA)
    n_ctx = 0
    if context is not None and context.num_rows:
        n_ctx = context.num_rows
        clean = pa.concat_tables([context.select(CLEAN_SCHEMA.names).cast(CLEAN_SCHEMA), clean])
    n = clean.num_rows
    if n == 0:
        return SCORED_SCHEMA.empty_table()

    codes, _ = lex_rig_codes(clean["rig_id"])
    ts = to_numpy(clean["ts"].cast(pa.int64()))
    is_context = None
    if n_ctx or not _is_sorted(codes, ts):
        ordered = sort_by_rig_ts(codes, ts)
        clean = clean.take(pa.array(ordered))
        codes = codes[ordered]
        is_context = ordered < n_ctx  # the context rows came first in the concatenation

    bounds = _segments(codes)
    temp = to_numpy(clean["temperature_c"])
    pres = to_numpy(clean["pressure_hpa"])
    # Sequential on purpose: scipy's median filter holds the GIL, and two threads measured 2.6x slower.
    z_t = robust_z(temp, bounds, window, th.temperature_epsilon_c)
    z_p = robust_z(pres, bounds, window, th.pressure_epsilon_hpa)

    t_z, p_z = np.abs(z_t) > th.temperature_z, np.abs(z_p) > th.pressure_z
    hot, high = temp > th.temperature_max_c, pres > th.pressure_max_hpa
    t_alert, p_alert = t_z | hot, p_z | high
    columns = [
        pa.array(z_t),
        pa.array(z_p),
        pa.array(t_alert),
        pa.array(p_alert),
        pa.array(t_alert | p_alert),
        _reason(z_t, z_p, hot, high, t_z, p_z, th),
    ]
    out = pa.Table.from_arrays([*clean.columns, *columns], schema=SCORED_SCHEMA)
    if n_ctx and is_context is not None:
        out = out.filter(pa.array(~is_context))
    return out


def _is_sorted(codes: np.ndarray, ts: np.ndarray) -> bool:
    """Whether rows are in (rig code, ts) order, so sorted input skips the sort.

    Comparisons of neighbours (bool temporaries) rather than np.diff (int64 ones): on 10 M rows the
    cost here is mostly faulting in fresh memory, and a bool array is an eighth of the pages.
    """
    if codes.size < 2:
        return True
    rig_up = codes[1:] > codes[:-1]
    rig_same = codes[1:] == codes[:-1]
    return bool(np.all(rig_up | (rig_same & (ts[1:] >= ts[:-1]))))
