"""Tire fleet domain: pressure/temperature readings, 1-minute windows, alert episodes (seed 002)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.tires.assets import build_tires_assets
    from aero_assets.tires.settings import load_thresholds
    from sensors.tires_readings import build_tires_sensor

    return dg.Definitions(
        assets=build_tires_assets(topics, load_thresholds()),
        sensors=[build_tires_sensor(topics.tires_raw)],
    )
