"""Drift detection: has the weather the model sees changed (inputs), or has the model got worse (errors)?

Two independent signals, because each misses what the other catches:

* input drift compares the distribution of recent temperatures with the training reference:
  PSI (population stability index, on quantile bins of the reference) and the two-sample KS test.
  They fire on a heatwave before any forecast has been scored, but also on an ordinary change of
  season, so they are reasons, not verdicts on their own;
* error drift runs a Page-Hinkley test on the *magnitude* of the hourly forecast errors. A heatwave
  first makes every forecast too cold (a level jump), then, once a seasonal model catches up, the
  errors stay larger (variance x1.5-2); |error| rises in both phases and for a cold snap too.

Page-Hinkley is sequential by definition, but its statistic is a cumulative sum, so it is computed
here with cumsum / minimum.accumulate instead of a Python loop: m_t = sum_{i<=t}(x_i - mean_i - delta)
with mean_i the running mean up to i, PH_t = m_t - min_{i<=t} m_i, alarm at the first PH_t > lambda.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

PSI_EPSILON = 1e-4  # stands in for an empty bin's share, so ln(current/reference) stays finite


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift report says drifted.

    psi > 0.2 is the usual "significant shift" rule of thumb. KS p < 0.01 alone is too eager on
    thousands of autocorrelated hourly values (the effective sample is much smaller than n), so a
    KS reason also needs the statistic (the largest CDF gap) above `ks_statistic`. The Page-Hinkley
    delta (degC of |error| tolerated as noise per hour) and lambda (degC*h accumulated before an
    alarm) were tuned with `aero_assets.forecast.calibration` on seasonal-naive errors: no alarm on
    calm stations over 60 days and detection of a heatwave within 24 h (see that module).
    """

    psi: float = 0.2
    psi_bins: int = 10
    ks_p: float = 0.01
    ks_statistic: float = 0.1
    ph_delta: float = 2.0
    ph_lambda: float = 40.0
    # on a model's one-step errors in units of its validation RMSE (|e| / rmse): a good one-step model
    # absorbs a level shift within hours, so what is left to detect is a small, lasting rise of |z|
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


def drift_report(
    reference_temps: np.ndarray,
    recent_temps: np.ndarray,
    errors: np.ndarray | None = None,
    thresholds: DriftThresholds | None = None,
    model_errors_z: np.ndarray | None = None,
) -> dict:
    """Input drift (PSI, KS) of recent vs reference temperatures and error drift (Page-Hinkley on |errors|).

    `errors` are forecast residuals in time order (signed or not: their magnitude is monitored).
    Returns psi, ks, ks_p, ph_alarm_index (index into `errors`, or None), drifted and the
    human-readable reasons, plus the thresholds used, so a run's metadata explains itself.
    `model_errors_z` (optional) are a model's one-step errors divided by its validation RMSE, watched
    by a second Page-Hinkley test with the `ph_model_*` thresholds. Each alarm comes with the index
    where its change began (`*_onset_index`). Only the error detectors decide `drifted`: PSI and KS
    also move with an ordinary change of season, so they are reported as `input_reasons`.
    """
    t = thresholds or DriftThresholds()
    psi_value = psi(reference_temps, recent_temps, bins=t.psi_bins)
    ks_value, ks_p = ks(reference_temps, recent_temps)
    alarm = onset = model_alarm = model_onset = None
    if errors is not None and np.size(errors):
        magnitude = np.abs(np.asarray(errors, dtype=float))
        alarm = page_hinkley(magnitude, t.ph_delta, t.ph_lambda)
        onset = None if alarm is None else page_hinkley_onset(magnitude, t.ph_delta, alarm)
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
        reasons.append(f"Page-Hinkley alarm at error #{alarm}, change from #{onset} "
                       f"(delta {t.ph_delta}, lambda {t.ph_lambda})")
    if model_alarm is not None:
        reasons.append(f"Page-Hinkley alarm on model errors at #{model_alarm}, change from #{model_onset} "
                       f"(delta {t.ph_model_delta}, lambda {t.ph_model_lambda}, in validation RMSEs)")
    return {
        "psi": psi_value,
        "ks": ks_value,
        "ks_p": ks_p,
        "ph_alarm_index": alarm,
        "ph_onset_index": onset,
        "model_alarm_index": model_alarm,
        "model_onset_index": model_onset,
        "drifted": bool(reasons),
        "reasons": reasons,
        "input_drifted": bool(input_reasons),
        "input_reasons": input_reasons,
        "thresholds": asdict(t),
    }
