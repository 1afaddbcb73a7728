"""Forecast domain: weather observations, per-station training sets, GRU and Prophet, a gated champion,
predictions, drift reports and the sensors that retrain on drift (seed 004)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.forecast.assets import build_training_assets
    from aero_assets.forecast.monitor import RetrainPolicy
    from aero_assets.forecast.monitoring_assets import build_monitor_assets
    from aero_assets.forecast.observations import build_observation_assets
    from aero_assets.forecast.settings import load_forecast_settings
    from sensors.drift_retrain import build_drift_retrain_sensor, build_routine_retrain_schedule
    from sensors.weather_observations import build_weather_sensor

    settings = load_forecast_settings()
    policy = RetrainPolicy(cooldown_h=settings.retrain_cooldown_h, min_post_onset_h=settings.retrain_min_post_onset_h,
                           pre_onset_days=settings.retrain_pre_onset_days)
    return dg.Definitions(
        assets=[*build_observation_assets(topics), *build_training_assets(settings), *build_monitor_assets(settings)],
        sensors=[build_weather_sensor(topics.weather_observations), build_drift_retrain_sensor(policy)],
        schedules=[build_routine_retrain_schedule()])
