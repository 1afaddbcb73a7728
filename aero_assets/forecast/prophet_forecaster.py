"""Prophet forecaster for hourly temperature, with an AR(1) correction of its residuals.

Prophet models a series as trend + seasonalities. Fitted on the train part and asked for a
forecast weeks later (the test part), its error is dominated by the day's *weather* (the
autocorrelated departure from the climate), which Prophet cannot see: a plain Prophet forecast
loses badly to persistence at 1-hour horizons. The fix is a classic regression-with-AR-errors
step. With the residual r_t = x_t - prophet(t), estimated to follow r_t = rho * r_(t-1) + e_t on
the train part, the forecast for step k (1-based) of a window is

    x_hat(t_k) = prophet(t_k) + rho**k * (last_input - prophet(t_last)),   t_last = t_1 - 1 h

so the forecast starts from the last observation and relaxes to Prophet's climate as the horizon
grows. rho is the least-squares AR(1) coefficient of the train residuals (pairs exactly one hour
apart). With `residual_ar=False` the forecast is plain Prophet.

Fitting uses Prophet's MAP estimate (no MCMC) on at most the last `max_train_hours` of train, and
no uncertainty sampling at predict time, so a year of data fits in seconds. `prophet` and
`cmdstanpy` are imported inside the functions only (they are slow to import).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aero_assets.forecast.dataset import NS_PER_HOUR, TrainingSet
from aero_assets.forecast.model_files import describes_model, open_model_folder, read_model_data, save_model_folder

MODEL_FILE = "prophet.json"
META_FILE = "prophet_meta.json"
FORMAT_VERSION = 1
MIN_TRAIN_HOURS = 14 * 24  # a trend extrapolated from fewer is unstable (a heatwave retrain on 7 days: RMSE x1.5-3)


@dataclass(frozen=True)
class ProphetConfig:
    """Prophet settings for hourly temperature.

    Daily seasonality carries the diurnal cycle (a few Fourier terms: the cycle is smooth). Yearly
    seasonality cannot be estimated from a few months of train data, so it is off by default and
    the (piecewise-linear) trend follows the season instead; a small changepoint prior keeps that
    trend from chasing a week of weather and extrapolating it into the test period.
    """

    seed: int = 0
    changepoint_prior_scale: float = 0.05
    daily_seasonality: bool = True
    daily_fourier_order: int = 4
    weekly_seasonality: bool = False  # weather has no week
    yearly_seasonality: bool = False
    yearly_fourier_order: int = 3
    max_train_hours: int | None = 120 * 24  # fit on the most recent 120 days of train (speed, and recency)
    residual_ar: bool = True

    def __post_init__(self) -> None:
        if self.changepoint_prior_scale <= 0 or self.daily_fourier_order < 1 or self.yearly_fourier_order < 1:
            raise ValueError(f"changepoint_prior_scale must be > 0 and Fourier orders >= 1: {self}")
        if self.max_train_hours is not None and self.max_train_hours < MIN_TRAIN_HOURS:
            raise ValueError(f"max_train_hours must be >= {MIN_TRAIN_HOURS} or None: {self}")


def quiet_prophet_logging() -> None:
    """Silence cmdstanpy/prophet INFO chatter (one line per fit, per chain) in run logs."""
    from cmdstanpy.utils import get_logger

    get_logger()  # cmdstanpy sets its logger to DEBUG (with its own handler) on the first call; do that now
    for name in ("cmdstanpy", "prophet", "prophet.plot", "prophet.models", "prophet.forecaster"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)  # "Importing plotly failed": plots unused


def _ds(ts_ns: np.ndarray) -> pd.Series:
    """Prophet's `ds` column (naive UTC datetimes) from int-ns timestamps."""
    return pd.Series(pd.to_datetime(np.asarray(ts_ns, dtype=np.int64), unit="ns"))


def train_series(training_set: TrainingSet) -> pd.Series:
    """The train part's hourly series in degC, rebuilt from its windows' inputs and targets.

    Every window covers lookback + horizon consecutive hours ending at its last target, so the
    union of all windows' points (deduplicated by timestamp) is the series the windows came from,
    minus any hour no kept window touched. Vectorised: one (n, lookback + horizon) block.
    """
    X, y, target_ts = training_set.raw("train")
    if len(X) == 0:
        return pd.Series(dtype=float)
    lookback = training_set.lookback
    input_ts = target_ts[:, :1] - NS_PER_HOUR * np.arange(lookback, 0, -1, dtype=np.int64)
    ts = np.concatenate([input_ts, target_ts], axis=1).ravel()
    values = np.concatenate([X, y], axis=1).ravel()
    unique_ts, first = np.unique(ts, return_index=True)
    return pd.Series(values[first], index=unique_ts, name="temperature_c")


def _ar1_coefficient(residuals: np.ndarray, ts: np.ndarray) -> float:
    """Least-squares AR(1) coefficient over residual pairs exactly one hour apart, clipped to [0, 0.999]."""
    consecutive = np.diff(ts) == NS_PER_HOUR
    prev, cur = residuals[:-1][consecutive], residuals[1:][consecutive]
    denominator = float(np.dot(prev, prev))
    if prev.size < 2 or denominator == 0.0:
        return 0.0
    return float(np.clip(np.dot(prev, cur) / denominator, 0.0, 0.999))


@dataclass
class TrainedProphet:
    """A fitted Prophet model plus the AR(1) residual coefficient and the training story."""

    model: Any  # prophet.Prophet
    config: ProphetConfig
    lookback: int
    horizon: int
    rho: float
    train_hours: int = 0
    train_start_ns: int = 0
    train_end_ns: int = 0
    fit_seconds: float = 0.0
    train_residual_std: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def prophet_at(self, ts_ns: np.ndarray) -> np.ndarray:
        """Prophet's point forecast (yhat) at int-ns timestamps of any shape; each distinct hour computed once."""
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        unique_ts, inverse = np.unique(ts_ns.ravel(), return_inverse=True)
        if unique_ts.size == 0:
            return np.empty(ts_ns.shape)
        yhat = self.model.predict(pd.DataFrame({"ds": _ds(unique_ts)}))["yhat"].to_numpy(dtype=float)
        return yhat[inverse].reshape(ts_ns.shape)

    def predict(self, X_raw: np.ndarray, target_ts: np.ndarray) -> np.ndarray:
        """(n, horizon) forecasts in degC for windows with unscaled inputs X_raw (n, lookback) and their target_ts.

        With residual_ar, step k is prophet(t_k) + rho**k * (X_raw[:, -1] - prophet(t_k0 - 1 h)); a
        window whose last input is NaN gets NaN forecasts (plain Prophet does not need the inputs).
        """
        X = np.asarray(X_raw, dtype=float)
        target_ts = np.asarray(target_ts, dtype=np.int64)
        if X.ndim != 2 or target_ts.ndim != 2 or len(X) != len(target_ts) or target_ts.shape[1] != self.horizon:
            raise ValueError(f"expected X (n, lookback), target_ts (n, {self.horizon}): {X.shape}, {target_ts.shape}")
        if len(X) == 0:
            return np.empty((0, self.horizon))
        if not self.config.residual_ar:
            return self.prophet_at(target_ts)
        t_last = target_ts[:, :1] - NS_PER_HOUR
        both = self.prophet_at(np.concatenate([t_last, target_ts], axis=1))
        decay = self.rho ** np.arange(1, self.horizon + 1, dtype=float)
        return both[:, 1:] + decay[None, :] * (X[:, -1:] - both[:, :1])

    def summary(self) -> dict[str, Any]:
        """JSON-able description (everything but the Prophet model itself)."""
        return {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "lookback": self.lookback,
            "horizon": self.horizon,
            "rho": self.rho,
            "train_hours": self.train_hours,
            "train_start_ns": self.train_start_ns,
            "train_end_ns": self.train_end_ns,
            "fit_seconds": self.fit_seconds,
            "train_residual_std": self.train_residual_std,
            "extra": self.extra,
        }

    def save(self, folder: Path) -> list[Path]:
        """Write prophet.json (prophet.serialize.model_to_json) and prophet_meta.json (rho, config, ...)."""
        from prophet.serialize import model_to_json

        return save_model_folder(folder, MODEL_FILE,
                                 lambda path: path.write_text(model_to_json(self.model), encoding="utf-8"),
                                 META_FILE, self.summary())

    @classmethod
    def load(cls, folder: Path) -> TrainedProphet:
        """Read a folder written by `save`; ModelLoadError if a file is missing or corrupted."""
        quiet_prophet_logging()
        from prophet.serialize import model_from_json

        meta, model_path = open_model_folder(folder, META_FILE, MODEL_FILE)
        model = read_model_data(model_path, lambda path: model_from_json(path.read_text(encoding="utf-8")),
                                "is not a serialized Prophet model")
        with describes_model(folder, META_FILE, "Prophet"):
            return cls(
                model=model,
                config=ProphetConfig(**meta["config"]),
                lookback=int(meta["lookback"]),
                horizon=int(meta["horizon"]),
                rho=float(meta["rho"]),
                train_hours=int(meta.get("train_hours", 0)),
                train_start_ns=int(meta.get("train_start_ns", 0)),
                train_end_ns=int(meta.get("train_end_ns", 0)),
                fit_seconds=float(meta.get("fit_seconds", 0.0)),
                train_residual_std=float(meta.get("train_residual_std", float("nan"))),
                extra=dict(meta.get("extra", {})),
            )


def train_prophet(training_set: TrainingSet, config: ProphetConfig | None = None) -> TrainedProphet:
    """Fit Prophet (MAP, seeded) on the train part's hourly series and the AR(1) coefficient of its residuals.

    Raises ValueError when the train part holds fewer than MIN_TRAIN_HOURS hours.
    """
    config = config or ProphetConfig()
    series = train_series(training_set)
    if config.max_train_hours is not None and len(series):
        series = series[series.index > series.index[-1] - config.max_train_hours * NS_PER_HOUR]
    if len(series) < MIN_TRAIN_HOURS:
        raise ValueError(f"too few train hours to fit Prophet: {len(series)} < {MIN_TRAIN_HOURS}")

    quiet_prophet_logging()
    from prophet import Prophet

    model = Prophet(
        growth="linear",
        changepoint_prior_scale=config.changepoint_prior_scale,
        daily_seasonality=False,
        weekly_seasonality=config.weekly_seasonality,
        yearly_seasonality=False,
        uncertainty_samples=0,  # point forecasts only: sampling intervals would dominate predict time
    )
    if config.daily_seasonality:
        model.add_seasonality(name="daily", period=1.0, fourier_order=config.daily_fourier_order)
    if config.yearly_seasonality:
        model.add_seasonality(name="yearly", period=365.25, fourier_order=config.yearly_fourier_order)
    ts = series.index.to_numpy(dtype=np.int64)
    values = series.to_numpy(dtype=float)
    started = time.perf_counter()
    model.fit(pd.DataFrame({"ds": _ds(ts), "y": values}), seed=config.seed)
    fit_seconds = time.perf_counter() - started

    trained = TrainedProphet(
        model=model,
        config=config,
        lookback=training_set.lookback,
        horizon=training_set.horizon,
        rho=0.0,
        train_hours=len(series),
        train_start_ns=int(ts[0]),
        train_end_ns=int(ts[-1]),
        fit_seconds=fit_seconds,
    )
    residuals = values - trained.prophet_at(ts)
    trained.train_residual_std = float(np.std(residuals))
    trained.rho = _ar1_coefficient(residuals, ts) if config.residual_ar else 0.0
    return trained


def bench_prophet_training(days: float = 365, seed: int = 0, config: ProphetConfig | None = None) -> dict[str, Any]:
    """Fit the default Prophet (+AR) on `days` of one simulated calm station (lookback 24, horizon 1) and score it.

    Reports the fit time and test RMSE with and without the AR(1) residual correction next to the
    baselines, on the same windows as `gru.bench_gru_training`.
    """
    from aero_assets.forecast.bench_run import bench_run

    run = bench_run(days, seed, lambda training_set: train_prophet(training_set, config))
    model = run.model
    return {
        "days": days,
        "prophet_fit_seconds": round(model.fit_seconds, 2),
        "prophet_rmse": run.rmse(model.predict(run.X_test, run.ts_test)),
        "prophet_plain_rmse": run.rmse(model.prophet_at(run.ts_test)),
        "rho": model.rho,
        "persistence_rmse": run.persistence_rmse,
        "seasonal_naive_rmse": run.seasonal_naive_rmse,
        "train_hours": model.train_hours,
    }
