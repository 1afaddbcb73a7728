"""Replay a simulated station through the champion's whole life: train, release, monitor, drift, retrain.

The same pure functions the assets and the drift retrain sensor call (`build_training_set`,
`train_gru` / `train_prophet`, `release_decision`, `one_step_forecasts`, `monitor_station`,
`retrain_decision`), with no broker and no Dagster, so `aero bench forecast` can score the detector
and the retrain on many hours of simulated weather in seconds. Page-Hinkley is causal, so one pass
over the monitored span finds the same first alarm the hourly pipeline finds; the retrain happens
at the station hour at which the sensor's policy would first say "retrain".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aero_assets.forecast.baselines import metrics
from aero_assets.forecast.champion import evaluation_table, one_step_forecasts, release_decision
from aero_assets.forecast.dataset import NS_PER_HOUR, build_training_set, hourly, station_series
from aero_assets.forecast.drift import DriftThresholds
from aero_assets.forecast.monitor import RetrainPolicy, monitor_station, retrain_decision
from aero_assets.forecast.simulate import simulate_station

NS_PER_DAY = 24 * NS_PER_HOUR
SCENARIO_START_NS = pd.Timestamp("2026-01-01").value


@dataclass
class Champion:
    kind: str
    model: object
    gru: object  # the GRU trained alongside (a fine-tune's starting point), whichever model won
    release_ts: int
    val_rmse: float
    reference: np.ndarray
    table: pd.DataFrame


@dataclass
class ScenarioResult:
    mode: str
    seed: int
    onset_ts: int | None
    alarm_ts: int | None
    retrain_ts: list[int] = field(default_factory=list)
    champion_kinds: list[str] = field(default_factory=list)
    old_rmse_after_retrain: float = float("nan")
    new_rmse_after_retrain: float = float("nan")
    first_table: pd.DataFrame | None = None

    @property
    def delay_h(self) -> float:
        if self.alarm_ts is None or self.onset_ts is None or self.alarm_ts < self.onset_ts:
            return float("nan")
        return (self.alarm_ts - self.onset_ts) / NS_PER_HOUR

    @property
    def false_alarm(self) -> bool:
        return self.alarm_ts is not None and (self.onset_ts is None or self.alarm_ts < self.onset_ts)


def train_champion(series: pd.Series, release_ts: int, *, start_ts: int | None = None, gru_epochs: int = 40,
                   margin: float = 0.02, seed: int = 0, in_service: Champion | None = None) -> Champion | None:
    """Train GRU and Prophet on `series` up to `release_ts` (from `start_ts`), release the better one if it passes
    the champion gate (beats both baselines and the champion `in_service` on the test part); None when it fails."""
    from aero_assets.forecast.gru import GRUConfig, train_gru
    from aero_assets.forecast.prophet_forecaster import ProphetConfig, train_prophet

    window = series[(series.index <= release_ts) & (series.index >= (start_ts or series.index[0]))]
    ts = build_training_set(window, lookback=24, horizon=1)
    gru = train_gru(ts, GRUConfig(epochs=gru_epochs, seed=seed), init=None if in_service is None else in_service.gru)
    models = {"gru": lambda X, t: gru.predict(X)}
    try:
        models["prophet"] = train_prophet(ts, ProphetConfig()).predict
    except ValueError:  # too short a window for Prophet: the GRU (fine-tuned on a retrain) competes alone
        pass
    X_te, _, t_te = ts.raw("test")
    table = evaluation_table(ts, {k: f(X_te, t_te) for k, f in models.items()},
                             in_service=None if in_service is None else in_service.model(X_te, t_te))
    decision = release_decision(table, margin=margin)
    if not decision.released:
        return None
    kind = decision.champion
    X_va, y_va, t_va = ts.raw("validation")
    val_rmse = metrics(y_va, models[kind](X_va, t_va))["rmse"]
    _, y_tr, _ = ts.raw("train")
    return Champion(kind, models[kind], gru, int(window.index[-1]), float(val_rmse), y_tr[:, 0], table)


def _rmse(champion: Champion, series: pd.Series, start_ns: int, end_ns: int) -> float:
    preds = one_step_forecasts(champion.model, series[series.index <= end_ns], start_ns, 24)
    return metrics(preds["actual"].to_numpy(), preds["forecast"].to_numpy())["rmse"]


def run_scenario(mode: str, seed: int, *, history_days: float = 60.0, monitor_days: float = 28.0,
                 onset_after_release_days: float = 5.0, gru_epochs: int = 40,
                 thresholds: DriftThresholds | None = None, policy: RetrainPolicy | None = None,
                 recent_window_h: int = 48, start_ns: int = SCENARIO_START_NS) -> ScenarioResult:
    """One station: a champion trained on `history_days`, then `monitor_days` of monitoring (a heatwave
    `onset_after_release_days` into them in heatwave mode), with every retrain the policy asks for."""
    policy = policy or RetrainPolicy()
    release_ts = start_ns + round(history_days * NS_PER_DAY) - NS_PER_HOUR
    onset = release_ts + NS_PER_HOUR + round(onset_after_release_days * NS_PER_DAY) if mode == "heatwave" else None
    readings, truth = simulate_station(mode, start_ns, history_days + monitor_days, mode=mode,
                                       heatwave_start_ns=onset, seed=seed)
    series = station_series(hourly(readings), mode)
    end_ts = int(series.index[-1])
    champion = train_champion(series, release_ts, gru_epochs=gru_epochs, seed=seed)
    if champion is None:
        raise RuntimeError(f"{mode} seed {seed}: the first champion did not pass the release gate")
    first = champion
    result = ScenarioResult(mode, seed, truth["heatwave_start_ns"], None, champion_kinds=[champion.kind],
                            first_table=champion.table)
    last_retrain: int | None = None
    onsets: list[int] = []
    now = release_ts
    while now < end_ts:
        visible = series[series.index <= end_ts]
        preds = one_step_forecasts(champion.model, visible, champion.release_ts, 24)
        drift = monitor_station(visible, champion.reference, preds, champion.release_ts, champion.val_rmse,
                                thresholds=thresholds, recent_window_h=recent_window_h)
        if drift.alarm_ts is None:
            break
        if result.alarm_ts is None:
            result.alarm_ts = drift.alarm_ts
        # the hour at which the sensor, seeing this (causal) alarm on every landing, first says "retrain"
        decision_ts = None
        for hour in range(drift.alarm_ts, end_ts + 1, NS_PER_HOUR):
            summary = {**drift.summary(), "last_ts": hour}
            if retrain_decision(summary, last_retrain, policy, onsets).action == "retrain":
                decision_ts = hour
                break
        if decision_ts is None:
            break
        start = retrain_decision({**drift.summary(), "last_ts": decision_ts}, last_retrain, policy,
                                 onsets).train_start_ts
        last_retrain = decision_ts
        onsets.append(drift.onset_ts)
        result.retrain_ts.append(decision_ts)
        new = train_champion(series, decision_ts, start_ts=start, gru_epochs=gru_epochs, seed=seed,
                             in_service=champion)
        if new is not None:
            stop = min(end_ts, truth["heatwave_end_ns"] or end_ts)
            # the first retrain's gain: both champions on the same post-retrain hours of the new regime (12 h at least)
            if len(result.retrain_ts) == 1 and stop - decision_ts >= 12 * NS_PER_HOUR:
                result.old_rmse_after_retrain = _rmse(first, series, decision_ts, stop)
                result.new_rmse_after_retrain = _rmse(new, series, decision_ts, stop)
            champion = new
            result.champion_kinds.append(new.kind)
        now = decision_ts
    return result
