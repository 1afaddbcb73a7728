"""Drift detection: has the weather the model sees changed (inputs), or have the forecasts gone wrong (errors)?

Three statistics, because each misses what another catches:

* input drift compares the distribution of recent temperatures with the training reference:
  PSI (population stability index, on quantile bins of the reference) and the two-sample KS test.
  They fire on a heatwave before any forecast has been scored, but also on an ordinary change of
  season, so they are reported, never a verdict on their own;
* error drift, the verdict: a two-sided CUSUM on the *innovations* of a seasonal forecaster (value
  minus the same hour of the previous days, `baselines.seasonal_innovations`). A heatwave is a
  lasting level shift, so it shows as a run of innovations far above zero (a cold snap, far below);
  ordinary weather noise averages out. The detector does not depend on the champion, so it works
  the same whether the champion tracks the new regime hour by hour or not;
* champion degradation: a Page-Hinkley test on the champion's one-step |errors| in units of its
  validation RMSE. Reported and plotted, but not a verdict: a model trained in winter degrades in
  spring by as much as a heatwave's variance makes it, so it cannot tell the two apart (the weekly
  routine retrain deals with slow degradation).

Both sequential statistics are cumulative sums, so they are computed with cumsum / minimum.accumulate
instead of a Python loop: m_t = sum_{i<=t}(x_i - reference_i - allowance), S_t = m_t - min_{i<=t} m_i,
alarm at the first S_t > threshold. Thresholds come from `aero_assets.forecast.calibration`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PSI_EPSILON = 1e-4  # stands in for an empty bin's share, so ln(current/reference) stays finite


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift report says drifted.

    psi > 0.2 is the usual "significant shift" rule of thumb. KS p < 0.01 alone is too eager on
    thousands of autocorrelated hourly values (the effective sample is much smaller than n), so a
    KS reason also needs the statistic (the largest CDF gap) above `ks_statistic`. The CUSUM
    allowance (degC of innovation tolerated as weather, per hour) and threshold (degC*h accumulated
    before an alarm) were chosen with `python -m aero_assets.forecast.calibration --seeds 30`: no alarm
    on 30 calm stations over four weeks, 26 of 30 heatwaves flagged within 24 h of the onset (median
    15 h, at most 98 h: the smallest shifts on the noisiest stations). A 7-day reference beat 3 days
    (25 of 30, one heatwave seen only when it ended: the 3-day reference fills with heatwave days
    within three days, and the innovations fade); an allowance of 3.0 flags 27 of 30 within a day but
    raised 3 false alarms - warm spells that ordinary noise makes.
    """

    psi: float = 0.2
    psi_bins: int = 10
    ks_p: float = 0.01
    ks_statistic: float = 0.1
    season_days: int = 7  # the innovation's reference: mean of the same hour over this many previous days
    cusum_k: float = 3.5
    cusum_lambda: float = 40.0
    # champion degradation (reported, not a verdict): Page-Hinkley on |error| / validation RMSE
    ph_model_delta: float = 0.25
    ph_model_lambda: float = 10.0


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `current` against `reference` (NaN ignored).

    Bin edges are the reference's quantiles (so every bin holds ~1/bins of the reference and the
    index weighs the whole range, not just the dense middle); the outer bins are open-ended so
    current values beyond the reference's range count. Empty bins get PSI_EPSILON.
    """
    ref = _finite(reference)
    cur = _finite(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / ref.size
    cur_share = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1) / cur.size
    ref_share = np.maximum(ref_share, PSI_EPSILON)
    cur_share = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value), NaN ignored."""
    ref = _finite(reference)
    cur = _finite(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan"), float("nan")
    from scipy import stats  # imported here: loading the code location must not pay for scipy.stats

    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def page_hinkley_statistic(errors: np.ndarray, delta: float) -> np.ndarray:
    """PH_t for every t (same length as `errors`): the cumulative excess over the running mean, for a plot.

    NaN errors (hours without a forecast) contribute nothing and do not move the running mean.
    """
    x = np.asarray(errors, dtype=float).ravel()
    ok = np.isfinite(x)
    filled = np.where(ok, x, 0.0)
    count = np.maximum(np.cumsum(ok), 1)
    running_mean = np.cumsum(filled) / count
    m = np.cumsum(np.where(ok, filled - running_mean - delta, 0.0))
    return m - np.minimum.accumulate(np.minimum(m, 0.0))


def page_hinkley(errors: np.ndarray, delta: float, threshold: float) -> int | None:
    """Index of the first error at which PH_t > threshold (an increase of the mean), or None."""
    above = np.flatnonzero(page_hinkley_statistic(errors, delta) > threshold)
    return int(above[0]) if above.size else None


def page_hinkley_onset(errors: np.ndarray, delta: float, alarm_index: int) -> int:
    """Where the change behind an alarm began: the last point before the alarm at which m_t was at its minimum.

    PH_t = m_t - min m_i is zero exactly where the cumulative sum touches its running minimum; after
    the last such point every step added to the excess, so that is the classic change-point estimate
    (the alarm itself comes later, once the excess passed lambda).
    """
    statistic = page_hinkley_statistic(errors, delta)[: alarm_index + 1]
    at_minimum = np.flatnonzero(statistic <= 0.0)
    return int(at_minimum[-1] + 1) if at_minimum.size else 0


def _excess_statistic(increments: np.ndarray) -> np.ndarray:
    m = np.cumsum(increments)
    return m - np.minimum.accumulate(np.minimum(m, 0.0))


def cusum_statistics(innovations: np.ndarray, allowance: float) -> tuple[np.ndarray, np.ndarray]:
    """(S_up, S_down) for every t: the two one-sided CUSUMs of a zero-mean stream; NaN contributes nothing."""
    x = np.asarray(innovations, dtype=float).ravel()
    x = np.where(np.isfinite(x), x, np.nan)
    up = np.where(np.isfinite(x), x - allowance, 0.0)
    down = np.where(np.isfinite(x), -x - allowance, 0.0)
    return _excess_statistic(up), _excess_statistic(down)


def cusum(innovations: np.ndarray, allowance: float, threshold: float) -> tuple[int | None, int | None, str]:
    """(alarm index, onset index, "up"/"down") of the first side to exceed `threshold`, or (None, None, "").

    The onset is the classic change-point estimate: the last point before the alarm at which that
    side's statistic was zero (after it, every step added to the excess).
    """
    best = (None, None, "")
    for side, statistic in zip(("up", "down"), cusum_statistics(innovations, allowance), strict=True):
        above = np.flatnonzero(statistic > threshold)
        if above.size and (best[0] is None or above[0] < best[0]):
            alarm = int(above[0])
            zero = np.flatnonzero(statistic[: alarm + 1] <= 0.0)
            best = (alarm, int(zero[-1] + 1) if zero.size else 0, side)
    return best


def drift_report(
    reference_temps: np.ndarray,
    recent_temps: np.ndarray,
    innovations: np.ndarray | None = None,
    thresholds: DriftThresholds | None = None,
    model_errors_z: np.ndarray | None = None,
) -> dict:
    """Input drift (PSI, KS), the error-drift verdict (CUSUM on seasonal innovations) and champion degradation.

    `innovations` are a seasonal forecaster's signed errors in time order (`baselines.seasonal_innovations`);
    `model_errors_z` the champion's one-step errors divided by its validation RMSE. Returns psi, ks, ks_p,
    alarm_index / onset_index / direction of the CUSUM (indices into `innovations`), model_alarm_index /
    model_onset_index of the Page-Hinkley test, drifted and its reasons, the input and degradation
    reasons (reported, not deciding) and the thresholds used, so a run's metadata explains itself.
    """
    t = thresholds or DriftThresholds()
    psi_value = psi(reference_temps, recent_temps, bins=t.psi_bins)
    ks_value, ks_p = ks(reference_temps, recent_temps)
    alarm = onset = model_alarm = model_onset = None
    direction = ""
    if innovations is not None and np.size(innovations):
        alarm, onset, direction = cusum(innovations, t.cusum_k, t.cusum_lambda)
    if model_errors_z is not None and np.size(model_errors_z):
        magnitude = np.abs(np.asarray(model_errors_z, dtype=float))
        model_alarm = page_hinkley(magnitude, t.ph_model_delta, t.ph_model_lambda)
        model_onset = None if model_alarm is None else page_hinkley_onset(magnitude, t.ph_model_delta, model_alarm)

    input_reasons: list[str] = []
    if np.isfinite(psi_value) and psi_value > t.psi:
        input_reasons.append(f"PSI {psi_value:.3f} > {t.psi}")
    if np.isfinite(ks_p) and ks_p < t.ks_p and ks_value > t.ks_statistic:
        input_reasons.append(f"KS p {ks_p:.2g} < {t.ks_p} (statistic {ks_value:.3f} > {t.ks_statistic})")
    reasons: list[str] = []
    if alarm is not None:
        reasons.append(f"CUSUM alarm ({'warmer' if direction == 'up' else 'colder'} than the last "
                       f"{t.season_days} days) at hour #{alarm}, change from #{onset} "
                       f"(allowance {t.cusum_k} degC, threshold {t.cusum_lambda} degC*h)")
    degradation: list[str] = []
    if model_alarm is not None:
        degradation.append(f"champion errors rose: Page-Hinkley alarm at #{model_alarm}, change from #{model_onset} "
                           f"(delta {t.ph_model_delta}, lambda {t.ph_model_lambda}, in validation RMSEs)")
    return {
        "psi": psi_value,
        "ks": ks_value,
        "ks_p": ks_p,
        "alarm_index": alarm,
        "onset_index": onset,
        "direction": direction,
        "model_alarm_index": model_alarm,
        "model_onset_index": model_onset,
        "drifted": bool(reasons),
        "reasons": reasons,
        "input_drifted": bool(input_reasons),
        "input_reasons": input_reasons,
        "degradation_reasons": degradation,
        "thresholds": asdict(t),
    }
