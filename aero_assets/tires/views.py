"""The tires schema of the warehouse: readings, window_aggregates, alerts (`tires.alerts`), fleet_status."""

from aero_assets.keys import TIRE_ALERTS, TIRE_FLEET_STATUS, TIRE_WINDOWS, TIRES
from resources.lake import LakeResource
from resources.settings import Topics
from resources.warehouse import ViewSpec


def tires_views(lake: LakeResource, topics: Topics) -> list[ViewSpec]:
    return [
        ViewSpec(TIRES, "readings", lake.landing_dir(topics.tires_raw)),
        *(ViewSpec(TIRES, key.path[-1], lake.asset_dir(key)) for key in (TIRE_WINDOWS, TIRE_ALERTS, TIRE_FLEET_STATUS)),
    ]
