"""Quality control of one wind-tunnel run: one row per channel, a status per channel and per run.

Checks (vectorised per channel; the only Python loop is over the 72 channels):
- missing samples and gaps against the channel's nominal rate (leading and trailing gaps too);
- spikes: a sample far from both neighbours while the neighbours agree with each other
  (robust z of the second difference, scaled by its MAD), so steps into or out of a stuck or
  out-of-range stretch are not mistaken for spikes;
- flatline / stuck sensor: the longest run of bit-identical consecutive values;
- out of range against the catalog, ignoring samples already called spikes;
- slow drift over the steady hold, two statistics in units of the noise (`drift_scores`): the linear
  change over the hold, and the change of the best-fitting partial drift (a ramp over part of the
  hold that then holds its offset or is re-zeroed) fitted to block medians, scaled by a robust
  within-block scatter plus the block medians' residual scatter, so the step of a re-zeroed sensor
  does not hide its drift;
- sample-rate jitter and rate error, from the intervals between samples outside gaps;
- non-finite values; duplicated or out-of-order timestamps repaired at landing (reported here).

Failing kinds (the data is wrong): missing channel, non-finite, dropout beyond the limit,
flatline, out of range, drift. Warning kinds (the data is usable, processing repairs it): spikes,
short gaps, jitter, repaired timestamps, a channel unknown to the catalog.
The run fails when a critical channel (force balance, flow) fails or too many channels fail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache

import numpy as np
import pyarrow as pa

from aero_assets.windtunnel.catalog import Catalog
from aero_assets.windtunnel.series import RunSeries, steady_window

PASS, WARN, FAIL = "pass", "warn", "fail"
FAULT_COLUMNS = {  # QC outcome -> simulator fault kind, for scoring against ground truth
    "spike": "spike", "dropout": "dropout", "stuck": "flatline", "out_of_range": "out_of_range", "drift": "drift",
}
FOUND_AS = {"drift_rezero": "drift", "drift_hold": "drift"}  # simulator fault kinds QC reports under another kind


def expected_kind(simulated: str) -> str:
    """The fault kind QC reports for a simulator fault kind (a drift that is re-zeroed is a drift)."""
    return FOUND_AS.get(simulated, simulated)


@dataclass(frozen=True)
class QCThresholds:
    gap_factor: float = 5.0  # an interval longer than this many nominal periods is a gap
    missing_fail_fraction: float = 0.01
    spike_z: float = 12.0
    flat_min_seconds: float = 0.02
    flat_min_samples: int = 8
    out_of_range_min_samples: int = 3
    # Drift (see drift_scores): two statistics, each with a limit z * sqrt(max(1, hold_s / hold)) that
    # rises for a steady hold shorter than hold_s (fewer stretches of the flow's slow unsteadiness in it).
    # Tuned on the simulator (random setups; holds of 3.0, 6.6 and 25.6 s in 5, 10 and 30 s runs):
    # - clean: 1,920 runs (1,200 / 600 / 120) plus the clean channels of 220 faulty runs. Largest linear
    #   statistic 7.93 / 4.73 / 1.90 (limit 8.35 / 5.68 / 5.0), largest shape statistic 7.97 / 6.13 / 3.15
    #   (limit 8.33 / 6.5 / 6.5): no false drift. Spikes, dropouts, flatlines and out-of-range faults
    #   reach 5.3 / 5.5 at most.
    # - faulty (the 220 runs, 30 % of channels faulted, speed channel not drifting): smallest linear
    #   statistic of a drift over the hold 5.22 / 4.84 / 7.78; smallest shape statistic of a re-zeroed
    #   drift 6.98 / 6.44 / 6.81 and of a drift that holds its offset 7.40 / 7.03 / 8.39. Missed: 30 s
    #   none; 10 s 2 of 242 drifts, 1 of 212 re-zeroed, 0 of 221 held; 5 s 49 of 342, 8 of 329, 5 of 343.
    # In a 3 s hold a drift of 8 sigma is within what the unsteadiness itself reaches: no limit separates
    # them there, these keep clean runs free of false drifts and miss the weakest short-hold drifts.
    drift_z: float = 6.5  # shape statistic: a ramp over part of the hold that holds or is re-zeroed
    drift_hold_s: float = 5.0
    drift_linear_z: float = 5.0  # linear statistic: a drift over the whole hold (the only one before)
    drift_linear_hold_s: float = 8.5
    drift_min_window_s: float = 1.0
    jitter_warn: float = 0.05  # std of the sample interval / nominal period
    rate_error_warn: float = 0.01
    max_failed_fraction: float = 0.10
    critical_categories: tuple[str, ...] = ("force_balance", "velocity_flow")

    def drift_limits(self, hold_s: float) -> tuple[float, float]:
        """(linear, shape) limits of the drift statistics for a steady hold of `hold_s` seconds.

        The flow's slow unsteadiness makes chance changes over a hold larger, relative to the
        scatter, as the hold shortens (fewer independent stretches of it: ~ 1/sqrt(hold))."""
        hold = max(hold_s, 1e-9)
        return (self.drift_linear_z * float(np.sqrt(max(1.0, self.drift_linear_hold_s / hold))),
                self.drift_z * float(np.sqrt(max(1.0, self.drift_hold_s / hold))))


@dataclass
class ChannelQC:
    channel: str
    category: str
    in_catalog: bool
    rate_hz: float
    samples: int = 0
    expected_samples: int = 0
    missing_fraction: float = 0.0
    gap_count: int = 0
    max_gap_s: float = 0.0
    dropout: bool = False
    spike_count: int = 0
    spike: bool = False
    flat_max_s: float = 0.0
    stuck: bool = False
    out_of_range_count: int = 0
    out_of_range: bool = False
    drift_score: float = 0.0  # the larger of the linear and shape drift statistics (sigma, see drift_scores)
    drift: bool = False
    jitter: float = 0.0
    rate_error: float = 0.0
    nonfinite_count: int = 0
    duplicate_ts: int = 0
    out_of_order_ts: int = 0
    status: str = PASS
    reasons: list[str] = field(default_factory=list)


@dataclass
class RunQC:
    channels: list[ChannelQC]
    status: str
    reasons: list[str]
    steady_window_s: tuple[float, float]
    steady_window_how: str

    def table(self, run_id: str) -> pa.Table:
        rows = []
        for c in self.channels:
            d = asdict(c)
            d["reasons"] = "; ".join(c.reasons)
            rows.append({"run_id": run_id, **d, "run_status": self.status})
        return pa.Table.from_pylist(rows)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.channels) for s in (PASS, WARN, FAIL)}

    def detected_faults(self) -> set[tuple[str, str]]:
        return {(c.channel, kind) for c in self.channels for col, kind in FAULT_COLUMNS.items() if getattr(c, col)}

    def flags(self, series: RunSeries, channel: str, th: QCThresholds, catalog: Catalog) -> dict[str, np.ndarray]:
        """Sample masks of one channel (for plots): the same spikes and out-of-range samples QC counted."""
        spikes, oor = sample_masks(series.v[channel], th.spike_z, catalog_bounds(catalog, channel))
        return {"spike": spikes, "out_of_range": oor}


def _spike_mask(v: np.ndarray, z: float) -> np.ndarray:
    """Samples far from the mean of their neighbours while the neighbours agree with each other."""
    mask = np.zeros(v.size, dtype=bool)
    if v.size < 5:
        return mask
    stat = v[:-2] + v[2:]
    stat *= -0.5
    stat += v[1:-1]
    np.abs(stat, out=stat)  # |x[i] - (x[i-1] + x[i+1]) / 2|, NaN where a neighbour is NaN
    sample = stat[:: max(1, stat.size // 8192)]  # MAD of ~8k evenly spread values: as good, 10x cheaper
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return mask
    med = np.median(sample)
    scale = max(1.4826 * np.median(np.abs(sample - med)), 1e-9 * (float(np.abs(sample).max()) + 1.0))
    cand = np.flatnonzero(stat > med + z * scale)  # few: the isolation test runs on these only
    if cand.size:
        isolated = np.abs(v[cand + 2] - v[cand]) < stat[cand]  # neighbours agree: a spike, not a step
        mask[cand[isolated] + 1] = True
    return mask


def catalog_bounds(catalog: Catalog, channel: str) -> tuple[float, float] | None:
    """(min, max) of a catalog channel; None for a channel the catalog does not know."""
    if channel not in catalog.frame.index:
        return None
    return float(catalog.frame.at[channel, "min"]), float(catalog.frame.at[channel, "max"])


def sample_masks(v: np.ndarray, spike_z: float, bounds: tuple[float, float] | None,
                 finite: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(spikes, out_of_range) of one channel: what QC counts, plots and processing removes.

    Out-of-range needs catalog bounds; a spike inside a sustained out-of-range stretch is the
    sensor's scatter there, not a spike, and a spike that leaves the range is a spike, not
    out-of-range. Pass `finite` when the caller already has it (one pass less per channel).
    """
    spikes = _spike_mask(v, spike_z)
    if bounds is None:
        return spikes, np.zeros(v.size, dtype=bool)
    finite = np.isfinite(v) if finite is None else finite
    outside = finite & ((v < bounds[0]) | (v > bounds[1]))
    spikes[1:-1] &= ~(outside[:-2] & outside[2:])
    return spikes, outside & ~spikes


def invalid_mask(channel: str, v: np.ndarray, catalog: Catalog, spike_z: float) -> np.ndarray:
    """Samples processing must not use: non-finite, spikes, and out of the catalog range."""
    finite = np.isfinite(v)
    spikes, oor = sample_masks(v, spike_z, catalog_bounds(catalog, channel), finite)
    return ~finite | spikes | oor


def _equal_runs(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of two or more equal consecutive values: v[start:end] are equal."""
    same = np.concatenate([[False], v[1:] == v[:-1], [False]])
    edges = np.flatnonzero(np.diff(same.astype(np.int8)))
    return edges[::2], edges[1::2] + 1


def _longest_equal_run(v: np.ndarray) -> int:
    if v.size < 2:
        return v.size
    starts, ends = _equal_runs(v)
    return int((ends - starts).max()) if starts.size else 1


def _stuck_mask(v: np.ndarray, min_run: float) -> np.ndarray:
    """Samples in a run of at least `min_run` bit-identical consecutive values (a stuck sensor)."""
    mask = np.zeros(v.size, dtype=bool)
    if v.size < 2:
        return mask
    starts, ends = _equal_runs(v)
    long = ends - starts >= min_run
    for a, b in zip(starts[long], ends[long], strict=True):
        mask[a:b] = True  # one slice per stuck stretch: few
    return mask


DRIFT_BLOCKS = 32  # blocks of the steady hold (equal sample counts)
DRIFT_MIN_RAMP = 4  # blocks: the shortest ramp of a drift shape (an eighth of the hold)


@cache
def drift_shapes(k: int, min_ramp: int) -> np.ndarray:
    """Drift shapes over k blocks, one per row, centred: a ramp from block edge i to edge j (linear
    in the block index) that then either holds its end value to the end of the hold or returns to
    zero (the sensor is re-zeroed). A ramp from edge 0 to edge k is a drift over the whole hold."""
    c = np.arange(k) + 0.5
    rows = []
    for i in range(k + 1 - min_ramp):
        for j in range(i + min_ramp, k + 1):
            ramp = np.clip((c - i) / (j - i), 0.0, 1.0)
            rows.append(ramp)
            if j < k:
                rows.append(np.where(c < j, ramp, 0.0))
    shapes = np.unique(np.array(rows), axis=0)
    shapes -= shapes.mean(axis=1, keepdims=True)
    shapes = shapes[(shapes * shapes).sum(axis=1) > 1e-12]
    shapes.flags.writeable = False  # cached: shared by every call
    return shapes


def drift_scores(t: np.ndarray, v: np.ndarray, window: tuple[float, float], keep: np.ndarray, min_window: float,
                 blocks: int = DRIFT_BLOCKS, min_ramp: int = DRIFT_MIN_RAMP) -> tuple[float, float]:
    """(linear, shape) drift statistics of one channel over the steady hold, in noise units.

    linear: the least-squares change over the hold / the residual scatter (the sample-level line
    fit; a drift over the whole hold). shape: the hold is cut into `blocks` blocks of equal sample
    counts; the best drift shape (`drift_shapes`: a ramp over part of the hold that holds or is
    re-zeroed) is fitted to the block medians by least squares, and its change (max - min of the
    fitted curve) is divided by sqrt(w^2 + r^2): w the robust within-block scatter (1.4826 * MAD of
    the samples around their block median), r the RMS of the block medians around the fitted curve
    (the slow unsteadiness, which moves whole blocks and so is missing from w). A step of the drift
    (re-zeroing) is part of the fitted shape, so it does not inflate the noise scale as it inflates
    the line fit's residual. Not the MAD of first differences: the flow's unsteadiness (correlated
    over ~0.3 s) barely moves between samples at 0.1-1 kHz, so differences see the white sensor noise
    only: a median 0.2-0.5 of the scatter on load, force and pressure channels. Medians keep a
    left-over spike from moving a block; stuck samples are excluded by the caller.
    """
    a, b = window
    sel = keep & (t >= a) & (t <= b) & np.isfinite(v)
    n = int(sel.sum())
    if b - a < min_window or n < 20:
        return 0.0, 0.0
    x, y = t[sel], v[sel]
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx = dx @ dx
    linear = 0.0
    if sxx > 0:
        slope = (dx @ dy) / sxx  # least squares, closed form (polyfit's lstsq cost 3x more)
        var = (dy @ dy - slope * slope * sxx) / max(1, y.size - 2)
        if var > 0:
            linear = float(abs(slope) * (b - a) / np.sqrt(var))
    k = min(blocks, n // 4)
    if k < 2 * min_ramp + 4:
        return linear, 0.0
    grid = dy[: n - n % k].reshape(k, n // k)  # equal-count blocks; the last n % k samples are left out
    med = np.median(grid, axis=1)
    within = 1.4826 * float(np.median(np.abs(grid - med[:, None])))
    return linear, shape_drift(med, within, min_ramp)


def shape_drift(block_medians: np.ndarray, within: float, min_ramp: int = DRIFT_MIN_RAMP) -> float:
    """The shape statistic of `drift_scores` from the block medians and the within-block scatter.

    Shared with the pandas baseline of `aero bench windtunnel`, which computes its inputs its own way.
    """
    k = block_medians.size
    shapes = drift_shapes(k, min_ramp)
    mc = block_medians - block_medians.mean()
    proj = shapes @ mc
    norm = (shapes * shapes).sum(axis=1)
    best = int(np.argmax(proj * proj / norm))
    fitted = proj[best] / norm[best] * shapes[best]
    resid = mc - fitted
    scale = np.sqrt(within * within + (resid @ resid) / (k - 3))
    return float(np.ptp(fitted) / scale) if scale > 0 else 0.0


def check_channel(name: str, t_ns: np.ndarray, v: np.ndarray, series: RunSeries, catalog: Catalog,
                  th: QCThresholds, window: tuple[float, float]) -> ChannelQC:
    known = name in catalog.frame.index
    row = catalog.frame.loc[name] if known else None
    n = v.size
    dt = np.diff(t_ns) / 1e9
    median_dt = float(np.median(dt)) if dt.size else 0.0
    rate = float(row["rate_hz"]) if known else (1.0 / median_dt if median_dt > 0 else 0.0)
    qc = ChannelQC(channel=name, category=str(row["category"]) if known else "unknown", in_catalog=known,
                   rate_hz=rate, samples=int(n))
    if not known:
        qc.reasons.append("channel not in the catalog: no range or nominal rate to check against")
    period = 1.0 / rate if rate > 0 else 0.0

    # missing samples and gaps (including before the first and after the last sample)
    if rate > 0:
        qc.expected_samples = series.grid_size(rate)
        qc.missing_fraction = float(max(0.0, 1.0 - n / qc.expected_samples))
        edges = np.concatenate([[(t_ns[0] - series.start_ns) / 1e9 + period], dt,
                                [(series.end_ns - t_ns[-1]) / 1e9 + period]])
        gaps = edges > th.gap_factor * period
        qc.gap_count = int(gaps.sum())
        qc.max_gap_s = float(edges[gaps].max()) if gaps.any() else 0.0
        qc.dropout = qc.missing_fraction > th.missing_fail_fraction and qc.gap_count > 0
        inner = dt[dt <= th.gap_factor * period]
        if inner.size > 10:
            qc.jitter = float(inner.std() / period)
            qc.rate_error = float(abs(1.0 / inner.mean() - rate) / rate)

    finite = np.isfinite(v)
    qc.nonfinite_count = int((~finite).sum())
    spikes, oor = sample_masks(v, th.spike_z, (float(row["min"]), float(row["max"])) if known else None, finite)
    qc.spike_count = int(spikes.sum())
    qc.spike = qc.spike_count > 0
    flat = _longest_equal_run(v[finite])
    qc.flat_max_s = float(flat * period) if period else 0.0
    flat_min = max(th.flat_min_samples, th.flat_min_seconds * rate)
    qc.stuck = flat >= flat_min
    qc.out_of_range_count = int(oor.sum())
    qc.out_of_range = known and qc.out_of_range_count >= th.out_of_range_min_samples
    keep = ~spikes & ~oor
    if qc.stuck:  # a stuck stretch is not a measurement of the drift either
        keep &= ~_stuck_mask(v, flat_min)
    linear, shape = drift_scores((t_ns - series.start_ns) / 1e9, v, window, keep, th.drift_min_window_s)
    hold = window[1] - window[0]
    linear_limit, shape_limit = th.drift_limits(hold)
    qc.drift_score = max(linear, shape)
    qc.drift = linear > linear_limit or shape > shape_limit

    fails = []
    if qc.nonfinite_count:
        fails.append(f"{qc.nonfinite_count} NaN/inf values")
    if qc.dropout:
        fails.append(f"{qc.missing_fraction:.1%} samples missing, longest gap {qc.max_gap_s:.3f}s")
    if qc.stuck:
        fails.append(f"stuck at one value for {qc.flat_max_s:.3f}s")
    if qc.out_of_range:
        fails.append(f"{qc.out_of_range_count} samples outside [{row['min']}, {row['max']}] {row['unit']}")
    if qc.drift:
        fails.append(f"drift over the {hold:.1f}s steady hold: {linear:.1f} sigma along a line (limit "
                     f"{linear_limit:.1f}), {shape:.1f} sigma along a partial or re-zeroed drift "
                     f"(limit {shape_limit:.1f})")
    warns = []
    if qc.spike:
        warns.append(f"{qc.spike_count} spikes")
    if qc.gap_count and not qc.dropout:
        warns.append(f"{qc.gap_count} short gaps")
    if qc.jitter > th.jitter_warn or qc.rate_error > th.rate_error_warn:
        warns.append(f"sample-rate jitter {qc.jitter:.1%}, rate error {qc.rate_error:.1%}")
    qc.reasons = fails + warns + qc.reasons
    qc.status = FAIL if fails else WARN if (warns or not known) else PASS
    return qc


def run_qc(series: RunSeries, catalog: Catalog, th: QCThresholds | None = None,
           repaired: dict[str, dict[str, int]] | None = None) -> RunQC:
    """QC every channel present, plus a failing row for each catalog channel that is missing."""
    th = th or QCThresholds()
    if series.samples == 0:
        rows = [ChannelQC(c, str(catalog.frame.at[c, "category"]), True, float(catalog.rate(c)),
                          status=FAIL, reasons=["no samples: the run is empty"]) for c in catalog.channels]
        return RunQC(rows, FAIL, ["the run has no samples"], (0.0, 0.0), "empty run")
    fr = catalog.frame
    lo = hi = None
    if "FLOW_V" in fr.index:
        lo, hi = float(fr.at["FLOW_V", "min"]), float(fr.at["FLOW_V", "max"])
    a, b, how = steady_window(series, lo, hi)
    rows = [check_channel(ch, series.t[ch], series.v[ch], series, catalog, th, (a, b)) for ch in series.channels]
    for qc in rows:
        rep = (repaired or {}).get(qc.channel, {})
        qc.duplicate_ts, qc.out_of_order_ts = int(rep.get("duplicates", 0)), int(rep.get("out_of_order", 0))
        if qc.duplicate_ts or qc.out_of_order_ts:
            qc.reasons.append(f"timestamps repaired at landing: {qc.duplicate_ts} duplicated, "
                              f"{qc.out_of_order_ts} out of order")
            qc.status = FAIL if qc.status == FAIL else WARN
    present = set(series.channels)
    for ch in catalog.channels:
        if ch not in present:
            rows.append(ChannelQC(ch, str(fr.at[ch, "category"]), True, float(catalog.rate(ch)),
                                  expected_samples=series.grid_size(catalog.rate(ch)),
                                  missing_fraction=1.0, status=FAIL, reasons=["channel missing from the run"]))
    rows.sort(key=lambda r: (r.category, r.channel))

    failed = [r for r in rows if r.status == FAIL]
    critical = [r.channel for r in failed if r.category in th.critical_categories]
    reasons = []
    if critical:
        reasons.append(f"critical channels failed: {', '.join(critical)}")
    if len(failed) > th.max_failed_fraction * len(rows):
        reasons.append(f"{len(failed)} of {len(rows)} channels failed (limit {th.max_failed_fraction:.0%})")
    if reasons:
        status = FAIL
    elif failed or any(r.status == WARN for r in rows):
        status = WARN
        if failed:
            reasons.append(f"{len(failed)} non-critical channels failed: {', '.join(r.channel for r in failed)}")
    else:
        status = PASS
    return RunQC(rows, status, reasons, (a, b), how)


def score(detected: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float]:
    """Precision and recall at the (channel, fault kind) level."""
    tp = len(detected & truth)
    return {
        "tp": tp, "fp": len(detected - truth), "fn": len(truth - detected),
        "precision": tp / len(detected) if detected else 1.0,
        "recall": tp / len(truth) if truth else 1.0,
    }
