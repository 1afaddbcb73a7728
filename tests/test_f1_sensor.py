"""`f1_telemetry_sensor` cursor cases, evaluated with `build_sensor_context` against a real broker."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import F1_SESSION_CHAIN, F1_TELEMETRY, f1_sessions
from aero_assets.simulators.f1_publish import simulate_f1
from sensors.f1_telemetry import build_f1_sensor
from sensors.kafka_events import LandingPolicy

pytestmark = pytest.mark.broker
NEVER = LandingPolicy(min_messages=10**9, max_wait_s=10**9)


def _tick(sensor, instance, defs, cursor=None):
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 resources={"kafka": defs.resources["kafka"]}, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def test_nothing_published_skips_with_a_reason(settings, kafka, instance):
    defs = build_definitions(settings)
    result = _tick(build_f1_sensor(settings.topics.f1_telemetry, settings.topics.f1_sessions, NEVER), instance, defs)
    assert not result.run_requests and "0 message(s) wait" in result.skip_message


def test_a_finished_session_lands_and_is_summarised_even_when_nothing_more_waits(settings, kafka, publisher,
                                                                                 instance):
    defs = build_definitions(settings)
    sensor = build_f1_sensor(settings.topics.f1_telemetry, settings.topics.f1_sessions, NEVER)
    simulate_f1(settings, laps=1, session_id="s-fin", seed=1, kafka=kafka, progress=False, finish=False)
    first = _tick(sensor, instance, defs)
    instance.add_dynamic_partitions(f1_sessions.name, ["s-fin"])
    dg.materialize([defs.get_assets_def(F1_TELEMETRY)], instance=instance, resources=defs.resources)
    second = _tick(sensor, instance, defs, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["s-fin"]  # laps 0..1 landed: lap 0 complete

    # only the finish event arrives now: no telemetry waits, yet the last lap must be landed and summarised
    publisher.json(settings.topics.f1_sessions, {"event": "session_finished", "session_id": "s-fin",
                                                 "finished_at": "2026-12-01T10:00:00Z", "laps": 1}, key="s-fin")
    third = _tick(sensor, instance, defs, second.cursor)
    assert [r.asset_selection for r in third.run_requests] == [[F1_TELEMETRY]]
    dg.materialize([defs.get_assets_def(F1_TELEMETRY)], instance=instance, resources=defs.resources)
    fourth = _tick(sensor, instance, defs, third.cursor)
    assert [(r.partition_key, r.asset_selection) for r in fourth.run_requests] == [("s-fin", F1_SESSION_CHAIN)]
    res = dg.materialize([defs.get_assets_def(k) for k in F1_SESSION_CHAIN], instance=instance,
                         resources=defs.resources, partition_key="s-fin")
    meta = res.asset_materializations_for_node("f1__lap_summaries")[0].metadata
    assert meta["session_finished"].value and meta["dagster/row_count"].value == 2
    # a repeated tick with nothing new asks for nothing
    assert not _tick(sensor, instance, defs, fourth.cursor).run_requests


def test_an_unreadable_cursor_starts_over_instead_of_crashing(settings, kafka, instance):
    defs = build_definitions(settings)
    sensor = build_f1_sensor(settings.topics.f1_telemetry, settings.topics.f1_sessions, NEVER)
    simulate_f1(settings, laps=0, session_id="s-c", seed=1, kafka=kafka, progress=False)
    result = _tick(sensor, instance, defs, cursor="{not json")
    assert result.dynamic_partitions_requests[0].partition_keys == ["s-c"]
    assert json.loads(result.cursor)["events"]["offsets"]
