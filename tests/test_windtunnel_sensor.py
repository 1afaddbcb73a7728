"""`windtunnel_run_sensor` cursor cases, evaluated by Dagster against a real broker."""

import dagster as dg
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import RAW_RUN, RUN_EXPORT, WINDTUNNEL_RUN_CHAIN, windtunnel_runs
from resources import KafkaResource, load_settings
from resources.embedded_broker import EmbeddedBroker, free_port
from sensors.kafka_events import TopicCursor

pytestmark = pytest.mark.broker
RUNS = "windtunnel.runs"


def _finished(publisher, run_id, count=10):
    publisher.json(RUNS, {"event": "run_started", "run_id": run_id, "session_id": "s1",
                          "started_at": "2026-01-01T00:00:00Z", "config": {}, "baseline_run_id": None}, run_id)
    publisher.json(RUNS, {"event": "run_finished", "run_id": run_id, "finished_at": "2026-01-01T00:01:00Z",
                          "sample_count": count}, run_id)


def _tick(settings, instance, kafka, cursor=None):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("windtunnel_run_sensor")
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 resources={"kafka": kafka}, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def test_sensor_runs_by_default_with_a_short_interval(settings):
    sensor = build_definitions(settings).resolve_sensor_def("windtunnel_run_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds <= 10


def test_finished_runs_request_the_whole_chain_with_partitions_added(settings, instance, kafka, publisher):
    _finished(publisher, "run-1")
    _finished(publisher, "run-2")
    publisher.json(RUNS, {"event": "run_started", "run_id": "run-3", "session_id": "s1",
                          "started_at": "2026-01-01T00:02:00Z", "config": {}, "baseline_run_id": "run-1"}, "run-3")
    result = _tick(settings, instance, kafka)
    assert [r.partition_key for r in result.run_requests] == ["run-1", "run-2"]  # run-3 is still going
    inc = kafka.identity(RUNS).incarnation
    assert [r.run_key for r in result.run_requests] == [f"{RUNS}@{inc}/0/1", f"{RUNS}@{inc}/0/3"]
    assert all(r.asset_selection == WINDTUNNEL_RUN_CHAIN for r in result.run_requests)
    assert WINDTUNNEL_RUN_CHAIN[0] == RAW_RUN and WINDTUNNEL_RUN_CHAIN[-1] == RUN_EXPORT
    assert result.run_requests[0].tags["aero/offset"] == "1"
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == windtunnel_runs.name and list(add.partition_keys) == ["run-1", "run-2"]
    assert TopicCursor.from_json(result.cursor).offsets == {0: 5}


def test_a_repeated_tick_produces_the_same_run_keys_so_nothing_is_duplicated(settings, instance, kafka, publisher):
    _finished(publisher, "run-1")
    first = _tick(settings, instance, kafka)
    again = _tick(settings, instance, kafka, cursor=None)  # the first tick's cursor was never stored
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]


def test_an_advanced_cursor_skips_until_new_events_arrive(settings, instance, kafka, publisher):
    _finished(publisher, "run-1")
    first = _tick(settings, instance, kafka)
    idle = _tick(settings, instance, kafka, cursor=first.cursor)
    assert idle.run_requests == [] and "No new events" in idle.skip_message
    instance.add_dynamic_partitions(windtunnel_runs.name, ["run-1"])
    _finished(publisher, "run-2")
    _finished(publisher, "run-1")  # a re-published run: requested again, partition not re-added
    later = _tick(settings, instance, kafka, cursor=first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["run-2", "run-1"]
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["run-2"]


def test_invalid_events_are_skipped_and_passed_over(settings, instance, kafka, publisher):
    publisher.send(RUNS, b"not json at all", "run-x")
    publisher.json(RUNS, {"event": "run_finished", "run_id": "bad/id", "finished_at": 1, "sample_count": 1})
    _finished(publisher, "run-1")
    result = _tick(settings, instance, kafka)
    assert [r.partition_key for r in result.run_requests] == ["run-1"]
    assert TopicCursor.from_json(result.cursor).offsets == {0: 4}


def test_missing_topic_and_unreachable_broker_skip_with_a_clear_reason(tmp_path, instance):
    port = free_port()
    s = load_settings({"AERO_HOME": str(tmp_path), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    down = KafkaResource.from_settings(s.kafka)
    skipped = _tick(s, instance, down)
    assert "did not answer" in skipped.skip_message and f"127.0.0.1:{port}" in skipped.skip_message
    with EmbeddedBroker(port=port):  # the broker comes back: the sensor recovers by itself
        assert "does not exist yet" in _tick(s, instance, down).skip_message
        down.ensure_topics([RUNS])
        from tests.conftest import Publisher

        _finished(Publisher(down), "run-1")
        assert [r.partition_key for r in _tick(s, instance, down).run_requests] == ["run-1"]


def test_a_restarted_broker_is_a_new_incarnation_read_from_the_beginning(tmp_path, instance):
    from tests.conftest import Publisher

    port = free_port()
    s = load_settings({"AERO_HOME": str(tmp_path), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    kafka = KafkaResource.from_settings(s.kafka)
    with EmbeddedBroker(port=port):
        kafka.ensure_topics([RUNS])
        pub = Publisher(kafka)
        for i in range(3):
            _finished(pub, f"old-{i}")
        before = _tick(s, instance, kafka)
    assert TopicCursor.from_json(before.cursor).offsets == {0: 6}
    with EmbeddedBroker(port=port):  # memory-only: everything is gone, offsets restart at 0
        kafka.ensure_topics([RUNS])
        _finished(Publisher(kafka), "new-1")
        after = _tick(s, instance, kafka, cursor=before.cursor)
    assert [r.partition_key for r in after.run_requests] == ["new-1"]
    old_keys = {r.run_key for r in before.run_requests}
    assert after.run_requests[0].run_key not in old_keys
    assert after.run_requests[0].run_key.endswith("/0/1")
    assert TopicCursor.from_json(after.cursor).incarnation != TopicCursor.from_json(before.cursor).incarnation


def test_an_unreadable_cursor_starts_fresh_instead_of_failing_every_tick():
    assert TopicCursor.from_json("{not json") == TopicCursor()
    assert TopicCursor.from_json(None) == TopicCursor()


def test_a_failed_topic_description_is_an_outage_not_a_new_incarnation(settings, instance, kafka, publisher,
                                                                        monkeypatch):
    """The broker answering metadata but timing out on DescribeTopics cannot be caused on demand: stubbed."""
    from confluent_kafka import KafkaException

    _finished(publisher, "run-1")
    first = _tick(settings, instance, kafka)
    real_admin = KafkaResource.admin

    class FlakyAdmin:
        def __init__(self, inner):
            self.inner = inner

        def list_topics(self, *a, **kw):
            return self.inner.list_topics(*a, **kw)

        def describe_topics(self, *a, **kw):
            raise KafkaException("DescribeTopics timed out")

    monkeypatch.setattr(KafkaResource, "admin", lambda self: FlakyAdmin(real_admin(self)))
    skipped = _tick(settings, instance, kafka, cursor=first.cursor)
    assert skipped.run_requests == [] and "did not describe topic" in skipped.skip_message


def test_ticks_that_read_events_observe_both_topics(settings, instance, kafka, publisher):
    from aero_assets.keys import RUNS_TOPIC_ASSET, SAMPLES_TOPIC_ASSET
    from aero_assets.simulators.windtunnel import simulate_run

    run = simulate_run("run-1", duration_s=0.05, started_ns=0, seed=1)
    publisher.arrow(settings.topics.windtunnel_samples, run.table, "run-1", block=500)  # 4 messages, not landed
    _finished(publisher, "run-1")
    result = _tick(settings, instance, kafka)
    obs = {e.asset_key: e for e in result.asset_events}
    assert obs[RUNS_TOPIC_ASSET].metadata["next_offsets"].value == {"0": 2}
    assert obs[RUNS_TOPIC_ASSET].metadata["incarnation"].value == kafka.identity(RUNS).incarnation
    lag = obs[SAMPLES_TOPIC_ASSET].metadata["landing_lag_hint"].value["0"]
    assert 1 <= lag <= 4  # a lower bound on Tansu (watermarks), exact on real Kafka


def test_a_kafka_client_error_skips_the_tick_with_its_reason(settings, instance):
    """Not an outage: the client itself is refused (here an unsupported SASL mechanism)."""
    bad = KafkaResource(bootstrap_servers=settings.kafka.bootstrap_servers, security_protocol="SASL_PLAINTEXT",
                        sasl_mechanism="BOGUS", sasl_username="u", sasl_password="p")
    result = _tick(settings, instance, bad)
    assert not result.run_requests
    assert "Kafka error while reading windtunnel.runs" in result.skip_message
    assert "Unsupported SASL mechanism" in result.skip_message


def test_a_kafka_error_while_reading_events_skips_and_keeps_the_cursor(settings, instance, kafka, publisher,
                                                                       monkeypatch):
    """A fault the embedded broker cannot be made to raise on demand (a coordinator/transport error mid-read)."""
    from confluent_kafka import KafkaError, KafkaException

    import sensors.windtunnel_runs as module

    _finished(publisher, "run-1")

    def broken(*args, **kwargs):
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "connection reset by peer"))

    monkeypatch.setattr(module, "read_events", broken)
    skipped = _tick(settings, instance, kafka, cursor='{"incarnation": null, "offsets": {}}')
    assert not skipped.run_requests and "connection reset" in skipped.skip_message
    assert skipped.cursor == '{"incarnation": null, "offsets": {}}', "the cursor is not moved past the events"
    monkeypatch.undo()
    assert [r.partition_key for r in _tick(settings, instance, kafka).run_requests] == ["run-1"]
