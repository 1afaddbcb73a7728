"""Min/max-preserving downsampling of a time series for plotting.

A chart 2,000 pixels wide cannot show 38,800 samples, but it must still show the one spike among
them: each of max_points/2 equal-count buckets contributes its minimum and its maximum (in time
order), so every extreme survives and the line looks the same as the full series at that width.
Vectorised: one reduceat per statistic, no sort and no per-bucket Python.
"""

from __future__ import annotations

import numpy as np


def minmax_downsample(t: np.ndarray, v: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, v) with at most `max_points` points keeping each bucket's min and max; NaNs are left out."""
    keep = np.isfinite(v)
    if not keep.all():
        t, v = t[keep], v[keep]
    n = v.size
    if n <= max_points:
        return t, v
    buckets = max(1, max_points // 2)
    starts = (np.arange(buckets, dtype=np.int64) * n) // buckets
    ends = np.append(starts[1:], n)
    # per bucket: the first sample equal to its minimum, the last equal to its maximum (one pass each, no sort)
    lo_val = np.minimum.reduceat(v, starts)
    hi_val = np.maximum.reduceat(v, starts)
    sizes = ends - starts
    at_lo = np.flatnonzero(v == np.repeat(lo_val, sizes))
    at_hi = np.flatnonzero(v == np.repeat(hi_val, sizes))
    lo_idx = at_lo[np.searchsorted(at_lo, starts, side="left")]
    hi_idx = at_hi[np.searchsorted(at_hi, ends, side="left") - 1]
    idx = np.unique(np.concatenate([lo_idx, hi_idx]))  # time order, a bucket of one value counted once
    return t[idx], v[idx]
