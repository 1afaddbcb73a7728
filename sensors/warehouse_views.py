"""`warehouse_views_sensor`: creates the DuckDB views that assets could not, once the file is free.

Assets refresh their view with a short timeout and leave a marker when an analyst holds the
warehouse file; this sensor retries those (and creates any view whose lake data exists but whose
view does not, e.g. after the DuckDB file was deleted). It moves no data and requests no runs.
"""

from collections.abc import Callable

import dagster as dg

from resources.lake import LakeResource
from resources.warehouse import ViewSpec, WarehouseBusy, WarehouseResource, WarehouseUnusable


def build_warehouse_views_sensor(view_specs: Callable[[LakeResource], list[ViewSpec]],
                                 minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    @dg.sensor(
        name="warehouse_views_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Creates DuckDB views over the lake that assets could not create because the "
                    "warehouse file was held by another process.",
    )
    def warehouse_views_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                               warehouse: WarehouseResource) -> dg.SkipReason:
        try:
            created = warehouse.ensure_views(view_specs(lake))
        except WarehouseBusy as exc:
            return dg.SkipReason(f"{exc}; views will be created on a later tick.")
        except WarehouseUnusable as exc:
            context.log.error(str(exc))
            return dg.SkipReason(str(exc))
        if created:
            context.log.info(f"created DuckDB views: {', '.join(created)}")
            return dg.SkipReason(f"Created views {', '.join(created)}.")
        return dg.SkipReason("Every view over the lake exists.")

    return warehouse_views_sensor
