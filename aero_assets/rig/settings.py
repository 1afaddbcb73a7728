"""Limits of the rig domain from `AERO_RIG_*` variables (defaults: the seed's thresholds).

They are the defaults of the assets' Dagster config, so a data engineer can override any of them
for one materialization in the launchpad, and an operator for the whole deployment here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from resources.settings import bounded_floats


@dataclass(frozen=True)
class RigLimits:
    temperature_z: float = 2.0  # the seed's Z_SCORE_THRESHOLD_TEMPERATURE
    pressure_z: float = 2.5  # Z_SCORE_THRESHOLD_PRESSURE
    temperature_max_c: float = 80.0  # TEMPERATURE_THRESHOLD_HIGH
    pressure_max_hpa: float = 1100.0  # PRESSURE_THRESHOLD_HIGH
    quarantine_rate_max: float = 0.05  # above this share of a day's rows quarantined, the check warns


_VARS = {
    "AERO_RIG_TEMPERATURE_Z": ("temperature_z", 0.5, 100.0),
    "AERO_RIG_PRESSURE_Z": ("pressure_z", 0.5, 100.0),
    "AERO_RIG_TEMPERATURE_MAX_C": ("temperature_max_c", -60.0, 300.0),
    "AERO_RIG_PRESSURE_MAX_HPA": ("pressure_max_hpa", 0.0, 3000.0),
    "AERO_RIG_QUARANTINE_RATE_MAX": ("quarantine_rate_max", 0.0, 1.0),
}


def load_limits(env: Mapping[str, str] | None = None) -> RigLimits:
    """Limits from the environment; a bad value raises `SettingsError` naming the variable."""
    env = os.environ if env is None else env
    values = bounded_floats(env, _VARS)
    return RigLimits(**values)
