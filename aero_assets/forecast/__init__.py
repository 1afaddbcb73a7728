"""Forecast domain: weather observations, per-station training sets, GRU and Prophet, a gated champion (seed 004)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.forecast.assets import build_training_assets
    from aero_assets.forecast.observations import build_observation_assets
    from aero_assets.forecast.settings import load_forecast_settings

    return dg.Definitions(assets=[*build_observation_assets(topics), *build_training_assets(load_forecast_settings())])
