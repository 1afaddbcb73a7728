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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.ndimage import median_filter

from aero_assets.rig import kernels
from aero_assets.rig.cleaning import join_parts, lex_rig_codes, neighbour_changes, sort_by_rig_ts, to_numpy
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


def robust_z(
    x: np.ndarray, bounds: np.ndarray, window: int, epsilon: float, pool: ThreadPoolExecutor | None = None
) -> np.ndarray:
    """Rolling robust z of `x`, independently within each segment [bounds[i], bounds[i+1]) (one rig each).

    The compiled kernel (`kernels.robust_z_segments`) does the work, on `pool` in two halves of
    the rigs when one is given (it releases the GIL); a series holding NaN or +-inf goes to
    `robust_z_reference` instead, since its min/max network orders NaN unlike SciPy's filter
    (an inf makes NaN inside: x - median is inf - inf, and so is the edge pad 2 * anchor - x).
    """
    if not np.isfinite(x).all():
        return robust_z_reference(x, bounds, window, epsilon)
    x = np.ascontiguousarray(x, dtype=np.float64)
    z = np.empty(x.size, dtype=np.float64)
    half = window // 2
    scratch_size = 3 * (int(np.diff(bounds).max(initial=0)) + 2 * half)
    cut = int(np.searchsorted(bounds, bounds[-1] // 2)) if bounds.size > 2 else 0
    if pool is None or not 0 < cut < bounds.size - 1:
        kernels.robust_z_segments(x, bounds, half, epsilon, MAD_TO_SIGMA, z, np.empty(scratch_size))
        return z
    halves = [
        pool.submit(kernels.robust_z_segments, x, b, half, epsilon, MAD_TO_SIGMA, z, np.empty(scratch_size))
        for b in (bounds[: cut + 1], bounds[cut:])
    ]
    for run in halves:
        run.result()
    return z


def robust_z_reference(x: np.ndarray, bounds: np.ndarray, window: int, epsilon: float) -> np.ndarray:
    """`robust_z` by SciPy's median filter, segment by segment: the definition the kernel is tested against."""
    z = np.zeros(x.size, dtype=np.float64)
    half = window // 2
    for lo, hi in itertools.pairwise(bounds):
        seg = x[lo:hi]
        if seg.size < 2:
            continue  # one reading is its own median: z = 0
        size = min(2 * half + 1, 2 * seg.size - 1)
        if seg.size >= half + 5:
            padded = np.concatenate([_edge_pad(seg, half), seg, _edge_pad(seg[::-1], half)[::-1]])
            med = median_filter(padded, size=2 * half + 1, mode="nearest")[half:-half]
        else:  # too short for the anchored pad: mirror, with the window fitting the mirrored segment
            med = median_filter(seg, size=size, mode="mirror")
        dev = seg - med
        mad = median_filter(np.abs(dev), size=size, mode="mirror")
        z[lo:hi] = dev / (MAD_TO_SIGMA * mad + epsilon)
    return z


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
    rows: np.ndarray,
) -> pa.Array:
    """'temperature z=+7.3; pressure > 1100 hPa' for alerted `rows`, '' elsewhere; text built only for those."""
    n = z_t.size
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

    ts = to_numpy(clean["ts"].cast(pa.int64()))
    bounds = None if n_ctx else _sorted_segments(clean["rig_id"], ts)
    is_context = None
    if bounds is None:
        codes, _ = lex_rig_codes(clean["rig_id"])
        ordered = sort_by_rig_ts(codes, ts)
        clean = clean.take(pa.array(ordered))
        bounds = _segments(codes[ordered])
        is_context = ordered < n_ctx  # the context rows came first in the concatenation
    temp = to_numpy(clean["temperature_c"])
    pres = to_numpy(clean["pressure_hpa"])
    with ThreadPoolExecutor(2) as pool:  # (the kernel releases the GIL: halves of the rigs side by side)
        z_t = robust_z(temp, bounds, window, th.temperature_epsilon_c, pool)
        z_p = robust_z(pres, bounds, window, th.pressure_epsilon_hpa, pool)

    flags = np.empty((7, n), dtype=bool)
    kernels.alert_flags(
        z_t, z_p, temp, pres, th.temperature_z, th.pressure_z, th.temperature_max_c, th.pressure_max_hpa, flags
    )
    t_z, p_z, hot, high, t_alert, p_alert, anomaly = flags
    columns = [
        pa.array(z_t),
        pa.array(z_p),
        pa.array(t_alert),
        pa.array(p_alert),
        pa.array(anomaly),
        _reason(z_t, z_p, hot, high, t_z, p_z, th, np.flatnonzero(anomaly)),
    ]
    out = pa.Table.from_arrays([*clean.columns, *columns], schema=SCORED_SCHEMA)
    if n_ctx and is_context is not None:
        out = out.filter(pa.array(~is_context))
    return out


def _sorted_segments(rig_id: pa.ChunkedArray, ts: np.ndarray) -> np.ndarray | None:
    """Each rig's [start, end) bounds when rows already are in (rig_id, ts) order (as `clean` returns them), else None.

    Neighbouring rig_ids are compared as strings (cheaper than dictionary-encoding them all), the
    few places where the rig changes are checked to ascend, and ts to ascend within each rig.
    """
    n = len(rig_id)
    if n < 2:
        return np.array([0, n], dtype=np.int64)
    change = neighbour_changes(rig_id)
    starts = np.flatnonzero(change) + 1
    if starts.size and not pc.all(pc.greater(rig_id.take(pa.array(starts)), rig_id.take(pa.array(starts - 1)))).as_py():
        return None
    if not kernels.sorted_within_runs(ts, change):
        return None
    return np.concatenate([[0], starts, [n]]).astype(np.int64)
