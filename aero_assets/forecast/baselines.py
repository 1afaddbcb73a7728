"""Naive forecasters every model must beat, computed on exactly the windows the models see.

A GRU or Prophet RMSE means nothing on its own: hourly temperature is so autocorrelated that
"tomorrow = today" is already good. So the models are reported as *skill* against two baselines
evaluated on the same `TrainingSet` windows (same targets, same part):

* persistence: every step of the horizon = the last observed input;
* seasonal naive: each target = the value 24 h earlier ("same hour yesterday"), which is always
  inside the inputs when lookback >= 24 and horizon <= 24.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aero_assets.forecast.dataset import TrainingSet

SEASON_H = 24


def persistence(X_raw: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon) forecasts: the last input repeated over the horizon."""
    X_raw = np.asarray(X_raw, dtype=float)
    return np.repeat(X_raw[:, -1:], horizon, axis=1)


def seasonal_naive(X_raw: np.ndarray, horizon: int, season: int = SEASON_H) -> np.ndarray:
    """(n, horizon) forecasts: target step k (1-based) = input at position lookback + k - 1 - season."""
    X_raw = np.asarray(X_raw, dtype=float)
    lookback = X_raw.shape[1]
    if lookback < season or horizon > season:
        raise ValueError(f"seasonal naive needs lookback >= {season} and horizon <= {season}")
    return X_raw[:, lookback - season : lookback - season + horizon]


def metrics(y: np.ndarray, y_hat: np.ndarray) -> dict[str, float | int]:
    """RMSE and MAE over every (window, step) pair where both values are finite, and that count."""
    y = np.asarray(y, dtype=float)
    y_hat = np.asarray(y_hat, dtype=float)
    if y.shape != y_hat.shape:
        raise ValueError(f"shapes differ: {y.shape} vs {y_hat.shape}")
    ok = np.isfinite(y) & np.isfinite(y_hat)
    err = (y_hat - y)[ok]
    if err.size == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(err * err))), "mae": float(np.mean(np.abs(err))), "n": int(err.size)}


def skill(model_rmse: float, baseline_rmse: float) -> float:
    """1 - model/baseline: > 0 the model beats the baseline, 0 ties, < 0 loses (NaN if the baseline is perfect)."""
    if baseline_rmse == 0 or not np.isfinite(baseline_rmse):
        return float("nan")
    return float(1.0 - model_rmse / baseline_rmse)


def evaluate_baselines(training_set: TrainingSet, part: str = "test") -> dict[str, dict[str, float | int]]:
    """Metrics of persistence and (when the window allows it) seasonal naive on one part, in degC."""
    X_raw, y_raw, _ = training_set.raw(part)
    out = {"persistence": metrics(y_raw, persistence(X_raw, training_set.horizon))}
    if training_set.lookback >= SEASON_H and training_set.horizon <= SEASON_H:
        out["seasonal_naive"] = metrics(y_raw, seasonal_naive(X_raw, training_set.horizon))
    return out


def seasonal_naive_errors(hourly_temp: pd.Series, season: int = SEASON_H) -> pd.Series:
    """Hour-by-hour residuals of the seasonal-naive forecaster (value - value `season` hours earlier).

    The series must be regular (from `dataset.station_series`) so a shift of `season` positions is
    `season` hours. This is the cheapest stand-in for a model's error stream when monitoring drift.
    """
    values = hourly_temp.sort_index()
    return (values - values.shift(season)).rename("error")


def seasonal_innovations(hourly_temp: pd.Series, days: int = 7, season: int = SEASON_H) -> pd.Series:
    """Value minus the mean of the same hour over the previous `days` days: the drift detector's error stream.

    Averaging a few days makes the reference less noisy than "same hour yesterday" alone (yesterday's
    weather anomaly no longer masks or mimics today's), while a few days still follow the season. A
    heatwave shows as a run of large positive innovations, a cold snap as negative ones.
    """
    values = hourly_temp.sort_index()
    reference = sum(values.shift(season * k) for k in range(1, days + 1)) / days
    return (values - reference).rename("innovation")
