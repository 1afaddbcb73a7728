"""Monitoring a released champion: its error streams since release, the drift verdict, and when to retrain.

Pure functions over a station's hourly series and the champion's one-step forecasts, shared by
`forecast/drift_report` (the exact, reprocessable record), the drift retrain sensor and
`aero bench forecast` (which replays a whole simulated heatwave through them), so the numbers the
bench reports are the numbers the pipeline acts on.

Everything is computed from the release on, never incrementally: Page-Hinkley is causal (its
statistic at hour t depends only on hours <= t), so recomputing the whole stream after each landing
gives the same first alarm as a streaming detector would, and a re-materialized report is identical.

Two error streams are watched (see `drift.drift_report`):

* seasonal innovations (value - mean of the same hour over the previous days) since the release: the
  verdict. Independent of the model, so a heatwave shows even when the champion tracks it hour by hour;
* the champion's one-step errors in units of its validation RMSE: reported as degradation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aero_assets.forecast.baselines import seasonal_innovations
from aero_assets.forecast.dataset import NS_PER_HOUR
from aero_assets.forecast.drift import DriftThresholds, cusum_statistics, drift_report, page_hinkley_statistic


@dataclass(frozen=True)
class StationDrift:
    """A drift report plus the timestamps behind its indices, for metadata, plots and the retrain sensor."""

    report: dict
    release_ts: int
    last_ts: int
    innovation_ts: np.ndarray
    innovations: np.ndarray
    model_ts: np.ndarray
    model_z: np.ndarray
    alarm_ts: int | None
    onset_ts: int | None
    degradation_ts: int | None  # the champion-degradation alarm (reported, not a verdict)

    @property
    def drifted(self) -> bool:
        return bool(self.report["drifted"])

    @property
    def hours_since_release(self) -> float:
        return (self.last_ts - self.release_ts) / NS_PER_HOUR

    def summary(self) -> dict:
        """JSON-safe statistics (what the check metadata and the retrain run's tags carry)."""
        r = self.report

        def num(x):
            return None if x is None or not np.isfinite(x) else round(float(x), 4)

        return {
            "drifted": self.drifted, "reasons": list(r["reasons"]), "input_reasons": list(r["input_reasons"]),
            "psi": num(r["psi"]), "ks": num(r["ks"]), "ks_p": num(r["ks_p"]),
            "degradation_reasons": list(r["degradation_reasons"]), "direction": r["direction"],
            "alarm_ts": self.alarm_ts, "onset_ts": self.onset_ts, "degradation_ts": self.degradation_ts,
            "release_ts": self.release_ts, "last_ts": self.last_ts,
            "hours_since_release": round(self.hours_since_release, 1),
            "scored_hours": int(self.model_z.size),
        }


def model_error_z(predictions: pd.DataFrame, val_rmse: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(target_ts, error / val_rmse) of the scored forecasts, in time order; empty without a usable RMSE."""
    if predictions.empty or val_rmse is None or not np.isfinite(val_rmse) or val_rmse <= 0:
        return np.empty(0, np.int64), np.empty(0)
    scored = predictions[np.isfinite(predictions["error"].to_numpy(dtype=float))].sort_values("target_ts")
    return scored["target_ts"].to_numpy(np.int64), scored["error"].to_numpy(float) / float(val_rmse)


def monitor_station(series: pd.Series, reference_temps: np.ndarray, predictions: pd.DataFrame, release_ts: int,
                    val_rmse: float | None, *, thresholds: DriftThresholds | None = None,
                    recent_window_h: int = 48) -> StationDrift:
    """The drift verdict of one station's champion from `release_ts` (the last hour it was trained on) on.

    `series` is the regular hourly temperature series (`dataset.station_series`); `reference_temps` the
    training targets the champion saw; `predictions` its one-step forecasts (`champion.one_step_forecasts`).
    """
    t = thresholds or DriftThresholds()
    series = series.sort_index()
    innovations = seasonal_innovations(series, days=t.season_days)
    innovations = innovations[innovations.index > release_ts].dropna()
    innovation_ts = np.asarray(innovations.index, dtype=np.int64)
    model_ts, model_z = model_error_z(predictions, val_rmse)
    observed = series.dropna()
    last_ts = int(observed.index[-1]) if len(observed) else int(release_ts)
    recent = observed[observed.index > last_ts - recent_window_h * NS_PER_HOUR].to_numpy(dtype=float)
    report = drift_report(reference_temps, recent, innovations=innovations.to_numpy(dtype=float), thresholds=t,
                          model_errors_z=model_z)
    alarm_ts = onset_ts = degradation_ts = None
    if report["alarm_index"] is not None:
        alarm_ts, onset_ts = int(innovation_ts[report["alarm_index"]]), int(innovation_ts[report["onset_index"]])
    if report["model_alarm_index"] is not None:
        degradation_ts = int(model_ts[report["model_alarm_index"]])
    return StationDrift(report, int(release_ts), last_ts, innovation_ts, innovations.to_numpy(dtype=float),
                        model_ts, model_z, alarm_ts, onset_ts, degradation_ts)


@dataclass(frozen=True)
class RetrainPolicy:
    """When a drift verdict becomes a retrain, in station (event) hours, so a fast simulation behaves like a slow one.

    cooldown_h: after a drift retrain was asked for, further drift verdicts within this many station hours
    ask for none (one episode, one retrain; the verdicts of the old champion keep arriving until the new one
    is released). min_post_onset_h: the retrain waits until this much of the new regime has been observed,
    so its training window can hold it. pre_onset_days: history before the onset kept in that window.
    """

    cooldown_h: float = 168.0
    min_post_onset_h: float = 96.0
    pre_onset_days: float = 7.0


@dataclass(frozen=True)
class RetrainDecision:
    action: str  # "retrain", "wait", "cooldown" or "none"
    reason: str
    train_start_ts: int | None = None


SAME_EPISODE_H = 24  # two onset estimates this close are one drift episode


def retrain_decision(summary: dict, last_retrain_ts: int | None, policy: RetrainPolicy,
                     retrained_onsets: tuple[int, ...] | list[int] = ()) -> RetrainDecision:
    """What a drift verdict (`StationDrift.summary()`) asks for, given the station time of the last drift retrain
    and the onsets already retrained for.

    An episode is retrained for once: if that retrain's candidate failed the gate, the old champion keeps
    reporting the same onset, and retraining on the same evidence again would not change the verdict (the
    weekly routine retrain still runs). A later change - the heatwave ending - is a new episode.
    """
    if not summary.get("drifted"):
        return RetrainDecision("none", "no drift")
    last_ts, onset_ts = int(summary["last_ts"]), summary.get("onset_ts")
    onset_ts = int(onset_ts if onset_ts is not None else summary.get("alarm_ts") or last_ts)
    if any(abs(onset_ts - int(o)) <= SAME_EPISODE_H * NS_PER_HOUR for o in retrained_onsets):
        return RetrainDecision("done", f"the episode from {pd.Timestamp(onset_ts, tz='UTC'):%Y-%m-%d %H:%M} was "
                                       "retrained for already")
    if last_retrain_ts is not None:
        since = (last_ts - int(last_retrain_ts)) / NS_PER_HOUR
        if since < policy.cooldown_h:
            return RetrainDecision("cooldown", f"a drift retrain was asked for {since:.0f} station hours ago "
                                               f"(cool-down {policy.cooldown_h:g} h)")
    post = (last_ts - onset_ts) / NS_PER_HOUR
    if post < policy.min_post_onset_h:
        return RetrainDecision("wait", f"drift since {pd.Timestamp(onset_ts, tz='UTC'):%Y-%m-%d %H:%M}; "
                                       f"{post:.0f} of the {policy.min_post_onset_h:g} post-onset hours a retrain "
                                       "needs have been observed")
    start = onset_ts - round(policy.pre_onset_days * 24) * NS_PER_HOUR
    return RetrainDecision("retrain", "; ".join(summary.get("reasons") or ["drift"]), start)


def detector_curves(drift: StationDrift) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """{name: (ts, statistic, threshold)} of the sequential detectors, for the drift plot."""
    t = drift.report["thresholds"]
    out = {}
    if drift.innovations.size:
        up, down = cusum_statistics(drift.innovations, t["cusum_k"])
        out["CUSUM warmer"] = (drift.innovation_ts, up, t["cusum_lambda"])
        out["CUSUM colder"] = (drift.innovation_ts, down, t["cusum_lambda"])
    if drift.model_z.size:
        out["champion |error| / val RMSE (PH)"] = (
            drift.model_ts, page_hinkley_statistic(np.abs(drift.model_z), t["ph_model_delta"]), t["ph_model_lambda"])
    return out
