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

    A loop over segments (rigs), each a contiguous slice handed to scipy's C median filter.
    """
    z = np.zeros(x.size, dtype=np.float64)
    for lo, hi in itertools.pairwise(bounds):
        seg = x[lo:hi]
        if seg.size < 2:
            continue  # one reading is its own median: z = 0
        half = window // 2
        if seg.size >= half + 5:
            padded = np.concatenate([_edge_pad(seg, half), seg, _edge_pad(seg[::-1], half)[::-1]])
            med = median_filter(padded, size=2 * half + 1, mode="nearest")[half:-half]
        else:  # too short for the anchored pad: mirror, with the window fitting the mirrored segment
            med = median_filter(seg, size=min(2 * half + 1, 2 * seg.size - 1), mode="mirror")
        size = min(2 * half + 1, 2 * seg.size - 1)
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
) -> pa.Array:
    """'temperature z=+7.3; pressure > 1100 hPa' for alerted rows, '' elsewhere; text built only for alerted rows."""
    n = z_t.size
    rows = np.flatnonzero(t_alert_z | p_alert_z | hot | high)
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
    text = join_parts(parts) if rows.size else pa.array([], pa.string())
    out = np.full(n, -1, dtype=np.int64)
    out[rows] = np.arange(rows.size)
    # Expand through a dictionary: index -1 (no alert) -> '' at the end of the dictionary.
    dictionary = pa.concat_arrays([text, pa.array([""])])
    out[out < 0] = rows.size
    return pa.DictionaryArray.from_arrays(pa.array(out.astype(np.int32)), dictionary).cast(pa.string())


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
