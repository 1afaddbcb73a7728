"""F1 domain: 100 Hz Silverstone telemetry, lap summaries per session, laps released to Kafka (seed 003)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.f1.assets import build_f1_assets
    from aero_assets.f1.settings import load_limits
    from sensors.f1_telemetry import build_f1_sensor

    return dg.Definitions(
        assets=build_f1_assets(topics, load_limits()),
        sensors=[build_f1_sensor(topics.f1_telemetry, topics.f1_sessions)],
    )
