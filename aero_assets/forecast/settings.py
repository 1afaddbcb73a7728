"""Forecast domain settings from `AERO_FORECAST_*` variables: the defaults of the assets' and sensors' config.

A data engineer overrides any of them for one materialization in the launchpad; an operator sets
them for the deployment here. A bad value fails the code location load with the variable named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from resources.settings import bounded_floats


@dataclass(frozen=True)
class ForecastSettings:
    lookback_h: int = 24
    horizon_h: int = 1
    min_history_h: int = 168  # a week of hours: less gives too few windows to split three ways
    max_history_days: float = 365.0  # training reads at most this much of the newest history
    release_margin: float = 0.02  # the champion's RMSE must be <= 98 % of each baseline's
    gru_epochs: int = 40
    retrain_cooldown_h: float = 168.0  # station hours after a drift retrain in which drift asks for none
    retrain_min_post_onset_h: float = 96.0  # post-onset hours a drift retrain waits for
    retrain_pre_onset_days: float = 7.0  # history before the onset kept in a drift retrain's window
    recent_window_h: int = 48  # hours of inputs compared with the training reference (PSI, KS)


_VARS = {
    "AERO_FORECAST_LOOKBACK_H": ("lookback_h", 24, 24 * 14),
    "AERO_FORECAST_HORIZON_H": ("horizon_h", 1, 24),
    "AERO_FORECAST_MIN_HISTORY_H": ("min_history_h", 48, 24 * 365),
    "AERO_FORECAST_MAX_HISTORY_DAYS": ("max_history_days", 7, 3650),
    "AERO_FORECAST_RELEASE_MARGIN": ("release_margin", 0.0, 0.5),
    "AERO_FORECAST_GRU_EPOCHS": ("gru_epochs", 1, 500),
    "AERO_FORECAST_RETRAIN_COOLDOWN_H": ("retrain_cooldown_h", 0, 24 * 365),
    "AERO_FORECAST_RETRAIN_MIN_POST_ONSET_H": ("retrain_min_post_onset_h", 0, 24 * 60),
    "AERO_FORECAST_RETRAIN_PRE_ONSET_DAYS": ("retrain_pre_onset_days", 1, 365),
    "AERO_FORECAST_RECENT_WINDOW_H": ("recent_window_h", 12, 24 * 60),
}
_INTS = {"lookback_h", "horizon_h", "min_history_h", "gru_epochs", "recent_window_h"}


def load_forecast_settings(env: Mapping[str, str] | None = None) -> ForecastSettings:
    """Settings from the environment; a bad value raises `SettingsError` naming the variable and its range."""
    env = os.environ if env is None else env
    values = bounded_floats(env, _VARS)
    return ForecastSettings(**{k: round(v) if k in _INTS else v for k, v in values.items()})
