"""Exactly-once landing against a real broker: ranges, replays, crashes before commit, DLQ, partition ends."""

import json

import pyarrow.parquet as pq
import pytest
from confluent_kafka import KafkaError, TopicPartition

from aero_assets.codec import ARROW, WindtunnelSamplesDecoder
from aero_assets.landing import ERROR_HEADER, LANDING_GROUP, land_topic, landed_files, parse_file_name
from aero_assets.simulators.windtunnel import simulate_run

pytestmark = pytest.mark.broker
T0 = 1_767_225_600 * 10**9
TOPIC = "windtunnel.samples"
DEC = WindtunnelSamplesDecoder()


def _run(run_id="run-a", seconds=0.1, seed=1):
    return simulate_run(run_id, duration_s=seconds, started_ns=T0, seed=seed)


def _landed_rows(lake_dir, run_id=None):
    topic_dir = lake_dir / "landing" / TOPIC
    files = landed_files(topic_dir, split=("run_id", run_id) if run_id else None)
    return sum(pq.read_metadata(f).num_rows for f in files), files


def _commit(kafka, offset):
    c = kafka.consumer(LANDING_GROUP)
    c.commit(offsets=[TopicPartition(TOPIC, 0, offset)], asynchronous=False)
    c.close()


def test_landing_writes_each_run_to_files_named_by_offset_range_and_commits(kafka, lake, publisher):
    a, b = _run("run-a"), _run("run-b", seed=2)
    publisher.arrow(TOPIC, a.table, "run-a")
    publisher.arrow(TOPIC, b.table, "run-b")
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.rows == a.sample_count + b.sample_count
    assert res.dlq_messages == 0
    assert res.splits == {"run-a", "run-b"}
    n_a, files_a = _landed_rows(lake.path, "run-a")
    assert n_a == a.sample_count
    inc, part, first, last = parse_file_name(files_a[0].name)
    assert (inc, part, first) == (res.incarnation, 0, 0) and last == res.messages - 1
    # nothing new: a second landing is a no-op
    again = land_topic(kafka, lake.path, TOPIC, DEC)
    assert again.messages == 0 and again.files == []


def test_new_messages_land_in_a_new_file_after_the_committed_range(kafka, lake, publisher):
    publisher.arrow(TOPIC, _run().table, "run-a")
    first = land_topic(kafka, lake.path, TOPIC, DEC)
    publisher.arrow(TOPIC, _run(seed=5).table, "run-a")
    second = land_topic(kafka, lake.path, TOPIC, DEC)
    r1, r2 = first.ranges[0][0], second.ranges[0][0]
    assert r2.first == r1.last + 1
    n, files = _landed_rows(lake.path, "run-a")
    assert len(files) == 2 and n == first.rows + second.rows


def test_a_crash_between_write_and_commit_loses_nothing_and_duplicates_nothing(kafka, lake, publisher):
    run = _run()
    publisher.arrow(TOPIC, run.table, "run-a")
    land_topic(kafka, lake.path, TOPIC, DEC)  # committed up to here
    publisher.arrow(TOPIC, run.table, "run-b")

    def crash(files):
        assert files and all(f.exists() for f in files), "files are durable before the commit"
        raise RuntimeError("simulated crash before commit")

    with pytest.raises(RuntimeError, match="simulated crash"):
        land_topic(kafka, lake.path, TOPIC, DEC, before_commit=crash)
    # more data arrives before the retry: the retried range is wider than the crashed one
    publisher.arrow(TOPIC, _run(seed=6).table, "run-b")
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.orphans_removed == 1
    n, files = _landed_rows(lake.path, "run-b")
    assert len(files) == 1
    assert n == 2 * run.sample_count
    assert _landed_rows(lake.path, "run-a")[0] == run.sample_count, "committed data is untouched"


def test_relanding_the_same_range_rewrites_the_same_file(kafka, lake, publisher):
    publisher.arrow(TOPIC, _run().table, "run-a")
    first = land_topic(kafka, lake.path, TOPIC, DEC)
    _commit(kafka, 0)  # an operator rewinds the group to replay the topic
    replay = land_topic(kafka, lake.path, TOPIC, DEC)
    assert [f.name for f in replay.files] == [f.name for f in first.files]
    n, files = _landed_rows(lake.path, "run-a")
    assert len(files) == 1 and n == first.rows


def test_small_chunks_split_the_landing_into_several_committed_ranges(kafka, lake, publisher):
    run = _run(seconds=0.2)
    publisher.arrow(TOPIC, run.table, "run-a", block=500)  # 16 messages
    res = land_topic(kafka, lake.path, TOPIC, DEC, chunk_messages=5)
    ranges = [(r.first, r.last) for r in res.ranges[0]]
    assert ranges == [(0, 4), (5, 9), (10, 14), (15, 15)]
    assert _landed_rows(lake.path, "run-a")[0] == run.sample_count


def test_landing_reads_to_the_partition_end_even_when_the_watermark_under_reports(kafka, lake):
    """Tansu counts a multi-message record batch as one record in ListOffsets (DESIGN.md)."""
    producer = kafka.producer(**{"linger.ms": 200})
    for i in range(30):
        producer.produce(TOPIC, key=b"run-a", headers=[("content-type", b"application/json")],
                         value=json.dumps({"run_id": "run-a", "ts": 1767225600000 + i, "channel": "A",
                                           "value": i}).encode())
    assert producer.flush(10) == 0
    c = kafka.consumer("probe")
    _, high = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=5)
    c.close()
    assert high <= 30  # 30 on real Kafka; lower on Tansu
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.messages == 30 and res.ranges[0][0].last == 29


def test_bad_messages_go_to_the_dlq_with_the_reason_and_are_counted(kafka, lake, publisher):
    good = _run()
    publisher.arrow(TOPIC, good.table, "run-a")
    publisher.send(TOPIC, b"\x00garbage", "run-a")  # no header, not sniffable
    publisher.send(TOPIC, b'{"run_id": "run-a", "ts": ', "run-a", [("content-type", b"application/json")])
    publisher.send(TOPIC, good.table.num_rows.to_bytes(4, "big"), "../evil", [("content-type", ARROW.encode())])
    publisher.json(TOPIC, {"run_id": "run-a", "ts": "2026-01-01T00:00:00", "channel": "A", "value": 1}, "run-a")
    publisher.send(TOPIC, None, "run-a")  # a tombstone carries no samples
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.dlq_messages == 5
    assert res.rows == good.sample_count, "good messages around the bad ones all land"
    assert sum(res.dlq_reasons.values()) == 5

    c = kafka.consumer("dlq-reader")
    c.assign([TopicPartition(f"{TOPIC}.dlq", 0, 0)])
    reasons = []
    while True:
        msgs = c.consume(100, timeout=2)
        if not msgs:
            break
        for m in msgs:
            if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                continue
            reasons.append(dict(m.headers())[ERROR_HEADER].decode())
        if len(reasons) >= 5:
            break
    c.close()
    assert len(reasons) == 5
    assert any("neither JSON nor" in r for r in reasons)
    assert any("invalid JSON" in r for r in reasons)
    assert any("invalid message key" in r for r in reasons)
    assert any("no UTC offset" in r for r in reasons)
    assert any("empty" in r for r in reasons)
    # the bad messages were not landed, and their offsets were committed (landing moved past them)
    assert land_topic(kafka, lake.path, TOPIC, DEC).messages == 0


def test_a_topic_that_does_not_exist_lands_nothing(kafka, lake):
    res = land_topic(kafka, lake.path, "no.such.topic", DEC)
    assert res.incarnation is None and res.messages == 0


def test_expired_group_offsets_resume_after_the_lake_and_delete_nothing(kafka, lake, publisher):
    first = _run()
    publisher.arrow(TOPIC, first.table, "run-a")
    land_topic(kafka, lake.path, TOPIC, DEC)
    # the group's committed offsets are gone (expired by retention, or a new group id), the files are not
    publisher.arrow(TOPIC, _run(seed=9).table, "run-a")
    res = land_topic(kafka, lake.path, TOPIC, DEC, group_id="aero-landing-after-expiry")
    assert res.orphans_removed == 0
    assert _landed_rows(lake.path, "run-a")[0] == 2 * first.sample_count


def test_a_message_that_overflows_the_decoder_goes_to_the_dlq_and_landing_goes_on(kafka, lake, publisher):
    run = _run()
    publisher.json(TOPIC, {"run_id": "run-a", "ts": 1e300, "channel": "A", "value": 1}, "run-a")
    publisher.send(TOPIC, b'{"run_id": "run-a", "ts": 1, "channel": "A", "value": 1' + b"0" * 400 + b"}", "run-a",
                   [("content-type", b"application/json")])
    publisher.arrow(TOPIC, run.table, "run-a")
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.dlq_messages == 2 and res.rows == run.sample_count
