"""The seed's PostgreSQL tables `rig_readings`, `rig_anomalies`, `rig_kpis`, and how a day fills them.

A day is written in one transaction per table: its old rows deleted, its new rows COPYed and
upserted on the natural key, so re-materializing a day never duplicates and never leaves a row
that is no longer there. With the TimescaleDB extension available, `rig_readings` is a hypertable
on `ts`; otherwise a plain table with a time index. Which one is reported in the metadata.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from resources.serving import ServingResource

READINGS_DDL = """CREATE TABLE IF NOT EXISTS rig_readings (
    rig_id text NOT NULL, ts timestamptz NOT NULL, temperature_c double precision, pressure_hpa double precision,
    uptime_h double precision, origin text, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rig_id, ts))"""
DDL = [
    """CREATE TABLE IF NOT EXISTS rig_anomalies (
        rig_id text NOT NULL, ts timestamptz NOT NULL, temperature_c double precision, pressure_hpa double precision,
        temperature_zscore double precision, pressure_zscore double precision, temperature_alert boolean,
        pressure_alert boolean, anomaly_reason text, updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (rig_id, ts))""",
    "CREATE INDEX IF NOT EXISTS rig_anomalies_ts ON rig_anomalies (ts)",
    """CREATE TABLE IF NOT EXISTS rig_kpis (
        day date NOT NULL, rig_id text NOT NULL, readings integer, avg_temperature_c double precision,
        min_pressure_hpa double precision, max_pressure_hpa double precision, alert_count integer,
        uptime_hours double precision, updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (day, rig_id))""",
]
READING_COLUMNS = ["rig_id", "ts", "temperature_c", "pressure_hpa", "uptime_h", "origin"]
ANOMALY_COLUMNS = ["rig_id", "ts", "temperature_c", "pressure_hpa", "temperature_zscore", "pressure_zscore",
                   "temperature_alert", "pressure_alert", "anomaly_reason"]
KPI_COLUMNS = ["day", "rig_id", "readings", "avg_temperature_c", "min_pressure_hpa", "max_pressure_hpa",
               "alert_count", "uptime_hours"]


def _bounds(day: str) -> tuple[str, str]:
    d = datetime.strptime(day, "%Y-%m-%d")
    return f"{d:%Y-%m-%d}T00:00:00Z", f"{d + timedelta(days=1):%Y-%m-%d}T00:00:00Z"


def ensure_readings_table(serving: ServingResource) -> str:
    """Create `rig_readings` (a hypertable where TimescaleDB is available); returns which kind it is."""
    timescale = serving.has_extension("timescaledb")
    statements = [READINGS_DDL]
    if timescale:
        statements = ["CREATE EXTENSION IF NOT EXISTS timescaledb", READINGS_DDL,
                      "SELECT create_hypertable('rig_readings', 'ts', if_not_exists => TRUE, migrate_data => TRUE)"]
    else:
        statements.append("CREATE INDEX IF NOT EXISTS rig_readings_ts ON rig_readings (ts)")
    serving.ensure_tables(statements + DDL)
    return "TimescaleDB hypertable" if timescale else "plain table with a time index (no TimescaleDB)"


def serve_readings(serving: ServingResource, clean: pa.Table, day: str) -> tuple[int, str]:
    kind = ensure_readings_table(serving)
    n = serving.upsert("rig_readings", clean.select(READING_COLUMNS), ["rig_id", "ts"],
                       replace_where=("ts", *_bounds(day)))
    return n, kind


def serve_anomalies(serving: ServingResource, found: pa.Table, day: str) -> tuple[int, str]:
    ensure_readings_table(serving)
    n = serving.upsert("rig_anomalies", found.select(ANOMALY_COLUMNS), ["rig_id", "ts"],
                       replace_where=("ts", *_bounds(day)))
    return n, "rig_anomalies"


def serve_kpis(serving: ServingResource, kpis: pa.Table, day: str) -> tuple[int, str]:
    ensure_readings_table(serving)
    n = serving.upsert("rig_kpis", kpis.select(KPI_COLUMNS), ["day", "rig_id"], replace_where=("day", day, _next(day)))
    return n, "rig_kpis"


def _next(day: str) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
