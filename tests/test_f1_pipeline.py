"""The F1 domain end to end on real parts: simulator -> embedded broker -> sensor -> landing -> lap
summaries with checks -> exactly one message per completed lap on `f1.analytics`."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from aero_assets.definitions import build_definitions, warehouse_views
from aero_assets.f1.assets import (
    COUNT_CHECK,
    DISTANCE_CHECK,
    GAP_CHECK,
    PUBLISHED_CHECK,
    REALISM_CHECK,
    analytics_counts,
)
from aero_assets.keys import F1_SESSION_CHAIN, F1_TELEMETRY, f1_sessions
from aero_assets.simulators.f1_publish import simulate_f1
from resources import LakeResource, WarehouseResource
from sensors.f1_telemetry import build_f1_sensor
from sensors.kafka_events import LandingPolicy

pytestmark = pytest.mark.broker


def _tick(sensor, instance, defs, cursor=None):
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 resources={"kafka": defs.resources["kafka"]}, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def _run_requests(instance, defs, result):
    """Do what the daemon does with a tick: add partitions, run each request."""
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    outs = []
    for r in result.run_requests:
        outs.append(dg.materialize([defs.get_assets_def(k) for k in r.asset_selection], instance=instance,
                                   resources=defs.resources, partition_key=r.partition_key,
                                   raise_on_error=False))
    return outs


def test_a_session_lands_is_summarised_and_each_completed_lap_is_published_once(settings, kafka, instance):
    defs = build_definitions(settings)
    sensor = build_f1_sensor(settings.topics.f1_telemetry, settings.topics.f1_sessions,
                             LandingPolicy(min_messages=10**9, max_wait_s=10**9))
    summary = simulate_f1(settings, laps=2, session_id="silverstone-t1", seed=3, kafka=kafka, progress=False)
    assert list(summary["laps"]) == [0, 1, 2]

    # tick 1: the session becomes a partition and its completed laps ask for a landing
    result = _tick(sensor, instance, defs)
    assert [r.asset_selection for r in result.run_requests] == [[F1_TELEMETRY]]
    assert result.dynamic_partitions_requests[0].partition_keys == ["silverstone-t1"]
    (landing,) = _run_requests(instance, defs, result)
    meta = landing.asset_materializations_for_node("f1__telemetry")[0].metadata
    assert meta["dagster/row_count"].value == summary["samples"]
    assert meta["sessions_touched"].value == {"silverstone-t1": 2}
    assert meta["sessions_finished"].value == ["silverstone-t1"]

    # tick 2: the landing touched the session: its summaries and release run
    result = _tick(sensor, instance, defs, result.cursor)
    assert [(r.partition_key, r.asset_selection) for r in result.run_requests] == [("silverstone-t1", F1_SESSION_CHAIN)]
    (run,) = _run_requests(instance, defs, result)
    assert run.success
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert {c: checks[c].passed for c in (COUNT_CHECK, DISTANCE_CHECK, GAP_CHECK, REALISM_CHECK, PUBLISHED_CHECK)} \
        == dict.fromkeys((COUNT_CHECK, DISTANCE_CHECK, GAP_CHECK, REALISM_CHECK, PUBLISHED_CHECK), True)
    lake = LakeResource(root=str(settings.lake_dir))
    laps = pq.read_table(lake.partition_dir("f1/lap_summaries", session_id="silverstone-t1") / "data.parquet")
    df = laps.to_pandas().set_index("lap")
    assert list(df.index) == [0, 1, 2]
    assert df.loc[0, "out_lap"] and not df.loc[1, "out_lap"]
    for lap in (1, 2):  # the summary's lap time is the simulator's, from interpolated line crossings
        assert df.loc[lap, "lap_time_s"] == pytest.approx(summary["laps"][lap], abs=0.01)
    meta = run.asset_materializations_for_node("f1__lap_summaries")[0].metadata
    for plot in ("track_map", "speed_trace", "gg_diagram"):
        assert meta[plot].value.startswith("![plot](data:image/png;base64,")
    assert "| 1 |" in meta["sector_times"].value

    on_topic = analytics_counts(kafka, settings.topics.f1_analytics, "silverstone-t1")
    assert on_topic == {"silverstone-t1:0": 1, "silverstone-t1:1": 1, "silverstone-t1:2": 1}

    # re-materializing the session publishes nothing a consumer would count twice
    again = dg.materialize([defs.get_assets_def(k) for k in F1_SESSION_CHAIN], instance=instance,
                           resources=defs.resources, partition_key="silverstone-t1")
    assert again.asset_materializations_for_node("f1__published_laps")[0].metadata[
        "published_by_this_run"].value == 0
    assert analytics_counts(kafka, settings.topics.f1_analytics) == on_topic
    msg = json.loads(_first_analytics_value(kafka, settings.topics.f1_analytics))
    assert msg["key"] == "silverstone-t1:0" and msg["session_id"] == "silverstone-t1"

    # f1.lap_summaries is queryable in the warehouse
    wh = WarehouseResource(database=str(settings.warehouse_path))
    wh.ensure_views(warehouse_views(lake, settings.topics))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        n, best = con.execute("select count(*), min(lap_time_s) filter (where not out_lap) "
                              "from f1.lap_summaries").fetchone()
        sessions = con.execute("select distinct session_id from f1.telemetry").fetchall()
    assert n == 3 and best == pytest.approx(min(summary["laps"][1], summary["laps"][2]), abs=0.01)
    assert sessions == [("silverstone-t1",)]


def test_a_lap_in_progress_is_not_summarised_until_the_next_lap_starts(settings, kafka, publisher, instance):
    defs = build_definitions(settings)
    simulate_f1(settings, laps=1, session_id="silverstone-t2", seed=4, kafka=kafka, progress=False, finish=False)
    instance.add_dynamic_partitions(f1_sessions.name, ["silverstone-t2"])
    dg.materialize([defs.get_assets_def(F1_TELEMETRY)], instance=instance, resources=defs.resources)
    res = dg.materialize([defs.get_assets_def(k) for k in F1_SESSION_CHAIN], instance=instance,
                         resources=defs.resources, partition_key="silverstone-t2")
    meta = res.asset_materializations_for_node("f1__lap_summaries")[0].metadata
    # no session_finished: lap 1 reached the line but nothing says it is over (the car may be slowing)
    assert meta["laps_in_progress"].value == [1]
    assert meta["dagster/row_count"].value == 1
    assert analytics_counts(kafka, settings.topics.f1_analytics) == {"silverstone-t2:0": 1}


def test_hostile_telemetry_goes_to_the_dlq_counted_and_the_session_still_summarises(settings, kafka, publisher,
                                                                                    instance):
    defs = build_definitions(settings)
    simulate_f1(settings, laps=1, session_id="silverstone-t3", seed=5, kafka=kafka, progress=False)
    topic = settings.topics.f1_telemetry
    good = {"session_id": "silverstone-t3", "ts": 1_790_000_000_000, "lap": 1, "distance_m": 1.0, "x_m": 0, "y_m": 0,
            "speed_kph": 100, "throttle": 1, "brake": 0, "gear": 3, "rpm": 9000, "g_lat": 0, "g_long": 0, "fuel_kg": 40}
    hostile = [({**good, "speed_kph": -5}, "silverstone-t3"), ({**good, "throttle": 1.5}, "silverstone-t3"),
               ({**good, "gear": 11}, "silverstone-t3"), ({**good, "session_id": "../../etc"}, "../../etc")]
    for obj, key in hostile:
        publisher.json(topic, obj, key=key)
    publisher.send(topic, b"{not json", b"silverstone-t3", [("content-type", b"application/json")])
    instance.add_dynamic_partitions(f1_sessions.name, ["silverstone-t3"])
    land = dg.materialize([defs.get_assets_def(F1_TELEMETRY)], instance=instance, resources=defs.resources)
    meta = land.asset_materializations_for_node("f1__telemetry")[0].metadata
    assert meta["dlq_messages"].value == 5
    reasons = " ".join(meta["dlq_reasons"].value)
    assert "speed_kph" in reasons and "throttle" in reasons and "gear" in reasons and "invalid JSON" in reasons
    assert not (settings.lake_dir / "landing" / topic / "session_id=..").exists()
    res = dg.materialize([defs.get_assets_def(k) for k in F1_SESSION_CHAIN], instance=instance,
                         resources=defs.resources, partition_key="silverstone-t3")
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert checks[COUNT_CHECK].passed and checks[DISTANCE_CHECK].passed


def _first_analytics_value(kafka, topic):
    from sensors.kafka_events import TopicCursor, read_events

    read = read_events(kafka, topic, TopicCursor(), kafka.identity(topic), max_messages=1)
    return read.events[0].value


@pytest.mark.parametrize("flush_first", [True, False], ids=["killed after delivery", "killed before delivery"])
def test_a_publisher_killed_mid_publication_leaves_each_lap_on_the_topic_exactly_once(settings, kafka, flush_first):
    """SIGKILL of the publishing process right after producing (delivered or not): the next publisher
    reads the topic and sends only what is missing - every lap key ends up on f1.analytics once."""
    import subprocess
    import sys

    from aero_assets.f1.assets import publish_once
    from tests.conftest import REPO

    rows = [{"session_id": "s-kill", "lap": lap, "lap_time_s": 89.0 + lap} for lap in range(4)]
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from aero_assets.f1.assets import publish_once
from resources import KafkaResource
def die(producer):
    if {flush_first!r}:
        producer.flush(10)
    os.kill(os.getpid(), signal.SIGKILL)
publish_once(KafkaResource(bootstrap_servers={kafka.bootstrap_servers!r}), Path({str(settings.lake_dir)!r}),
             {settings.topics.f1_analytics!r}, "s-kill", {rows!r}, after_produce=die)
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert child.returncode == -9, child.stderr.decode()
    due, after = publish_once(kafka, settings.lake_dir, settings.topics.f1_analytics, "s-kill", rows)
    assert after == {f"s-kill:{lap}": 1 for lap in range(4)}
    if flush_first:
        assert due == [], "delivered before the kill: nothing is sent again"
    assert analytics_counts(kafka, settings.topics.f1_analytics) == after
