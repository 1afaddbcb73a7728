"""The forecasters' shared benchmark: one simulated calm station, windows, a model trained, test scores.

`gru.bench_gru_training` and `prophet_forecaster.bench_prophet_training` both train on the same
windows (lookback 24, horizon 1, from 2024-01-01) and report next to the same baselines; this is
that common part, so the two cannot drift apart. They import it inside the function: `simulate`
pulls in scipy, and the Dagster definitions import the forecaster modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from aero_assets.forecast.baselines import evaluate_baselines, metrics
from aero_assets.forecast.dataset import TrainingSet, build_training_set
from aero_assets.forecast.simulate import simulate_station

M = TypeVar("M")
BENCH_START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01
LOOKBACK, HORIZON = 24, 1


@dataclass(frozen=True)
class BenchRun(Generic[M]):
    """A model trained on the bench station, its test windows, and the baselines' test RMSE."""

    training_set: TrainingSet
    model: M
    X_test: np.ndarray
    y_test: np.ndarray
    ts_test: np.ndarray
    persistence_rmse: float
    seasonal_naive_rmse: float

    def rmse(self, y_hat: np.ndarray) -> float:
        """Test RMSE of forecasts for the test windows."""
        return metrics(self.y_test, y_hat)["rmse"]


def bench_run(days: float, seed: int, train: Callable[[TrainingSet], M]) -> BenchRun[M]:
    """Simulate `days` of one calm station, build its windows, `train(training_set)` and score the baselines."""
    readings, _ = simulate_station("bench", BENCH_START_NS, days, seed=seed)
    training_set = build_training_set(readings.set_index("ts")["temperature_c"], lookback=LOOKBACK, horizon=HORIZON)
    model = train(training_set)
    X_te, y_te, ts_te = training_set.raw("test")
    baselines = evaluate_baselines(training_set, "test")
    return BenchRun(
        training_set=training_set,
        model=model,
        X_test=X_te,
        y_test=y_te,
        ts_test=ts_te,
        persistence_rmse=baselines["persistence"]["rmse"],
        seasonal_naive_rmse=baselines["seasonal_naive"]["rmse"],
    )
