"""The release gate and the replay of a champion over an hourly series (pure, no Dagster)."""

import numpy as np
import pandas as pd
import pytest

from aero_assets.forecast.baselines import persistence
from aero_assets.forecast.champion import evaluation_table, next_horizon, one_step_forecasts, release_decision
from aero_assets.forecast.dataset import NS_PER_HOUR, build_training_set, hourly, station_series
from aero_assets.forecast.simulate import simulate_station

START = pd.Timestamp("2026-05-01").value


@pytest.fixture(scope="module")
def training_set():
    readings, _ = simulate_station("S", START, 30, mode="calm", seed=3)
    return build_training_set(station_series(hourly(readings), "S"))


def _oracle(training_set, noise: float) -> np.ndarray:
    """Forecasts that are the truth plus seeded noise: a model as good as we want it."""
    _, y, _ = training_set.raw("test")
    return y + np.random.default_rng(0).normal(0.0, noise, y.shape)


def test_evaluation_scores_models_and_both_baselines_on_the_same_windows(training_set):
    table = evaluation_table(training_set, {"good": _oracle(training_set, 0.1)})
    assert list(table.index) == ["good", "persistence", "seasonal_naive"]
    assert (table["n"] == training_set.counts()["test"]).all()
    assert table.loc["good", "skill_vs_persistence"] > 0.5
    assert table.loc["persistence", "skill_vs_persistence"] == pytest.approx(0.0)
    assert list(table["kind"]) == ["model", "baseline", "baseline"]


def test_the_best_model_is_released_when_it_beats_both_baselines_by_the_margin(training_set):
    table = evaluation_table(training_set, {"good": _oracle(training_set, 0.1), "better": _oracle(training_set, 0.05)})
    decision = release_decision(table, margin=0.02)
    assert decision.released and decision.champion == "better"
    assert all(passed for passed, _ in decision.checks.values())


def test_a_model_no_better_than_persistence_is_not_released_and_the_reason_says_so(training_set):
    X, _, _ = training_set.raw("test")
    table = evaluation_table(training_set, {"lazy": persistence(X, 1) + 0.01})
    decision = release_decision(table, margin=0.02)
    assert not decision.released
    passed, why = decision.checks["beats_baselines"]
    assert not passed and "lazy RMSE" in why and "persistence" in why


def test_nan_metrics_fail_the_finite_check_and_release_nothing(training_set):
    table = evaluation_table(training_set, {"broken": np.full_like(_oracle(training_set, 0.1), np.nan)})
    decision = release_decision(table)
    assert not decision.released
    assert decision.checks["metrics_finite"][0] is False and "broken" in decision.checks["metrics_finite"][1]


def test_a_nan_model_beside_a_good_one_is_named_but_the_good_one_is_released(training_set):
    table = evaluation_table(training_set, {"broken": np.full_like(_oracle(training_set, 0.1), np.nan),
                                            "good": _oracle(training_set, 0.1)})
    decision = release_decision(table)
    assert decision.champion == "good" and "broken" in decision.checks["metrics_finite"][1]


def test_margin_outside_zero_to_one_is_refused(training_set):
    with pytest.raises(ValueError, match="margin"):
        release_decision(evaluation_table(training_set, {}), margin=1.5)


def test_replay_forecasts_every_hour_after_the_start_and_the_next_unobserved_one():
    ts = START + np.arange(72, dtype=np.int64) * NS_PER_HOUR
    series = pd.Series(np.arange(72, dtype=float), index=ts)
    series.iloc[30] = np.nan  # a long gap's hour: the 24 windows over it get no forecast

    def last_input(X, target_ts):
        assert X.shape[1] == 24 and target_ts.shape == (len(X), 1)
        return X[:, -1:]

    out = one_step_forecasts(last_input, series, start_ns=int(ts[23]), lookback=24)
    expected = [*ts[24:31], *ts[55:72], ts[-1] + NS_PER_HOUR]
    assert list(out["target_ts"]) == expected
    assert np.isnan(out["actual"].iloc[-1]) and out["forecast"].iloc[-1] == 71.0
    first = out.iloc[0]
    assert first["forecast"] == 23.0 and first["actual"] == 24.0 and first["error"] == 1.0


def test_a_24_hour_champion_is_replayed_on_its_first_hour_and_forecasts_the_whole_next_horizon():
    """A horizon-24 model is asked for (n, 24) targets (Prophet checks the shape), scored on its first hour,
    and gives the next 24 hours after the last observation; a gap in the last day gives no next horizon."""
    ts = START + np.arange(72, dtype=np.int64) * NS_PER_HOUR
    series = pd.Series(np.arange(72, dtype=float), index=ts)

    def drift_up(X, target_ts):
        assert target_ts.shape == (len(X), 24) and (np.diff(target_ts, axis=1) == NS_PER_HOUR).all()
        return X[:, -1:] + np.arange(1, 25, dtype=float)[None, :]

    out = one_step_forecasts(drift_up, series, start_ns=int(ts[23]), lookback=24, horizon=24)
    assert (out["error"].dropna() == 0.0).all()  # the first hour of each forecast is exact here
    ahead = next_horizon(drift_up, series, lookback=24, horizon=24)
    assert list(ahead["target_ts"]) == [int(ts[-1]) + k * NS_PER_HOUR for k in range(1, 25)]
    assert list(ahead["forecast"]) == [71.0 + k for k in range(1, 25)]
    series.iloc[-3] = np.nan
    assert next_horizon(drift_up, series, lookback=24, horizon=24).empty
