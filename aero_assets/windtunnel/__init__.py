"""Wind-tunnel domain: 72-channel runs from Kafka to the lake (seed 000)."""

import dagster as dg

from resources.settings import Topics


def build_defs(topics: Topics) -> dg.Definitions:
    from aero_assets.windtunnel.analytics import build_windtunnel_analytics
    from aero_assets.windtunnel.assets import build_windtunnel_landing
    from sensors.windtunnel_runs import build_windtunnel_run_sensor

    return dg.Definitions(
        assets=[*build_windtunnel_landing(topics), *build_windtunnel_analytics(topics)],
        sensors=[build_windtunnel_run_sensor(topics.windtunnel_runs, topics.windtunnel_samples)],
    )
