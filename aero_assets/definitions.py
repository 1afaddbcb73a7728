"""The one Definitions object of the `aero` code location.

Each domain builds its own `Definitions`; this module merges them and supplies every resource
once (Definitions.merge rejects two different objects under one resource key). Settings are read
and validated here, so a bad `AERO_*` variable fails the code location load with a message that
says what to fix, rather than a run an hour later.
"""

from __future__ import annotations

import dagster as dg

from aero_assets import f1, forecast, rig, tires, windtunnel
from resources import (
    KafkaResource,
    LakeResource,
    ModelStoreResource,
    ServingResource,
    Settings,
    Topics,
    WarehouseResource,
    load_settings,
)
from resources.warehouse import ViewSpec


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    kafka = KafkaResource.from_settings(settings.kafka)
    if settings.kafka.sasl_password:
        # keep the secret out of the UI and the run config: resolved from the environment at run time
        kafka = kafka.model_copy(update={"sasl_password": dg.EnvVar("AERO_KAFKA_SASL_PASSWORD")})
    return {
        "kafka": kafka,
        "lake": LakeResource(root=str(settings.lake_dir), exports_root=str(settings.home / "exports"),
                             inbox_root=str(settings.home / "inbox")),
        "warehouse": WarehouseResource(database=str(settings.warehouse_path)),
        "model_store": ModelStoreResource(root=str(settings.models_dir)),
        # off unless AERO_SERVING_PG_URL is set; read from the environment at run time (it may hold a password)
        "serving": ServingResource(url=dg.EnvVar("AERO_SERVING_PG_URL") if settings.serving_pg_url else None),
    }


def warehouse_views(lake: LakeResource, topics: Topics) -> list[ViewSpec]:
    """Every domain's DuckDB views over the lake: one sensor keeps them all in place."""
    from aero_assets.f1.views import f1_views
    from aero_assets.rig.views import rig_views
    from aero_assets.tires.views import tires_views
    from aero_assets.windtunnel.views import windtunnel_views

    return [*windtunnel_views(lake, topics), *tires_views(lake, topics), *f1_views(lake, topics),
            *rig_views(lake, topics)]


def build_definitions(settings: Settings) -> dg.Definitions:
    from sensors.housekeeping import run_retention, run_retention_schedule
    from sensors.nightly import build_nightly_schedule
    from sensors.warehouse_views import build_warehouse_views_sensor

    return dg.Definitions.merge(
        windtunnel.build_defs(settings.topics),
        tires.build_defs(settings.topics),
        f1.build_defs(settings.topics),
        rig.build_defs(settings.topics),
        forecast.build_defs(settings.topics),
        dg.Definitions(sensors=[build_warehouse_views_sensor(lambda lake: warehouse_views(lake, settings.topics))],
                       schedules=[build_nightly_schedule(settings.nightly_timezone), run_retention_schedule],
                       jobs=[run_retention]),
        # one process per run, steps in order: a chain of six steps pays the code-load cost once
        # (pools still apply in-process, so two landings of one topic never overlap)
        dg.Definitions(resources=build_resources(settings), executor=dg.in_process_executor),
    )


defs = build_definitions(load_settings())
