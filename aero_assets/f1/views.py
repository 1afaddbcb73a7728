"""The f1 schema of the warehouse: telemetry, session events and `f1.lap_summaries`."""

from aero_assets.keys import F1, F1_LAP_SUMMARIES
from resources.lake import LakeResource
from resources.settings import Topics
from resources.warehouse import ViewSpec


def f1_views(lake: LakeResource, topics: Topics) -> list[ViewSpec]:
    return [
        ViewSpec(F1, "telemetry", lake.landing_dir(topics.f1_telemetry)),
        ViewSpec(F1, "session_events", lake.landing_dir(topics.f1_sessions)),
        ViewSpec(F1, "lap_summaries", lake.asset_dir(F1_LAP_SUMMARIES)),
    ]
