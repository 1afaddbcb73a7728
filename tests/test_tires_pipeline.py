"""The tire domain end to end on real parts: embedded broker, lake files, Dagster's own execution and sensor."""

from __future__ import annotations

import json
import time

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import TIRE_ALERTS, TIRE_READINGS, TIRE_WINDOWS, TIRES_HOUR_CHAIN
from aero_assets.tires.alerts_topic import published_alerts
from aero_assets.tires.assets import PUBLISHED_CHECK, RECONCILE_CHECK, WINDOW_COUNT_CHECK, hour_key
from aero_assets.tires.readings import HOUR_NS
from sensors.tires_readings import LandingPolicy, build_tires_sensor
from tests.tires_data import S, fleet, publish

pytestmark = pytest.mark.broker


def _hour_start(offset_hours: int = 1) -> int:
    return (time.time_ns() // HOUR_NS - offset_hours) * HOUR_NS


def test_sensor_lands_then_refreshes_every_touched_hour_and_late_data_rematerializes_its_hour(
        settings, kafka, publisher, instance):
    defs = build_definitions(settings)
    h0 = _hour_start(2)
    first = fleet(h0 + 3400 * S, 400, vehicles=2)  # spans the boundary into the next hour
    publish(publisher, settings.topics.tires_raw, first, per_message=4)

    sensor = build_tires_sensor(settings.topics.tires_raw, LandingPolicy(min_messages=1, max_wait_s=3600))
    ctx = dg.build_sensor_context(instance=instance, resources={"kafka": defs.resources["kafka"]})
    result = sensor(ctx)
    assert [r.asset_selection for r in result.run_requests] == [[TIRE_READINGS]]
    landing = dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources,
                             selection=[TIRE_READINGS])
    meta = landing.asset_materializations_for_node("tires__readings")[0].metadata
    assert meta["dagster/row_count"].value == first.num_rows
    assert meta["hours_touched"].value == [hour_key(h0), hour_key(h0 + HOUR_NS)]

    ctx = dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                  resources={"kafka": defs.resources["kafka"]})
    result = sensor(ctx)
    hours = sorted(r.partition_key for r in result.run_requests if r.asset_selection == TIRES_HOUR_CHAIN)
    assert hours == [hour_key(h0), hour_key(h0 + HOUR_NS)]
    for hour in hours:
        res = dg.materialize([defs.get_assets_def(k) for k in TIRES_HOUR_CHAIN], instance=instance,
                             resources=defs.resources, partition_key=hour)
        assert res.success
        checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert checks[WINDOW_COUNT_CHECK].passed
        assert checks[PUBLISHED_CHECK].passed

    lake = settings.lake_dir
    wins = pq.read_table(next((lake / "tires" / "window_aggregates").glob("hour=*/data.parquet")))
    assert wins.num_rows > 0
    total = sum(int(pc.sum(pq.read_table(p)["reading_count"]).as_py())
                for p in (lake / "tires" / "window_aggregates").glob("hour=*/data.parquet"))
    assert total == first.num_rows

    # the planted puncture and overheat are alert episodes, published on tires.alerts by the asset
    eps = [pq.read_table(p) for p in (lake / "tires" / "alerts").glob("hour=*/data.parquet")]
    types = sorted(t for e in eps for t in e["alert_type"].to_pylist())
    assert types == ["high_temperature", "low_pressure", "rapid_pressure_loss"]
    on_topic = published_alerts(kafka, settings.topics.tires_alerts)
    assert {a for e in eps for a in e["alert_id"].to_pylist()} == set(on_topic)

    # a late reading for the first hour lands later and re-materializes that hour only
    late = fleet(h0 + 10 * S, 1, vehicles=1, puncture_at=None, overheat_at=None)
    publish(publisher, settings.topics.tires_raw, late)
    ctx = dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                  resources={"kafka": defs.resources["kafka"]})
    result = sensor(ctx)
    assert any(r.asset_selection == [TIRE_READINGS] for r in result.run_requests)
    landing = dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources,
                             selection=[TIRE_READINGS])
    ctx = dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                  resources={"kafka": defs.resources["kafka"]})
    result = sensor(ctx)
    assert [r.partition_key for r in result.run_requests] == [hour_key(h0)]
    res = dg.materialize([defs.get_assets_def(TIRE_WINDOWS)], instance=instance, resources=defs.resources,
                         partition_key=hour_key(h0))
    counts = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert counts[WINDOW_COUNT_CHECK].passed
    assert counts[WINDOW_COUNT_CHECK].metadata["landed_readings"].value == \
        int((first["ts"].cast("int64").to_numpy() < h0 + HOUR_NS).sum()) + late.num_rows


def test_reconciliation_fails_listing_an_episode_the_live_path_published_but_batch_does_not_find(
        settings, kafka, publisher, instance):
    defs = build_definitions(settings)
    h0 = _hour_start(1)
    table = fleet(h0 + 100 * S, 300, vehicles=1, overheat_at=None)
    publish(publisher, settings.topics.tires_raw, table, per_message=4)
    dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources,
                   selection=[TIRE_READINGS])
    # the live path "has read" everything and published one episode that does not exist
    consumer = kafka.consumer("aero-live-tires-alerts")
    from confluent_kafka import TopicPartition
    consumer.commit(offsets=[TopicPartition(settings.topics.tires_raw, 0, 10_000)], asynchronous=False)
    consumer.close()
    opened = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h0 / 1e9 + 5))
    bogus = {"alert_id": "bogus0000000000000000000", "status": "open", "alert_type": "low_pressure",
             "opened_at": opened, "source": "0/5"}  # from a reading both paths have read
    ahead = {"alert_id": "ahead0000000000000000000", "status": "open", "alert_type": "low_pressure",
             "opened_at": opened, "source": "0/999999"}  # from a reading not landed yet: not compared
    for msg in (bogus, ahead):
        publisher.send(settings.topics.tires_alerts, json.dumps(msg).encode(), msg["alert_id"])
    res = dg.materialize([defs.get_assets_def(TIRE_ALERTS)], instance=instance, resources=defs.resources,
                         partition_key=hour_key(h0), raise_on_error=False)
    check = {e.check_name: e for e in res.get_asset_check_evaluations()}[RECONCILE_CHECK]
    assert not check.passed
    assert check.metadata["only_in_live"].value == ["bogus0000000000000000000"]
    # the batch episodes the live path "missed" were published by the asset and are listed as only in batch
    assert len(check.metadata["only_in_batch"].value) == 2


@pytest.mark.postgres
def test_with_a_serving_url_the_hour_fills_postgres_and_rematerializing_never_duplicates(
        settings, kafka, publisher, instance, serving_pg_url, monkeypatch):
    import psycopg2

    monkeypatch.setenv("AERO_SERVING_PG_URL", serving_pg_url)
    from resources.settings import load_settings
    defs = build_definitions(load_settings({"AERO_HOME": str(settings.home),
                                            "AERO_KAFKA_BOOTSTRAP": settings.kafka.bootstrap_servers,
                                            "AERO_SERVING_PG_URL": serving_pg_url}))
    h0 = _hour_start(1)
    publish(publisher, settings.topics.tires_raw, fleet(h0 + 60 * S, 300, vehicles=2), per_message=4)
    dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources)
    for _ in range(2):
        res = dg.materialize([defs.get_assets_def(k) for k in TIRES_HOUR_CHAIN], instance=instance,
                             resources=defs.resources, partition_key=hour_key(h0))
        assert res.success
    windows = pq.read_table(next((settings.lake_dir / "tires" / "window_aggregates").glob("hour=*/data.parquet")))
    alerts = pq.read_table(next((settings.lake_dir / "tires" / "alerts").glob("hour=*/data.parquet")))
    with psycopg2.connect(serving_pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(reading_count) FROM tire_aggregations")
        assert cur.fetchone() == (windows.num_rows, 2 * 4 * 300)
        cur.execute("SELECT count(*) FROM tire_alerts")
        assert cur.fetchone()[0] == alerts.num_rows == 3


def test_hostile_readings_go_to_the_dlq_with_their_reason_and_the_good_ones_land_once(
        settings, kafka, publisher, instance, warehouse):
    from aero_assets.definitions import warehouse_views
    from resources import LakeResource

    defs = build_definitions(settings)
    h0 = _hour_start(1)
    good = fleet(h0 + 60 * S, 30, vehicles=1, puncture_at=None, overheat_at=None)
    publish(publisher, settings.topics.tires_raw, good, per_message=4)
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h0 / 1e9 + 120))
    hostile = [
        (b"{not json", "fleet-v000"),
        (json.dumps({"vehicle_id": "fleet-v000", "tire": "XL", "pressure_kpa": 230, "temperature_c": 40,
                     "ts": ts}).encode(), "fleet-v000"),
        (json.dumps({"vehicle_id": "../../etc/passwd", "tire": "FL", "pressure_kpa": 230, "temperature_c": 40,
                     "ts": ts}).encode(), "../../etc/passwd"),
        (json.dumps({"vehicle_id": "fleet-v000", "tire": "FL", "pressure_kpa": 9e9, "temperature_c": 40,
                     "ts": ts}).encode(), "fleet-v000"),
        (json.dumps({"vehicle_id": "fleet-v000", "tire": "FL", "pressure_kpa": 230, "temperature_c": 40,
                     "ts": "2099-01-01T00:00:00Z"}).encode(), "fleet-v000"),
    ]
    for value, key in hostile:
        publisher.send(settings.topics.tires_raw, value, key, [("content-type", b"application/json")])
    res = dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources)
    meta = res.asset_materializations_for_node("tires__readings")[0].metadata
    assert meta["dagster/row_count"].value == good.num_rows
    assert meta["dlq_messages"].value == len(hostile)
    reasons = meta["landing"].value["dlq_reasons"]
    assert any("invalid JSON" in r for r in reasons) and any("tire must be one of" in r for r in reasons)
    # landing again lands nothing twice
    again = dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources)
    assert again.asset_materializations_for_node("tires__readings")[0].metadata["dagster/row_count"].value == 0
    # the hour's alerts are queryable as tires.alerts once views exist
    dg.materialize([defs.get_assets_def(k) for k in TIRES_HOUR_CHAIN], instance=instance, resources=defs.resources,
                   partition_key=hour_key(h0))
    warehouse.ensure_views(warehouse_views(LakeResource(root=str(settings.lake_dir)), settings.topics))
    with warehouse.fast_connection() as conn:
        assert conn.execute("select count(*) from tires.readings").fetchone()[0] == good.num_rows
        assert conn.execute("select count(*) from tires.alerts").fetchone()[0] == 0
        assert conn.execute("select sum(reading_count) from tires.window_aggregates").fetchone()[0] == good.num_rows


def test_hours_outside_the_partitions_never_break_the_sensor_and_a_future_hour_waits_its_turn(
        settings, kafka, publisher, instance):
    defs = build_definitions(settings)
    next_hour = (time.time_ns() // HOUR_NS + 1) * HOUR_NS
    old = 1_735_689_600 * S  # 2025-01-01, before the first hourly partition
    for ts in (old, next_hour):  # the decoder allows a sensor clock up to an hour ahead
        publish(publisher, settings.topics.tires_raw, fleet(ts, 2, vehicles=1, puncture_at=None, overheat_at=None))
    dg.materialize([defs.get_assets_def(TIRE_READINGS)], instance=instance, resources=defs.resources)
    sensor = build_tires_sensor(settings.topics.tires_raw, LandingPolicy(min_messages=1, max_wait_s=3600))
    result = sensor(dg.build_sensor_context(instance=instance, resources={"kafka": defs.resources["kafka"]}))
    assert not [r for r in (getattr(result, "run_requests", None) or []) if r.asset_selection == TIRES_HOUR_CHAIN]
    assert json.loads(result.cursor)["pending"] == [hour_key(next_hour)]
