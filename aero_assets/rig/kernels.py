"""Compiled kernels for the rig core's per-row work: ordering, duplicate search, gathers, rolling medians.

Why compiled (Numba) rather than NumPy: the NumPy versions of these steps made some thirty passes
over 10 M rows, each allocating a fresh 10-80 MB temporary that the kernel had to fault in and
zero, so half the time was system time; and a rolling median is not a ufunc at all. Each kernel
here makes one pass per output with no temporaries beyond its output, and releases the GIL
(`nogil`), so callers run independent columns or rigs on threads. No OpenMP (`parallel=True`)
on purpose: GNU OpenMP aborts a process that forks after using it, and Dagster's workers fork.

The z-scores are exact: medians pick values and the arithmetic is the same IEEE operations in the
same order as the SciPy reference (no fastmath); the tests compare them bit for bit (but for the
sign of a zero where a window holds both -0.0 and 0.0). KPI means add a run's readings in order,
so they may differ from NumPy's pairwise sums in the last digit.
`cache=True` keeps the compiled code next to this file, so only the first process compiles.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@nb.njit(**_JIT)
def _window_median(p: np.ndarray, w: int, out: np.ndarray) -> None:
    """out[i] = median(p[i : i + w]) for every full window (w odd), by a sorted sliding window.

    Each step removes the value leaving the window and inserts the one entering, shifting the
    values between their places: O(w) per step and no allocation, about 10 ns for w = 11.
    """
    buf = np.sort(p[:w].copy())
    mid = w // 2
    out[0] = buf[mid]
    for i in range(1, p.size - w + 1):
        old = p[i - 1]
        new = p[i + w - 1]
        lo, hi = 0, w - 1  # binary search for a slot holding `old` (any equal one will do)
        while lo < hi:
            m = (lo + hi) // 2
            if buf[m] < old:
                lo = m + 1
            else:
                hi = m
        j = lo
        if new >= old:
            while j + 1 < w and buf[j + 1] < new:
                buf[j] = buf[j + 1]
                j += 1
        else:
            while j > 0 and buf[j - 1] > new:
                buf[j] = buf[j - 1]
                j -= 1
        buf[j] = new
        out[i] = buf[mid]


@nb.njit(**_JIT)
def _sort5(v0: float, v1: float, v2: float, v3: float, v4: float):
    """Five values in ascending order, by an optimal 9-comparator network (branch-free min/max)."""
    v0, v1 = min(v0, v1), max(v0, v1)
    v3, v4 = min(v3, v4), max(v3, v4)
    v2, v4 = min(v2, v4), max(v2, v4)
    v2, v3 = min(v2, v3), max(v2, v3)
    v0, v3 = min(v0, v3), max(v0, v3)
    v0, v2 = min(v0, v2), max(v0, v2)
    v1, v4 = min(v1, v4), max(v1, v4)
    v1, v3 = min(v1, v3), max(v1, v3)
    v1, v2 = min(v1, v2), max(v1, v2)
    return v0, v1, v2, v3, v4


@nb.njit(**_JIT)
def median11(p: np.ndarray, out: np.ndarray) -> None:
    """out[j] = median(p[j : j + 11]) for every full window, exactly, with no branch on the data.

    Windows 2q and 2q + 1 share the ten values p[2q + 1 .. 2q + 10]; with c4 <= c5 their 5th and
    6th smallest, median(window 2q) = clip(p[2q], c4, c5) and median(window 2q + 1) =
    clip(p[2q + 11], c4, c5). The shared ten are two fives (odd and even offsets), each sorted by
    a network; the k-th smallest of two sorted runs a, b is min over i of max(a[i - 1], b[k - i - 1]).
    About 30 min/max per pair of windows: several times faster than a sorted sliding window, whose
    branches the data decide.
    """
    n_out = p.size - 10
    for j in range(0, n_out, 2):
        a0, a1, a2, a3, a4 = _sort5(p[j + 1], p[j + 3], p[j + 5], p[j + 7], p[j + 9])
        b0, b1, b2, b3, b4 = _sort5(p[j + 2], p[j + 4], p[j + 6], p[j + 8], p[j + 10])
        c4 = min(b4, a4)
        c5 = max(a0, b4)
        c4 = min(c4, max(a0, b3))
        c5 = min(c5, max(a1, b3))
        c4 = min(c4, max(a1, b2))
        c5 = min(c5, max(a2, b2))
        c4 = min(c4, max(a2, b1))
        c5 = min(c5, max(a3, b1))
        c4 = min(c4, max(a3, b0))
        c5 = min(c5, max(a4, b0))
        out[j] = max(c4, min(p[j], c5))
        if j + 1 < n_out:
            out[j + 1] = max(c4, min(p[j + 11], c5))


@nb.njit(**_JIT)
def _median_full(p: np.ndarray, w: int, out: np.ndarray) -> None:
    if w == 11:
        median11(p, out)
    else:
        _window_median(p, w, out)


@nb.njit(**_JIT)
def _mirror_median(seg: np.ndarray, half: int, out: np.ndarray, scratch: np.ndarray) -> None:
    """SciPy's median_filter(seg, size=2 * half + 1, mode="mirror") (d c b | a b c d | c b a); half < seg.size."""
    m = seg.size
    p = scratch[: m + 2 * half]
    for k in range(half):
        p[k] = seg[half - k]
        p[half + m + k] = seg[m - 2 - k]
    p[half : half + m] = seg
    _median_full(p, 2 * half + 1, out)


@nb.njit(**_JIT)
def _median5(v: np.ndarray) -> float:
    return np.sort(v.copy())[2]


@nb.njit(**_JIT)
def robust_z_segments(
    x: np.ndarray,
    bounds: np.ndarray,
    half: int,
    epsilon: float,
    mad_to_sigma: float,
    z: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """Rolling robust z of `x` into `z`, within each segment [bounds[i], bounds[i + 1]) (one rig each).

    Only the segments `bounds` names are written, so threads can share one output, each with its
    own run of segments and its own `scratch` (3 x (longest segment + 2 * half) floats). Outputs
    and scratch come from NumPy on purpose: NumPy asks the kernel for huge pages, Numba's own
    allocator does not, and faulting in 4 KiB pages cost more than the work.

    The same rules as `anomalies.robust_z_reference`: the median over the point-reflected edge pad
    (anchor: the median of the five readings at that end) when the segment holds at least
    half + 5 readings, else over a mirror with the window shrunk to fit; the MAD over a mirror.
    x must hold no NaN or inf (the caller falls back to the reference then).
    """
    for s in range(bounds.size - 1):
        lo, hi = bounds[s], bounds[s + 1]
        m = hi - lo
        if m < 2:
            z[lo:hi] = 0.0  # one reading is its own median: z = 0
            continue
        seg = x[lo:hi]
        width = m + 2 * half
        med = scratch[width : width + m]
        small = min(half, m - 1)
        if m >= half + 5:
            p = scratch[:width]
            a0 = 2.0 * _median5(seg[:5])
            a1 = 2.0 * _median5(seg[m - 5 :])
            for k in range(half):
                p[k] = a0 - seg[4 + half - k]
                p[half + m + k] = a1 - seg[m - 6 - k]
            p[half : half + m] = seg
            _median_full(p, 2 * half + 1, med)
        else:
            _mirror_median(seg, small, med, scratch)
        dev = z[lo:hi]  # (z is written last: it holds the deviations meanwhile)
        absdev = scratch[2 * width : 2 * width + m]
        for k in range(m):
            dev[k] = seg[k] - med[k]
            absdev[k] = abs(dev[k])
        mad = med  # (the median is no longer needed)
        _mirror_median(absdev, small, mad, scratch)
        for k in range(m):
            dev[k] = dev[k] / (mad_to_sigma * mad[k] + epsilon)


@nb.njit(**_JIT)
def order_rows(
    codes: np.ndarray,
    ts: np.ndarray,
    keep: np.ndarray,
    c_min: int,
    n_codes: int,
    dedup: bool,
    order: np.ndarray,
    rig_sorted: np.ndarray,
    ts_sorted: np.ndarray,
):
    """(kept, dup_rows, dup_first): rows where `keep`, by (code, ts), ties in landing order, into the
    first `kept` places of order, rig_sorted and ts_sorted (int64, int32, int64; len(codes) each).

    A counting sort by rig code (codes are c_min .. c_min + n_codes - 1 where `keep`) puts each rig's rows in
    landing order; landed data is nearly in time order per rig, so within a rig only the rows
    below the running maximum (late resends) are taken out, sorted stably and merged back after
    the equal keys before them: the stable sort by (code, ts), in O(n) for the usual input and
    O(n log n) at worst (a rig with many late rows is merge-sorted whole).
    With `dedup`, rows repeating an earlier row's (code, ts) are left out of `order` and listed in `dup_rows`,
    with `dup_first` the row each repeats (the first of its run, in landing order): row numbers.
    """
    n = codes.size
    starts = np.zeros(n_codes + 1, dtype=np.int64)
    for i in range(n):
        if keep[i]:
            starts[codes[i] - c_min + 1] += 1
    for c in range(n_codes):
        starts[c + 1] += starts[c]
    total = starts[n_codes]
    pos = starts[:n_codes].copy()
    for i in range(n):
        if keep[i]:
            c = codes[i] - c_min
            order[pos[c]] = i
            pos[c] += 1
    for c in range(n_codes):
        lo, hi = starts[c], starts[c + 1]
        rig_sorted[lo:hi] = c + c_min
        late = 0
        run_max = np.iinfo(np.int64).min
        for k in range(lo, hi):
            t = ts[order[k]]
            ts_sorted[k] = t
            if t < run_max:
                late += 1
            else:
                run_max = t
        if late:
            _fix_late(order, ts_sorted, lo, hi, late)
    n_dup = 0
    for k in range(1, total if dedup else 0):
        if rig_sorted[k] == rig_sorted[k - 1] and ts_sorted[k] == ts_sorted[k - 1]:
            n_dup += 1
    dup_rows = np.empty(n_dup, dtype=np.int64)
    dup_first = np.empty(n_dup, dtype=np.int64)
    if n_dup:  # compact in place: a duplicate's first is the last kept row (equal keys are adjacent)
        w = 0
        d = 0
        for k in range(total):
            if w > 0 and rig_sorted[k] == rig_sorted[w - 1] and ts_sorted[k] == ts_sorted[w - 1]:
                dup_rows[d] = order[k]
                dup_first[d] = order[w - 1]
                d += 1
            else:
                order[w] = order[k]
                rig_sorted[w] = rig_sorted[k]
                ts_sorted[w] = ts_sorted[k]
                w += 1
        total = w
    return total, dup_rows, dup_first


@nb.njit(**_JIT)
def _fix_late(order: np.ndarray, ts_sorted: np.ndarray, lo: int, hi: int, late: int) -> None:
    """Sort order[lo:hi] (and ts_sorted with it) stably by ts, given `late` rows below the running maximum."""
    m = hi - lo
    seg_order = order[lo:hi].copy()
    seg_ts = ts_sorted[lo:hi].copy()
    if late * 8 > m:
        perm = np.argsort(seg_ts, kind="mergesort")
        for k in range(m):
            order[lo + k] = seg_order[perm[k]]
            ts_sorted[lo + k] = seg_ts[perm[k]]
        return
    on_time = np.empty(m - late, dtype=np.int64)
    behind = np.empty(late, dtype=np.int64)
    a = b = 0
    run_max = np.iinfo(np.int64).min
    for k in range(m):
        if seg_ts[k] < run_max:
            behind[b] = k
            b += 1
        else:
            run_max = seg_ts[k]
            on_time[a] = k
            a += 1
    behind = behind[np.argsort(seg_ts[behind], kind="mergesort")]
    i = j = 0
    for k in range(m):  # stable merge; on a tie the on-time row (earlier in landing order) goes first
        if j < late and (i >= on_time.size or seg_ts[behind[j]] < seg_ts[on_time[i]]):
            src = behind[j]
            j += 1
        else:
            src = on_time[i]
            i += 1
        order[lo + k] = seg_order[src]
        ts_sorted[lo + k] = seg_ts[src]


@nb.njit(**_JIT)
def gather(x: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """out[:] = x[idx] (the same as np.take into a NumPy-allocated `out`)."""
    for k in range(idx.size):
        out[k] = x[idx[k]]


@nb.njit(**_JIT)
def dates_of(ts: np.ndarray, d_lo: int, dates: np.ndarray, ns_per_day: int, out: np.ndarray) -> None:
    """The 10-byte UTC dates of `ts` into `out`, back to back (dates[d] is day d_lo + d): a string data buffer."""
    for k in range(ts.size):
        d = ts[k] // ns_per_day - d_lo
        for b in range(10):
            out[10 * k + b] = dates[d, b]


@nb.njit(**_JIT)
def days_match(
    day_offsets: np.ndarray,
    day_data: np.ndarray,
    ts: np.ndarray,
    is_clean: np.ndarray,
    d_lo: int,
    dates: np.ndarray,
    ns_per_day: int,
) -> bool:
    """Whether every clean row's landed `day` is, byte for byte, the UTC date of its ts (dates: n x 10 bytes)."""
    for i in range(ts.size):
        if not is_clean[i]:
            continue
        s = day_offsets[i]
        if day_offsets[i + 1] - s != 10:
            return False
        d = ts[i] // ns_per_day - d_lo
        if d < 0 or d >= dates.shape[0]:
            return False
        for b in range(10):
            if day_data[s + b] != dates[d, b]:
                return False
    return True


@nb.njit(**_JIT)
def sorted_within_runs(ts: np.ndarray, change: np.ndarray) -> bool:
    """Whether ts never decreases between neighbours of one run (change[i]: row i + 1 starts a new run)."""
    for i in range(ts.size - 1):  # noqa: SIM110 (a compiled loop: no generators in Numba)
        if not change[i] and ts[i + 1] < ts[i]:
            return False
    return True


@nb.njit(**_JIT)
def alert_flags(
    z_t: np.ndarray,
    z_p: np.ndarray,
    temp: np.ndarray,
    pres: np.ndarray,
    t_z_limit: float,
    p_z_limit: float,
    t_max: float,
    p_max: float,
    out: np.ndarray,
) -> None:
    """out[0..6] = t_z, p_z, hot, high, t_alert, p_alert, anomaly per row: one pass, not eleven temporaries."""
    t_z, p_z, hot, high, t_alert, p_alert, anomaly = out[0], out[1], out[2], out[3], out[4], out[5], out[6]
    for i in range(z_t.size):
        t_z[i] = abs(z_t[i]) > t_z_limit
        p_z[i] = abs(z_p[i]) > p_z_limit
        hot[i] = temp[i] > t_max
        high[i] = pres[i] > p_max
        t_alert[i] = t_z[i] or hot[i]
        p_alert[i] = p_z[i] or high[i]
        anomaly[i] = t_alert[i] or p_alert[i]


@nb.njit(**_JIT)
def kpi_runs(
    starts: np.ndarray,
    ts: np.ndarray,
    temp: np.ndarray,
    pres: np.ndarray,
    uptime: np.ndarray,
    alert: np.ndarray,
):
    """Per run [starts[r], starts[r + 1]): readings, mean temperature, min/max pressure, alerts,
    uptime gained (the sum of the counter's positive steps), first/last ts."""
    n = ts.size
    runs = starts.size
    count = np.empty(runs, dtype=np.int64)
    mean_t = np.empty(runs)
    min_p = np.empty(runs)
    max_p = np.empty(runs)
    alerts = np.empty(runs, dtype=np.int64)
    gained = np.empty(runs)
    first = np.empty(runs, dtype=np.int64)
    last = np.empty(runs, dtype=np.int64)
    for r in range(runs):
        lo = starts[r]
        hi = starts[r + 1] if r + 1 < runs else n
        s_t, lo_p, hi_p, a, g = 0.0, pres[lo], pres[lo], 0, 0.0
        t_lo, t_hi = ts[lo], ts[lo]
        for i in range(lo, hi):
            s_t += temp[i]
            lo_p = min(lo_p, pres[i])
            hi_p = max(hi_p, pres[i])
            a += alert[i]
            if i > lo and uptime[i] > uptime[i - 1]:
                g += uptime[i] - uptime[i - 1]
            t_lo = min(t_lo, ts[i])
            t_hi = max(t_hi, ts[i])
        count[r] = hi - lo
        mean_t[r] = s_t / (hi - lo)
        min_p[r], max_p[r], alerts[r], gained[r], first[r], last[r] = lo_p, hi_p, a, g, t_lo, t_hi
    return count, mean_t, min_p, max_p, alerts, gained, first, last
