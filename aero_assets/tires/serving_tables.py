"""The two tables the seed's Grafana reads, `tire_aggregations` and `tire_alerts`, and how they are filled."""

from __future__ import annotations

import pyarrow as pa

from resources.serving import ServingResource

DDL = [
    """CREATE TABLE IF NOT EXISTS tire_aggregations (
        vehicle_id text NOT NULL, tire text NOT NULL,
        window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
        reading_count integer NOT NULL,
        avg_pressure_kpa double precision, min_pressure_kpa double precision, max_pressure_kpa double precision,
        avg_temperature_c double precision, min_temperature_c double precision, max_temperature_c double precision,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (vehicle_id, tire, window_start))""",
    "CREATE INDEX IF NOT EXISTS tire_aggregations_window_start ON tire_aggregations (window_start)",
    """CREATE TABLE IF NOT EXISTS tire_alerts (
        alert_id text PRIMARY KEY, vehicle_id text NOT NULL, tire text NOT NULL, alert_type text NOT NULL,
        opened_at timestamptz NOT NULL, last_at timestamptz NOT NULL, closed boolean NOT NULL,
        threshold double precision, peak_value double precision, duration_s double precision, readings integer,
        updated_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS tire_alerts_opened_at ON tire_alerts (opened_at)",
]
AGGREGATION_KEYS = ["vehicle_id", "tire", "window_start"]
ALERT_KEYS = ["alert_id"]
ALERT_COLUMNS = ["alert_id", "vehicle_id", "tire", "alert_type", "opened_at", "last_at", "closed", "threshold",
                 "peak_value", "duration_s", "readings"]


def serve_windows(serving: ServingResource, windows: pa.Table) -> int:
    serving.ensure_tables(DDL)
    return serving.upsert("tire_aggregations", windows, AGGREGATION_KEYS)


def serve_alerts(serving: ServingResource, episodes: pa.Table) -> int:
    serving.ensure_tables(DDL)
    return serving.upsert("tire_alerts", episodes.select(ALERT_COLUMNS), ALERT_KEYS)
