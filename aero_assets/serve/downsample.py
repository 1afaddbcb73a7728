"""Min/max-preserving downsampling of a time series for plotting.

A chart 2,000 pixels wide cannot show 38,800 samples, but it must still show the one spike among
them: each of max_points/2 equal-count buckets contributes its minimum and its maximum (in time
order), so every extreme survives and the line looks the same as the full series at that width.
Vectorised: one reduceat per statistic, no per-bucket Python.
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
    # argmin/argmax per bucket: sort keys within each bucket by (bucket, value) once
    bucket_of = np.repeat(np.arange(buckets), ends - starts)
    order = np.lexsort((v, bucket_of))
    lo_idx = order[starts]
    hi_idx = order[ends - 1]
    idx = np.unique(np.concatenate([lo_idx, hi_idx]))  # time order, a bucket of one value counted once
    return t[idx], v[idx]
