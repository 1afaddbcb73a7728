"""Limits of the F1 checks from `AERO_F1_*` variables (defaults: the issue's realism band and tolerances)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from resources.settings import SettingsError, bounded_floats


@dataclass(frozen=True)
class F1Limits:
    lap_time_min_s: float = 84.0  # the realism band of a flying lap at Silverstone
    lap_time_max_s: float = 100.0
    distance_tolerance: float = 0.01  # integrated lap distance vs the track length
    max_gap_ms: float = 50.0  # a sample period above this inside a lap is a gap


_VARS = {
    "AERO_F1_LAP_TIME_MIN_S": ("lap_time_min_s", 30.0, 600.0),
    "AERO_F1_LAP_TIME_MAX_S": ("lap_time_max_s", 30.0, 600.0),
    "AERO_F1_DISTANCE_TOLERANCE": ("distance_tolerance", 0.0001, 0.5),
    "AERO_F1_MAX_GAP_MS": ("max_gap_ms", 10.0, 10_000.0),
}


def load_limits(env: Mapping[str, str] | None = None) -> F1Limits:
    """Limits from the environment; a bad value raises `SettingsError` naming the variable."""
    env = os.environ if env is None else env
    values = bounded_floats(env, _VARS)
    limits = F1Limits(**values)
    if limits.lap_time_min_s >= limits.lap_time_max_s:
        raise SettingsError(f"AERO_F1_LAP_TIME_MIN_S ({limits.lap_time_min_s:g}) must be below "
                            f"AERO_F1_LAP_TIME_MAX_S ({limits.lap_time_max_s:g}).")
    return limits
