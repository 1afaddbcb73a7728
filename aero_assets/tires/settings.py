"""Alert thresholds of the tire domain from `AERO_TIRES_*` variables (defaults: the seed's 200 kPa / 90 °C)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from aero_assets.tires.episodes import Thresholds
from resources.settings import bounded_floats

_VARS = {
    "AERO_TIRES_LOW_PRESSURE_KPA": ("low_pressure_kpa", 0.0, 1000.0),
    "AERO_TIRES_HIGH_TEMPERATURE_C": ("high_temperature_c", -60.0, 250.0),
    "AERO_TIRES_RAPID_LOSS_KPA_PER_MIN": ("rapid_loss_kpa_per_min", 0.1, 10_000.0),
    "AERO_TIRES_RAPID_LOSS_WINDOW_S": ("rapid_loss_window_s", 2.0, 3600.0),
    "AERO_TIRES_ALERT_CLEAR_S": ("clear_s", 1.0, 3600.0),
}


def load_thresholds(env: Mapping[str, str] | None = None) -> Thresholds:
    """Thresholds from the environment; a bad value raises `SettingsError` naming the variable."""
    env = os.environ if env is None else env
    values = bounded_floats(env, _VARS)
    return Thresholds(**values)
