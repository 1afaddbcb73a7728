"""Landing under faults: kills mid-write, giant and hostile messages, concurrent landings, crashes after DLQ sends.

Kills are real SIGKILLs of a child process that lands, at a crash point injected in-process where a
wall-clock kill could not hit the window reliably. Counts are checked on the landed Parquet files:
rows expected = rows landed, no duplicate (channel, ts) within a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import KafkaError, TopicPartition

from aero_assets.codec import ARROW, WindtunnelSamplesDecoder
from aero_assets.dlq import ERROR_HEADER, INCARNATION_HEADER, SOURCE_HEADER
from aero_assets.landing import LANDING_GROUP, LandingConflict, land_topic, landed_files
from aero_assets.simulators.windtunnel import simulate_run
from tests.conftest import REPO

pytestmark = pytest.mark.broker
T0 = 1_767_225_600 * 10**9
TOPIC = "windtunnel.samples"
DEC = WindtunnelSamplesDecoder()

# A child process that lands TOPIC, with one of these crash points armed (real SIGKILL of itself):
#   kill_at_write=N    SIGKILL when the N-th landed file is about to be renamed into place (tmp left)
#   kill_after_file=N  SIGKILL right after the N-th landed file is durable
#   sleep_before_commit=S  hold the chunk S seconds between "all durable" and the commit
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import aero_assets.landing as landing
    import resources.lake as lake
    from aero_assets.codec import WindtunnelSamplesDecoder
    from resources import KafkaResource

    bootstrap, lake_root, mode, arg = sys.argv[1:5]
    n = {"files": 0}
    if mode == "kill_at_write":
        real = lake.pq.write_table
        def write_then_die(table, where, **kw):
            real(table, where, **kw)
            n["files"] += 1
            if n["files"] == int(arg):
                os.kill(os.getpid(), signal.SIGKILL)
        lake.pq.write_table = write_then_die
    if mode == "kill_after_file":
        real_atomic = landing.write_parquet_atomic
        def atomic_then_die(table, path, **kw):
            size = real_atomic(table, path, **kw)
            n["files"] += 1
            if n["files"] == int(arg):
                os.kill(os.getpid(), signal.SIGKILL)
            return size
        landing.write_parquet_atomic = atomic_then_die
    kwargs = {}
    if mode == "sleep_before_commit":
        kwargs["before_commit"] = lambda files: time.sleep(float(arg))
    res = landing.land_topic(KafkaResource(bootstrap_servers=bootstrap), Path(lake_root), "windtunnel.samples",
                             WindtunnelSamplesDecoder(), **kwargs)
    print(f"landed {res.messages} {res.rows}", flush=True)
""")


def _child(broker, lake, mode: str, arg: str = "0") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, broker.bootstrap, str(lake.path), mode, arg],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(run_id: str, seconds: float = 0.1, seed: int = 1):
    return simulate_run(run_id, duration_s=seconds, started_ns=T0, seed=seed)


def _rows(lake, run_id: str) -> pa.Table:
    files = landed_files(lake.path / "landing" / TOPIC, split=("run_id", run_id))
    if not files:
        return pa.table({"ts": pa.array([], pa.int64()), "channel": pa.array([], pa.string())})
    return pa.concat_tables([pq.read_table(f, columns=["ts", "channel"]) for f in files])


def _assert_exactly(lake, run) -> None:
    t = _rows(lake, run.run_id)
    unique = t.group_by(["channel", "ts"]).aggregate([]).num_rows
    # one line per checked run, for the record (`pytest -s tests/test_landing_faults.py | grep rows:`)
    print(f"rows: {run.run_id} expected {run.sample_count} landed {unique} duplicated {t.num_rows - unique}")
    assert (t.num_rows, unique) == (run.sample_count, run.sample_count), \
        f"{run.run_id}: expected {run.sample_count} rows, landed {t.num_rows}, distinct {unique}"


def _committed(kafka, partition: int = 0) -> int:
    c = kafka.consumer(LANDING_GROUP)
    [tp] = c.committed([TopicPartition(TOPIC, partition)], timeout=10)
    c.close()
    return tp.offset


def _dlq_messages(kafka, expected_at_least: int = 0, timeout: float = 5.0) -> list:
    c = kafka.consumer("dlq-reader")
    c.assign([TopicPartition(f"{TOPIC}.dlq", 0, 0)])
    out, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(100, timeout=0.5)
            eof = False
            for m in msgs:
                if m.error():
                    eof = eof or m.error().code() == KafkaError._PARTITION_EOF
                    continue
                out.append(m)
            if eof and len(out) >= expected_at_least:
                break
    finally:
        c.close()
    return out


def test_a_kill_between_two_split_folders_in_a_first_landing_loses_no_rows(broker, kafka, lake, publisher):
    """No committed offset yet: the resume point must not jump past run-b's rows that were never written."""
    a, b = _run("run-a"), _run("run-b", seed=2)
    publisher.arrow(TOPIC, a.table, "run-a")
    publisher.arrow(TOPIC, b.table, "run-b")
    child = _child(broker, lake, "kill_after_file", "1")
    assert child.wait(60) == -9, child.stderr.read()
    assert _committed(kafka) < 0, "the kill came before any commit"
    written = [f for f in landed_files(lake.path / "landing" / TOPIC)]
    assert len(written) == 1, "one split folder's file was durable, the other's not"

    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.orphans_removed == 1 and res.start_offsets == {0: 0}
    _assert_exactly(lake, a)
    _assert_exactly(lake, b)
    assert _committed(kafka) == res.ranges[0][-1].last + 1


def test_a_kill_after_the_first_chunk_of_a_first_landing_resumes_at_the_lake_checkpoint(kafka, lake, publisher):
    run = _run("run-a", seconds=0.2)
    publisher.arrow(TOPIC, run.table, "run-a", block=500)  # 16 messages

    def crash(files):
        raise RuntimeError("killed before the first commit")

    with pytest.raises(RuntimeError, match="killed"):
        land_topic(kafka, lake.path, TOPIC, DEC, chunk_messages=5, before_commit=crash)
    # the group has no offset; the lake's checkpoint says [0, 4] is durable
    res = land_topic(kafka, lake.path, TOPIC, DEC, chunk_messages=5)
    assert res.start_source == "lake checkpoint" and res.start_offsets == {0: 5}
    _assert_exactly(lake, run)


def test_temporary_files_of_a_killed_landing_are_removed_by_the_next_one(broker, kafka, lake, publisher):
    run = _run("run-a", seconds=0.5)
    publisher.arrow(TOPIC, run.table, "run-a")
    child = _child(broker, lake, "kill_at_write", "1")
    assert child.wait(60) == -9, child.stderr.read()
    topic_dir = lake.path / "landing" / TOPIC
    tmp = list(topic_dir.glob("**/.*.tmp"))
    assert tmp and sum(p.stat().st_size for p in tmp) > 10_000, "the kill left a partly written temp file"

    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.temp_files_removed == len(tmp)
    assert not list(topic_dir.glob("**/.*.tmp"))
    _assert_exactly(lake, run)


def test_two_landings_of_one_topic_without_a_pool_neither_duplicate_rows_nor_move_the_commit_back(
        broker, kafka, lake, publisher):
    first = _run("run-a", seconds=0.1)
    publisher.arrow(TOPIC, first.table, "run-a")
    land_topic(kafka, lake.path, TOPIC, DEC)
    second = _run("run-a", seconds=0.1, seed=7)  # same run, later samples: shift them past the first
    second_table = second.table.set_column(0, "ts", pc.add(second.table["ts"].cast(pa.int64()), 10**9)
                                           .cast(second.table["ts"].type))
    publisher.arrow(TOPIC, second_table, "run-a")
    slow = _child(broker, lake, "sleep_before_commit", "3")  # holds its chunk uncommitted for 3 s
    time.sleep(1.5)
    third_table = second.table.set_column(0, "ts", pc.add(second.table["ts"].cast(pa.int64()), 2 * 10**9)
                                          .cast(second.table["ts"].type))
    publisher.arrow(TOPIC, third_table, "run-a")
    fast = _child(broker, lake, "plain")
    assert slow.wait(60) == 0, slow.stderr.read()
    assert fast.wait(60) == 0, fast.stderr.read()
    end = land_topic(kafka, lake.path, TOPIC, DEC)  # whatever is left
    total = first.sample_count + 2 * second.sample_count
    t = _rows(lake, "run-a")
    assert (t.num_rows, t.group_by(["channel", "ts"]).aggregate([]).num_rows) == (total, total)
    assert end.messages == 0, "the two landings between them landed everything, each range once"
    assert _committed(kafka) == _last_offset(kafka) + 1, "the commit ends at the topic end, never behind it"


def _last_offset(kafka) -> int:
    c = kafka.consumer("probe-end")
    c.assign([TopicPartition(TOPIC, 0, 0)])
    last = -1
    while True:
        msgs = c.consume(1000, timeout=1)
        done = False
        for m in msgs:
            if m.error():
                done = m.error().code() == KafkaError._PARTITION_EOF
                continue
            last = max(last, m.offset())
        if done or not msgs:
            break
    c.close()
    return last


def test_a_landing_never_moves_the_committed_offset_backwards(kafka, lake, publisher, tmp_path):
    """A second deployment with another lake (so another lock) lands the same group meanwhile."""
    publisher.arrow(TOPIC, _run("run-a").table, "run-a")
    other_lake = tmp_path / "other-lake"

    def meanwhile(files):
        publisher.arrow(TOPIC, _run("run-b", seed=3).table, "run-b")
        land_topic(kafka, other_lake, TOPIC, DEC)

    with pytest.raises(LandingConflict, match="backwards"):
        land_topic(kafka, lake.path, TOPIC, DEC, before_commit=meanwhile)
    assert _committed(kafka) == _last_offset(kafka) + 1, "the other landing's commit stands"


def test_an_oversized_message_goes_to_the_dlq_as_a_stub_and_the_topic_keeps_landing(kafka, lake, publisher, settings):
    big = kafka.producer(**{"message.max.bytes": 20_000_000, "linger.ms": 0})
    payload = b"\x00not-a-known-format" + os.urandom(10 * 1024 * 1024)
    big.produce(TOPIC, value=payload, key=b"run-a")
    assert big.flush(30) == 0, "the broker accepts the 10 MB message"
    run = _run("run-a")
    publisher.arrow(TOPIC, run.table, "run-a")

    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.dlq_messages == 1 and res.dlq_oversized == 1
    _assert_exactly(lake, run)
    assert land_topic(kafka, lake.path, TOPIC, DEC).messages == 0, "committed past it: not stuck"

    [stub] = _dlq_messages(kafka, 1)
    h = dict(stub.headers())
    assert len(stub.value()) <= 64 * 1024 and stub.value() == payload[: len(stub.value())]
    assert int(h["aero-payload-bytes"]) == len(payload)
    kept = lake.path / h["aero-payload-path"].decode()
    assert kept.read_bytes() == payload, "the whole message is kept in the lake's DLQ area"
    import base64
    import json

    side = json.loads(kept.with_suffix(".json").read_text())
    assert base64.b64decode(side["key_b64"]) == b"run-a", "key (and headers) kept losslessly beside it"
    assert b"neither JSON nor" in h[ERROR_HEADER]


def test_a_compressed_arrow_bomb_is_refused_before_it_expands(kafka, lake, publisher):
    n = 4_000_000
    zeros = pa.table({"ts": pa.array(np.full(n, T0)).cast(pa.timestamp("ns", tz="UTC")),
                      "channel": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["A"])),
                      "value": pa.array(np.zeros(n))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, zeros.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(zeros)
    bomb = sink.getvalue().to_pybytes()
    assert len(bomb) < 1_000_000
    publisher.send(TOPIC, bomb, "run-a", [("content-type", ARROW.encode())])
    small = WindtunnelSamplesDecoder(max_decoded_bytes=16 * 1024 * 1024)
    res = land_topic(kafka, lake.path, TOPIC, small)
    assert res.dlq_messages == 1 and res.rows == 0
    [msg] = _dlq_messages(kafka, 1)
    reason = dict(msg.headers())[ERROR_HEADER].decode()
    assert "would decode to 1" in reason and "16,777,216-byte limit" in reason, reason


def test_a_crash_after_the_dlq_send_does_not_send_the_bad_message_twice(kafka, lake, publisher):
    earlier = _run("run-0", seed=4)
    publisher.arrow(TOPIC, earlier.table, "run-0")
    land_topic(kafka, lake.path, TOPIC, DEC)  # the group has committed offsets: a retry starts there
    bad_offset = _last_offset(kafka) + 1
    publisher.send(TOPIC, b"\x00garbage", "run-a")
    run = _run("run-a")
    publisher.arrow(TOPIC, run.table, "run-a")

    def crash(files):
        raise RuntimeError("killed after the DLQ send, before the commit")

    with pytest.raises(RuntimeError, match="killed"):
        land_topic(kafka, lake.path, TOPIC, DEC, before_commit=crash)
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.dlq_messages == 1 and res.dlq_repeats_skipped == 1
    _assert_exactly(lake, run)
    dlq = _dlq_messages(kafka, 1)
    assert len(dlq) == 1, "one DLQ message per bad source message"
    h = dict(dlq[0].headers())
    assert h[SOURCE_HEADER] == f"{TOPIC}/0/{bad_offset}".encode() and h[INCARNATION_HEADER].decode() == res.incarnation


def test_a_truncated_arrow_body_gets_a_reason_that_says_so(kafka, lake, publisher):
    run = _run("run-a")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, run.table.schema) as w:
        w.write_table(run.table)
    whole = sink.getvalue().to_pybytes()
    publisher.send(TOPIC, whole[: len(whole) // 2], "run-a", [("content-type", ARROW.encode())])
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    [reason] = list(res.dlq_reasons)
    assert "internal decoder error" not in reason
    [msg] = _dlq_messages(kafka, 1)
    text = dict(msg.headers())[ERROR_HEADER].decode()
    assert "truncated or corrupt" in text and "ends before the stream does" in text


def test_a_broker_restart_during_a_landing_commits_nothing_and_the_new_topic_lands_whole(broker, kafka, lake,
                                                                                         publisher):
    from resources.embedded_broker import EmbeddedBroker

    publisher.arrow(TOPIC, _run("run-old").table, "run-old")
    replacement: list[EmbeddedBroker] = []

    def restart(path):
        if not replacement:  # the broker restarts (memory only: a new, empty incarnation on the same port)
            broker.stop()
            replacement.append(EmbeddedBroker(port=broker.port).start())
            kafka.ensure_topics([TOPIC])

    try:
        with pytest.raises(RuntimeError, match="changed while landing"):
            land_topic(kafka, lake.path, TOPIC, DEC, after_file=restart)
        assert _committed(kafka) < 0, "no offset of the old broker was committed to the new one"
        new = _run("run-new", seconds=0.3, seed=8)
        from tests.conftest import Publisher

        Publisher(kafka).arrow(TOPIC, new.table, "run-new", block=500)
        res = land_topic(kafka, lake.path, TOPIC, DEC)
        assert res.ranges[0][0].first == 0
        _assert_exactly(lake, new)
    finally:
        for b in replacement:
            b.stop()


def test_a_chunk_is_bounded_by_decoded_bytes_not_only_by_wire_bytes(kafka, lake, publisher):
    run = _run("run-a", seconds=0.5)  # 19,400 samples, ~0.6 MB decoded
    publisher.arrow(TOPIC, run.table, "run-a", block=1000)  # 20 messages
    res = land_topic(kafka, lake.path, TOPIC, DEC, chunk_bytes=120_000)
    assert len(res.ranges[0]) >= 4, "several chunks, each within the decoded budget (plus one message)"
    assert [r.first for r in res.ranges[0][1:]] == [r.last + 1 for r in res.ranges[0][:-1]], "contiguous"
    _assert_exactly(lake, run)


def test_a_group_rewound_into_the_middle_of_a_landed_file_lands_the_tail_once_and_keeps_the_head(kafka, lake,
                                                                                                publisher):
    run = _run("run-a", seconds=0.3)
    publisher.arrow(TOPIC, run.table, "run-a", block=1000)
    first = land_topic(kafka, lake.path, TOPIC, DEC)
    assert len(first.files) == 1
    c = kafka.consumer(LANDING_GROUP)
    c.commit(offsets=[TopicPartition(TOPIC, 0, 7)], asynchronous=False)  # an operator rewinds the group
    c.close()
    again = land_topic(kafka, lake.path, TOPIC, DEC)
    # the head [0, 6] is kept (the log may no longer hold it), the tail [7, ...] lands once
    assert again.start_offsets == {0: 7} and again.files_trimmed == 1
    _assert_exactly(lake, run)


def test_an_edited_checkpoint_stops_the_landing_with_a_message_that_says_what_to_do(kafka, lake, publisher):
    publisher.arrow(TOPIC, _run("run-a").table, "run-a")
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    [cp] = (lake.path / "landing" / TOPIC / "_checkpoint").glob("*.json")
    cp.write_text('{"partitions": [1, 2]}')
    with pytest.raises(RuntimeError, match=r"unreadable .*delete it"):
        land_topic(kafka, lake.path, TOPIC, DEC, group_id="fresh-group")
    assert res.rows


def test_committed_offsets_this_lake_never_made_are_not_trusted(kafka, lake, publisher):
    """A landing that lost its broker after its last check commits into the restarted one (or another lake does)."""
    run = _run("run-a", seconds=0.3)
    publisher.arrow(TOPIC, run.table, "run-a", block=500)
    c = kafka.consumer(LANDING_GROUP)
    c.commit(offsets=[TopicPartition(TOPIC, 0, 10)], asynchronous=False)  # the stale commit
    c.close()
    res = land_topic(kafka, lake.path, TOPIC, DEC)
    assert res.start_offsets == {0: 0} and "ignored" in res.start_source
    _assert_exactly(lake, run)


def test_partitions_with_nothing_to_land_get_their_group_offset_committed(kafka, lake, publisher):
    run = _run("run-a", seconds=0.2)
    publisher.arrow(TOPIC, run.table, "run-a", block=500)

    def crash(files):
        raise RuntimeError("killed after the checkpoint")

    with pytest.raises(RuntimeError):
        land_topic(kafka, lake.path, TOPIC, DEC, before_commit=crash)
    assert _committed(kafka) < 0
    res = land_topic(kafka, lake.path, TOPIC, DEC)  # nothing left: the checkpoint is at the end
    assert res.messages == 0 and _committed(kafka) == _last_offset(kafka) + 1
