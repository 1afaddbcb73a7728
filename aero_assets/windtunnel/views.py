"""The wind-tunnel schema of the warehouse: one DuckDB view per lake dataset analysts query."""

from aero_assets.keys import AERO_METRICS, PROCESSED_RUN, QC_REPORT, RAW_RUN, RUN_COMPARISON, WINDTUNNEL
from resources.lake import LakeResource
from resources.settings import Topics
from resources.warehouse import ViewSpec


def windtunnel_views(lake: LakeResource, topics: Topics) -> list[ViewSpec]:
    assets = [RAW_RUN, QC_REPORT, PROCESSED_RUN, AERO_METRICS, RUN_COMPARISON]
    return [
        *(ViewSpec(WINDTUNNEL, key.path[-1], lake.asset_dir(key)) for key in assets),
        ViewSpec(WINDTUNNEL, "run_events", lake.landing_dir(topics.windtunnel_runs)),
    ]
