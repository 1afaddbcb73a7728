"""Physical limits of `weather.observations` from `AERO_WEATHER_*` variables (defaults: what air on Earth does).

A reading outside is a broken sensor or a unit mistake (Kelvin, Fahrenheit), never weather, and goes to
the DLQ with its reason. A bad value fails the first command that reads it, naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from resources.settings import SettingsError, bounded_floats


@dataclass(frozen=True)
class WeatherLimits:
    temperature_min_c: float = -90.0  # the coldest air measured (Vostok, -89.2 °C)
    temperature_max_c: float = 60.0  # the hottest (Death Valley, 56.7 °C)
    windspeed_max_ms: float = 120.0  # above the strongest gust measured (113 m/s)
    pressure_min_hpa: float = 850.0  # sea-level pressure of the deepest typhoon: 870 hPa
    pressure_max_hpa: float = 1100.0  # the highest: 1084 hPa
    # an observation dated further ahead of the landing's clock is refused: one reading stamped 2100 would
    # stretch the station's hourly grid by 70 years and anchor its training window there. Generous, since a
    # simulation faster than real time runs ahead (the demo's at most 56 days)
    max_ahead_days: float = 400.0


_VARS = {
    "AERO_WEATHER_TEMPERATURE_MIN_C": ("temperature_min_c", -150.0, 100.0),
    "AERO_WEATHER_TEMPERATURE_MAX_C": ("temperature_max_c", -150.0, 100.0),
    "AERO_WEATHER_WINDSPEED_MAX_MS": ("windspeed_max_ms", 1.0, 500.0),
    "AERO_WEATHER_PRESSURE_MIN_HPA": ("pressure_min_hpa", 0.0, 2000.0),
    "AERO_WEATHER_PRESSURE_MAX_HPA": ("pressure_max_hpa", 0.0, 2000.0),
    "AERO_WEATHER_MAX_AHEAD_DAYS": ("max_ahead_days", 0.01, 36_500.0),
}


def load_weather_limits(env: Mapping[str, str] | None = None) -> WeatherLimits:
    """Limits from the environment; a bad value raises `SettingsError` naming the variable and what to set."""
    env = os.environ if env is None else env
    limits = WeatherLimits(**bounded_floats(env, _VARS))
    for lo, hi in (("temperature_min_c", "temperature_max_c"), ("pressure_min_hpa", "pressure_max_hpa")):
        if getattr(limits, lo) >= getattr(limits, hi):
            lo_var = next(v for v, (f, _, _) in _VARS.items() if f == lo)
            hi_var = next(v for v, (f, _, _) in _VARS.items() if f == hi)
            raise SettingsError(f"{lo_var}={getattr(limits, lo):g} is not below {hi_var}={getattr(limits, hi):g}: "
                                "set the lower limit below the upper one.")
    return limits
