"""Propulsion test rig domain: CSV inbox and Kafka readings, quarantine, z-score anomalies, daily KPIs (seed 001)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.rig.assets import build_rig_assets
    from aero_assets.rig.settings import load_limits
    from sensors.rig_inbox import build_rig_inbox_sensor
    from sensors.rig_readings import build_rig_readings_sensor

    return dg.Definitions(
        assets=build_rig_assets(topics, load_limits()),
        sensors=[build_rig_readings_sensor(topics.rig_readings), build_rig_inbox_sensor()],
    )
