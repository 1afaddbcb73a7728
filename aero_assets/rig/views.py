"""The rig schema of the warehouse: readings (both sources), clean readings, `rig.quarantine`, anomalies, KPIs."""

from aero_assets.keys import RIG, RIG_ANOMALIES, RIG_CLEAN, RIG_KPIS
from resources.lake import LakeResource
from resources.settings import Topics
from resources.warehouse import ViewSpec


def rig_views(lake: LakeResource, topics: Topics) -> list[ViewSpec]:
    return [
        ViewSpec(RIG, "readings_kafka", lake.landing_dir(topics.rig_readings)),
        ViewSpec(RIG, "readings_csv", lake.asset_dir("rig/readings")),
        ViewSpec(RIG, "quarantine", lake.asset_dir("rig/quarantine")),
        *(ViewSpec(RIG, key.path[-1], lake.asset_dir(key)) for key in (RIG_CLEAN, RIG_ANOMALIES, RIG_KPIS)),
    ]
