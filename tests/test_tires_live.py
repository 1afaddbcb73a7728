"""The live alert service finds exactly the batch path's episodes, once per id, across restarts and crashes."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, TopicPartition

from aero_assets.tires.episodes import Thresholds, detect_episodes
from aero_assets.tires.live import LiveAlerts, run_live_alerts
from tests.conftest import wait_for
from tests.tires_data import S, fleet, publish

T0 = 1_767_607_200 * S


def _log(table: pa.Table) -> pa.Table:
    return table.append_column("_partition", pa.array(np.zeros(table.num_rows, np.int32))) \
                .append_column("_offset", pa.array(np.arange(table.num_rows)))


def _shuffled_late(table: pa.Table, seed: int = 4) -> pa.Table:
    """Deliver 3 % of readings 5-60 s late, as the field does."""
    rng = np.random.default_rng(seed)
    ts = table["ts"].cast(pa.int64()).to_numpy()
    deliver = ts + np.where(rng.random(len(ts)) < 0.03, rng.uniform(5, 60, len(ts)) * S, 0).astype(np.int64)
    return table.take(pa.array(np.argsort(deliver, kind="stable")))


def test_batch_by_batch_the_live_core_publishes_the_batch_paths_episodes_with_their_final_figures():
    table = _log(_shuffled_late(fleet(T0, 900, vehicles=3, leak_at=200)))
    batch = detect_episodes(table, Thresholds())
    core, opened, closed = LiveAlerts(Thresholds()), {}, {}
    rng = np.random.default_rng(1)
    start = 0
    while start < table.num_rows:  # batches of random size, as fetches come
        n = int(rng.integers(1, 400))
        for msg in core.process(0, table.slice(start, n)):
            target = closed if msg["status"] == "closed" else opened
            assert msg["alert_id"] not in target, "each id is published once per status"
            target[msg["alert_id"]] = msg
        start += n
    assert set(opened) | set(closed) == set(batch["alert_id"])
    for row in batch[batch["closed"]].to_dict("records"):
        msg = closed[row["alert_id"]]
        assert msg["readings"] == row["readings"]
        assert msg["peak_value"] == pytest.approx(row["peak_value"], abs=1e-3)
        assert msg["duration_s"] == pytest.approx(row["duration_s"], abs=1e-3)


def _alerts(kafka, topic: str) -> list[dict]:
    consumer = kafka.consumer("test-alerts")
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    while True:
        ms = consumer.consume(1000, timeout=5)
        if not ms:
            break
        done = False
        for m in ms:
            if m.error():
                done = m.error().code() == KafkaError._PARTITION_EOF
                continue
            out.append(json.loads(m.value()))
        if done:
            break
    consumer.close()
    return out


def _start(settings, kafka, **kw):
    stop = threading.Event()
    box: dict = {}

    def run():
        try:
            box["stats"] = run_live_alerts(settings, stop=stop, kafka=kafka, snapshot_every_s=0.5, **kw)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop, t, box


@pytest.mark.broker
def test_the_service_publishes_every_episode_once_and_a_crash_before_commit_never_makes_a_second_id(
        settings, kafka, publisher):
    topic = settings.topics.tires_alerts
    table = _shuffled_late(fleet(T0, 600, vehicles=2, leak_at=100))
    expected = set(detect_episodes(_log(table), Thresholds())["alert_id"])
    half = table.num_rows // 2

    publish(publisher, settings.topics.tires_raw, table.slice(0, half), per_message=4)
    published = threading.Event()  # crash right after the first alerts are out, before snapshot and commit
    stop, thread, box = _start(settings, kafka, on_publish=lambda msg: published.set(),
                               crash_after_publish=published.is_set)
    wait_for(lambda: "error" in box, timeout=30, what="the injected crash")
    first = _alerts(kafka, topic)
    assert first, "alerts were published before the crash"

    publish(publisher, settings.topics.tires_raw, table.slice(half), per_message=4)
    stop, thread, box = _start(settings, kafka)
    wait_for(lambda: {a["alert_id"] for a in _alerts(kafka, topic)} >= expected, timeout=60,
             what="every episode on tires.alerts after the restart")
    stop.set()
    thread.join(30)
    msgs = _alerts(kafka, topic)
    assert {m["alert_id"] for m in msgs} == expected, "no id the batch path does not find"
    closed = [m["alert_id"] for m in msgs if m["status"] == "closed"]
    assert len(set(closed)) == len(set(closed) & expected)


@pytest.mark.broker
def test_malformed_messages_are_skipped_and_counted_and_late_readings_open_nothing(settings, kafka, publisher):
    table = fleet(T0, 300, vehicles=1, puncture_at=None, overheat_at=None)
    publish(publisher, settings.topics.tires_raw, table, per_message=4)
    publisher.send(settings.topics.tires_raw, b"{broken", b"fleet-v000")
    late = {"vehicle_id": "fleet-v000", "tire": "FL", "pressure_kpa": 90.0, "temperature_c": 150.0,
            "ts": "2026-01-05T10:01:00.500Z"}  # far behind the tire's latest reading
    publisher.json(settings.topics.tires_raw, late, key="fleet-v000")
    stop, thread, box = _start(settings, kafka)
    consumer = kafka.consumer("aero-live-tires-alerts")
    wait_for(lambda: (consumer.committed([TopicPartition(settings.topics.tires_raw, 0)], timeout=5)[0].offset
                      >= table.num_rows // 4 + 2), timeout=30, what="the service to read everything")
    consumer.close()
    stop.set()
    thread.join(30)
    assert box["stats"]["bad_messages"] == 1
    assert _alerts(kafka, settings.topics.tires_alerts) == []


@pytest.mark.broker
def test_a_restarted_broker_stops_the_service_instead_of_mixing_old_state_into_the_new_topic(tmp_path):
    from resources.embedded_broker import EmbeddedBroker, free_port
    from resources.kafka import KafkaResource
    from resources.settings import load_settings

    port = free_port()
    settings = load_settings({"AERO_HOME": str(tmp_path), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    first = EmbeddedBroker(port=port).start()
    kafka = KafkaResource.from_settings(settings.kafka)
    ready = threading.Event()
    stop, thread, box = _start(settings, kafka, ready=ready)
    try:
        assert ready.wait(30), "the service joined its group"
        first.stop()
        with EmbeddedBroker(port=port):  # a new cluster id on the same address
            KafkaResource.from_settings(settings.kafka).ensure_topics(settings.topics.all())
            thread.join(60)
            assert not thread.is_alive()
            assert "changed" in str(box.get("error")), box
    finally:
        stop.set()


def test_a_state_snapshot_round_trips_and_a_corrupt_one_means_a_fresh_start(tmp_path):
    from aero_assets.tires.live import Snapshots

    core = LiveAlerts(Thresholds())
    table = _log(fleet(T0, 200, vehicles=1))
    core.process(0, table)
    snaps = Snapshots(tmp_path, "inc1")
    snaps.save(0, core.parts[0])
    back = snaps.load(0)
    assert back.next_offset == core.parts[0].next_offset == table.num_rows
    assert back.buffer.equals(core.parts[0].buffer) and back.open == core.parts[0].open
    snaps.path(0).write_bytes(b"\xff\xff\xff\xff garbage")
    assert snaps.load(0) is None
    assert Snapshots(tmp_path, "inc2").load(0) is None  # another incarnation's state is never used
