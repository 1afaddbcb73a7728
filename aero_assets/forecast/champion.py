"""Which model serves a station: the evaluation table, the release rule, and the forecasts it makes.

Pure functions, so the Dagster assets and `aero bench forecast` decide the same way:

* `evaluation_table` scores every candidate and both baselines on the *same* test windows (same
  targets), with skill against each baseline, because an RMSE alone says nothing about hourly
  temperature (persistence is already good);
* `release_decision` is the gate: a candidate is released only if its metrics are finite, it
  beats persistence and seasonal naive by `margin` (a fraction of the baseline's RMSE) and it beats
  the champion in service on the same windows (champion / challenger: a retrain on the newest data
  must prove itself on the newest data). When no candidate passes, the decision says why and the
  previous champion stays in service;
* `one_step_forecasts` replays a champion over an hourly series: every hour after `start_ns` gets
  the forecast made from the `lookback` hours before it, joined with the actual when it exists,
  plus the forecast for the next hour that has not happened yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from aero_assets.forecast.baselines import SEASON_H, metrics, persistence, seasonal_naive, skill
from aero_assets.forecast.dataset import NS_PER_HOUR, TrainingSet

BASELINES = ("persistence", "seasonal_naive")
IN_SERVICE = "in_service"  # the row of the champion in service, scored on the challenger's test windows


def evaluation_table(training_set: TrainingSet, candidates: dict[str, np.ndarray], part: str = "test",
                     in_service: np.ndarray | None = None) -> pd.DataFrame:
    """One row per model (candidates, the champion in service, baselines): rmse, mae, n, skill vs each baseline, kind.

    `candidates` maps a model name to its (n, horizon) forecasts in degC for the windows of `part`,
    in the training set's order; `in_service` are the current champion's forecasts of the same windows.
    """
    X_raw, y_raw, _ = training_set.raw(part)
    forecasts = dict(candidates)
    if in_service is not None:
        forecasts[IN_SERVICE] = in_service
    forecasts["persistence"] = persistence(X_raw, training_set.horizon)
    if training_set.lookback >= SEASON_H and training_set.horizon <= SEASON_H:
        forecasts["seasonal_naive"] = seasonal_naive(X_raw, training_set.horizon)
    rows = {name: metrics(y_raw, np.asarray(y_hat, dtype=float)) for name, y_hat in forecasts.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    for baseline in BASELINES:
        base = rows.get(baseline, {}).get("rmse", float("nan"))
        table[f"skill_vs_{baseline}"] = [skill(r["rmse"], base) for r in rows.values()]
    table["kind"] = ["baseline" if name in BASELINES else "in_service" if name == IN_SERVICE else "model"
                     for name in table.index]
    table.index.name = "model"
    return table


@dataclass(frozen=True)
class ReleaseDecision:
    """The gate's verdict: the model to release (or None) and each check with its explanation."""

    champion: str | None
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # check name -> (passed, why)
    reason: str = ""

    @property
    def released(self) -> bool:
        return self.champion is not None


def release_decision(table: pd.DataFrame, margin: float = 0.02) -> ReleaseDecision:
    """The best model by test RMSE among those with finite metrics, released only if it beats both baselines.

    `margin` 0.02 means the champion's RMSE must be at most 98 % of each baseline's. The checks are
    the release gate's blocking checks: `metrics_finite`, `beats_baselines` and `beats_champion` (a
    lower RMSE than the champion in service on the same windows; passes when none is in service).
    """
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), not {margin}")
    models = table[table["kind"] == "model"]
    finite = models[np.isfinite(models["rmse"]) & np.isfinite(models["mae"]) & (models["n"] > 0)]
    not_finite = sorted(set(models.index) - set(finite.index))
    finite_ok = not finite.empty
    finite_why = ("every model's metrics are finite" if not not_finite else
                  f"no finite metrics for {', '.join(not_finite)}" + ("" if finite_ok else "; nothing to release"))
    if not finite_ok:
        nothing = "no model with finite metrics to compare"
        return ReleaseDecision(None, {"metrics_finite": (False, finite_why), "beats_baselines": (False, nothing),
                                      "beats_champion": (False, nothing)}, finite_why)
    best = str(finite["rmse"].idxmin())
    best_rmse = float(finite.loc[best, "rmse"])
    shortfalls = []
    for baseline in BASELINES:
        if baseline not in table.index:
            shortfalls.append(f"no {baseline} baseline for this window shape")
            continue
        limit = (1.0 - margin) * float(table.loc[baseline, "rmse"])
        if not best_rmse <= limit:
            shortfalls.append(f"{best} RMSE {best_rmse:.3f} > {limit:.3f} ({baseline} "
                              f"{float(table.loc[baseline, 'rmse']):.3f} less {margin:.0%})")
    beats = not shortfalls
    beats_why = (f"{best} RMSE {best_rmse:.3f} beats persistence {float(table.loc['persistence', 'rmse']):.3f} and "
                 f"seasonal naive {float(table.loc['seasonal_naive', 'rmse']):.3f} by more than {margin:.0%}"
                 if beats else "; ".join(shortfalls))
    incumbent = table[table["kind"] == "in_service"]
    incumbent_rmse = float(incumbent["rmse"].iloc[0]) if len(incumbent) else float("nan")
    if not np.isfinite(incumbent_rmse):
        wins, wins_why = True, "no champion in service to beat" if incumbent.empty else \
            "the champion in service has no finite score on these windows"
    else:
        wins = best_rmse < incumbent_rmse
        wins_why = (f"{best} RMSE {best_rmse:.3f} {'<' if wins else '>='} {incumbent_rmse:.3f} of the champion in "
                    "service on the same windows")
    checks = {"metrics_finite": (True, finite_why), "beats_baselines": (beats, beats_why),
              "beats_champion": (wins, wins_why)}
    released = beats and wins
    reason = beats_why if not beats else wins_why
    return ReleaseDecision(best if released else None, checks, reason)


def one_step_forecasts(predict: Callable[[np.ndarray, np.ndarray], np.ndarray], series: pd.Series,
                       start_ns: int, lookback: int, horizon: int = 1) -> pd.DataFrame:
    """Forecasts of every hour after `start_ns` (and of the next, unobserved hour), joined with actuals.

    `series` is a regular hourly series (int-ns index, as from `dataset.station_series`);
    `predict(X_raw, target_ts)` returns (n, horizon) degC forecasts for target_ts (n, horizon), the first
    column being one hour ahead (a 24-hour model is scored here on its first hour).
    An hour whose inputs hold a NaN (a long gap) gets no forecast. Returns target_ts, forecast,
    actual (NaN for the future hour) and error (actual - forecast).
    """
    series = series.sort_index()
    ts = np.asarray(series.index, dtype=np.int64)
    values = series.to_numpy(dtype=float)
    columns = ["target_ts", "forecast", "actual", "error"]
    if len(values) < lookback:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    windows = sliding_window_view(values, lookback)  # window i ends at position i + lookback - 1
    target_ts = ts[lookback - 1:] + NS_PER_HOUR
    actual = np.append(values[lookback:], np.nan)
    keep = (target_ts > start_ns) & np.isfinite(windows).all(axis=1)
    forecast = np.full(int(keep.sum()), np.nan)
    if keep.any():
        steps = target_ts[keep][:, None] + np.arange(horizon, dtype=np.int64)[None, :] * NS_PER_HOUR
        forecast = np.asarray(predict(windows[keep], steps), dtype=float)[:, 0]
    out = pd.DataFrame({"target_ts": target_ts[keep], "forecast": forecast, "actual": actual[keep]})
    out["error"] = out["actual"] - out["forecast"]
    return out[columns]


def next_horizon(predict: Callable[[np.ndarray, np.ndarray], np.ndarray], series: pd.Series, lookback: int,
                 horizon: int) -> pd.DataFrame:
    """The forecast of every hour of the next horizon after the last observation (target_ts, forecast).

    Empty when the last `lookback` hours hold a gap (no honest forecast can be made from them).
    """
    series = series.sort_index()
    values = series.to_numpy(dtype=float)[-lookback:]
    if len(values) < lookback or not np.isfinite(values).all():
        return pd.DataFrame({"target_ts": pd.Series(dtype=np.int64), "forecast": pd.Series(dtype=float)})
    steps = int(series.index[-1]) + np.arange(1, horizon + 1, dtype=np.int64) * NS_PER_HOUR
    forecast = np.asarray(predict(values[None, :], steps[None, :]), dtype=float)[0]
    return pd.DataFrame({"target_ts": steps, "forecast": forecast})
