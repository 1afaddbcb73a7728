"""The rig domain end to end on real parts: simulated rigs on the embedded broker and a CSV in the inbox
-> sensors -> landing -> clean readings with a quarantine that loses nothing -> anomalies -> KPIs ->
processed CSV, DuckDB views and real Postgres serving tables."""

from __future__ import annotations

import dagster as dg
import duckdb
import psycopg2
import pyarrow.parquet as pq
import pytest

from aero_assets.definitions import build_definitions, warehouse_views
from aero_assets.keys import RIG_DAY_CHAIN, RIG_READINGS
from aero_assets.rig.assets import BALANCE_CHECK, KPI_CHECK, QUARANTINE_CHECK
from aero_assets.simulators.rig_publish import simulate_rig
from resources import LakeResource, WarehouseResource, load_settings
from sensors.kafka_events import LandingPolicy
from sensors.rig_inbox import build_rig_inbox_sensor
from sensors.rig_readings import build_rig_readings_sensor

pytestmark = [pytest.mark.broker, pytest.mark.postgres]
CSV = (b"timestamp,temperature,pressure,uptime\n"
       b"2026-11-30T10:00:00Z,55.0,1010.0,100.0\n"
       b"2026-11-30T10:06:00Z,55.2,1010.2,100.1\n"
       b"2026-11-30T10:12:00Z,abc,1010.4,100.2\n"   # unparseable
       b"2026-11-30T10:18:00Z,55.4,1010.6\n"        # a field short
       b"2026-11-30T10:24:00Z,-400,1010.8,100.4\n"  # impossible
       b"2026-11-30T10:06:00Z,55.2,1010.2,100.1\n")  # duplicate of line 3


def _tick(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return sensor(ctx)


def _run(instance, defs, req):
    return dg.materialize([defs.get_assets_def(k) for k in req.asset_selection], instance=instance,
                          resources=defs.resources, partition_key=req.partition_key, run_config=req.run_config,
                          raise_on_error=False)


def test_rig_readings_and_a_csv_become_clean_readings_anomalies_and_kpis(tmp_path, broker, instance,
                                                                        serving_pg_url):
    settings = load_settings({"AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap,
                              "AERO_SERVING_PG_URL": serving_pg_url})
    import os

    os.environ["AERO_SERVING_PG_URL"] = serving_pg_url  # the resource reads it from the environment at run time
    try:
        defs = build_definitions(settings)
        summary = simulate_rig(settings, rigs=2, hours=30, faults=True, seed=3, progress=False)
        inbox = settings.home / "inbox" / "rig"
        inbox.mkdir(parents=True)
        (inbox / "rig-09__nov30.csv").write_bytes(CSV)
        (inbox / "rig-09__nov30.csv.done").write_bytes(b"")
        (inbox / "broken.csv").write_bytes(b"time;temp\n1;2\n")
        (inbox / "broken.csv.done").write_bytes(b"")

        lake = defs.resources["lake"]
        kafka_sensor = build_rig_readings_sensor(settings.topics.rig_readings,
                                                 LandingPolicy(min_messages=1, max_wait_s=10**6))
        file_sensor = build_rig_inbox_sensor(settle_s=3600)
        r_files = _tick(file_sensor, instance, {"lake": lake})
        assert sorted(r.tags["aero/file"] for r in r_files.run_requests) == ["broken.csv", "rig-09__nov30.csv"]
        r_kafka = _tick(kafka_sensor, instance, {"kafka": defs.resources["kafka"]})
        assert [r.asset_selection for r in r_kafka.run_requests] == [[RIG_READINGS]]
        for req in [*r_files.run_requests, *r_kafka.run_requests]:
            assert _run(instance, defs, req).success
        assert (inbox / "rejected" / "broken.csv.reason.txt").exists()
        assert (inbox / "processed" / "rig-09__nov30.csv").exists()

        days = _tick(kafka_sensor, instance, {"kafka": defs.resources["kafka"]}, r_kafka.cursor)
        day_reqs = [r for r in days.run_requests if r.asset_selection == RIG_DAY_CHAIN]
        assert "2026-11-30" in {r.partition_key for r in day_reqs} and len(day_reqs) >= 2
        total_in = total_clean = total_q = 0
        for req in day_reqs:
            res = _run(instance, defs, req)
            assert res.success, req.partition_key
            checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
            assert checks[BALANCE_CHECK].passed, checks[BALANCE_CHECK].description
            assert checks[KPI_CHECK].passed
            meta = res.asset_materializations_for_node("rig__clean_readings")[0].metadata
            total_in += meta["input_rows"].value
            total_clean += meta["dagster/row_count"].value
            total_q += meta["quarantined"].value
            assert QUARANTINE_CHECK in checks
        assert total_in == total_clean + total_q == summary["readings"] + 6, "every landed row is accounted for"

        # the CSV's bad lines are in the quarantine with their reasons and lines
        # (a line too short has no timestamp: it belongs to the day it was landed, not to 2026-11-30)
        q = [r for p in (settings.lake_dir / "rig" / "quarantine").glob("day=*/data.parquet")
             for r in pq.read_table(p).to_pylist()]
        csv_q = {r["origin"].rsplit(":", 1)[1]: r["reason"] for r in q if r["origin"].startswith("inbox/rig/")}
        assert set(csv_q) == {"4", "5", "6", "7"}
        assert "not a number" in csv_q["4"] and "field" in csv_q["5"] and "duplicate" in csv_q["7"]
        assert (settings.home / "exports" / "rig" / "2026-11-30.csv").read_text().startswith(
            "\"ts\",\"rig_id\",\"temperature_c\"")

        # queryable: rig.quarantine and friends in the warehouse
        WarehouseResource(database=str(settings.warehouse_path)).ensure_views(
            warehouse_views(LakeResource(root=str(settings.lake_dir)), settings.topics))
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            assert con.execute("select count(*) from rig.quarantine").fetchone()[0] == total_q
            assert con.execute("select count(*) from rig.kpis").fetchone()[0] >= 3

        # the Postgres serving tables filled, and re-materializing a day does not duplicate
        with psycopg2.connect(serving_pg_url) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from rig_readings")
            assert cur.fetchone()[0] == total_clean
            cur.execute("select count(*) from rig_kpis")
            n_kpis = cur.fetchone()[0]
        assert _run(instance, defs, day_reqs[0]).success
        with psycopg2.connect(serving_pg_url) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from rig_readings")
            assert cur.fetchone()[0] == total_clean
            cur.execute("select count(*) from rig_kpis")
            assert cur.fetchone()[0] == n_kpis
    finally:
        os.environ.pop("AERO_SERVING_PG_URL", None)
