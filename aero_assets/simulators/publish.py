"""Publish simulated runs the way a real rig does (DESIGN.md wire formats).

`run_started` on the lifecycle topic, the samples as Arrow IPC blocks keyed by run id, then
`run_finished` with the number of samples published. The ground truth of injected faults goes to
`<ground_truth_dir>/windtunnel/<run_id>.json`, never onto the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from aero_assets.codec import ARROW, JSON
from aero_assets.simulators.windtunnel import SimulatedRun
from resources.kafka import KafkaResource

ARROW_HEADERS = [("content-type", ARROW.encode())]
JSON_HEADERS = [("content-type", JSON.encode())]


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


def arrow_blocks(table: pa.Table, block_samples: int) -> list[tuple[int, bytes]]:
    """Serialise a long-format table as independent Arrow IPC streams: (rows, bytes) per block."""
    out = []
    for start in range(0, table.num_rows, block_samples):
        chunk = table.slice(start, block_samples)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, chunk.schema) as w:
            w.write_table(chunk)
        out.append((chunk.num_rows, sink.getvalue().to_pybytes()))
    return out


def produce_waiting(producer, topic: str, key: bytes, value: bytes, headers) -> None:
    """produce(), waiting for the local queue to drain when it is full instead of failing."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:  # local queue full: let the network drain it
            producer.poll(0.05)


def publish_run(
    kafka: KafkaResource,
    run: SimulatedRun,
    *,
    samples_topic: str,
    runs_topic: str,
    session_id: str,
    baseline_run_id: str | None,
    block_samples: int = 4000,
    ground_truth_dir: Path | None = None,
    producer=None,
    on_block: Callable[[int], None] | None = None,
) -> int:
    """Publish one run; returns the number of samples published."""
    producer = producer or kafka.producer()
    key = run.run_id.encode()
    started = {
        "event": "run_started", "run_id": run.run_id, "session_id": session_id,
        "started_at": iso(run.started_ns), "config": run.ground_truth()["config"],
        "baseline_run_id": baseline_run_id,
    }
    produce_waiting(producer, runs_topic, key, json.dumps(started).encode(), JSON_HEADERS)
    producer.flush(30)  # the start event precedes the samples
    for rows, block in arrow_blocks(run.table, block_samples):
        produce_waiting(producer, samples_topic, key, block, ARROW_HEADERS)
        producer.poll(0)
        if on_block is not None:
            on_block(rows)
    if producer.flush(60) > 0:
        raise RuntimeError(f"samples of {run.run_id} were not acknowledged by the broker within 60s")
    last_ns = int(np.asarray(run.table["ts"].cast(pa.int64())[-1].as_py())) if run.sample_count else run.started_ns
    finished = {"event": "run_finished", "run_id": run.run_id, "finished_at": iso(last_ns),
                "sample_count": run.sample_count}
    produce_waiting(producer, runs_topic, key, json.dumps(finished).encode(), JSON_HEADERS)
    if producer.flush(30) > 0:
        raise RuntimeError(f"run_finished of {run.run_id} was not acknowledged within 30s")
    if ground_truth_dir is not None:
        d = ground_truth_dir / "windtunnel"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{run.run_id}.json").write_text(json.dumps(run.ground_truth(), indent=1))
    return run.sample_count


def session_run_ids(kafka: KafkaResource, runs_topic: str, session_id: str, max_events: int = 1_000_000) -> list[str]:
    """Run ids already started in a session, in order, read from the lifecycle topic.

    The lifecycle topic is small (two events per run), so reading it whole is cheap; it is the
    truth a continuing simulator must respect, wherever the earlier runs were published from.
    """
    from sensors.kafka_events import TopicCursor, read_events

    identity = kafka.identity(runs_topic)
    if identity is None:
        return []
    cursor, ids = TopicCursor(), []
    while True:
        read = read_events(kafka, runs_topic, cursor, identity, max_messages=10_000)
        for ev in read.events:
            try:
                obj = json.loads(ev.value or b"")
            except ValueError:
                continue
            if (isinstance(obj, dict) and obj.get("event") == "run_started" and obj.get("session_id") == session_id
                    and isinstance(obj.get("run_id"), str) and obj["run_id"] not in ids):
                ids.append(obj["run_id"])
        if read.reached_end or not read.events or sum(read.cursor.offsets.values()) >= max_events:
            return ids
        cursor = read.cursor


def next_run_index(run_ids: list[str], session_id: str) -> int:
    """One past the highest `<session>-runNNN` index in use (1 for a new session)."""
    prefix = f"{session_id}-run"
    used = [int(r[len(prefix):]) for r in run_ids if r.startswith(prefix) and r[len(prefix):].isdigit()]
    return max(used, default=0) + 1
