"""`aero bench ingest`: Kafka -> Parquet landing throughput, Aero vs the seeds' approach, in one run.

Aero: Arrow IPC blocks of a simulated wind-tunnel run, landed by the real `land_topic` (consume to
the partition end, decode, validate, write Parquet, commit).
Baseline (seed 000's streaming consumer): one JSON message per sample, parsed one by one with
`json.loads`, rows collected as tuples, one vectorised pandas frame and write. Its consume is batched too, so the
comparison is about the wire format and per-sample work, not about a strawman poll loop.

Both run against a private embedded broker on a free port; only the landing is timed, not the
producing. The last line printed by the CLI is the JSON returned here.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from confluent_kafka import KafkaError, TopicPartition
from tqdm import tqdm

from aero_assets.codec import JSON, WindtunnelSamplesDecoder
from aero_assets.landing import land_topic
from aero_assets.simulators.publish import ARROW_HEADERS, arrow_blocks, produce_waiting
from aero_assets.simulators.windtunnel import simulate_run
from aero_assets.windtunnel.catalog import load_catalog
from resources.embedded_broker import EmbeddedBroker, free_port
from resources.kafka import KafkaResource


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, unit="sample", unit_scale=True, desc=desc, file=sys.stderr, leave=False)


def _produce_arrow(kafka: KafkaResource, topic: str, samples: int, block_samples: int) -> int:
    rate = load_catalog().samples_per_second
    run = simulate_run("bench-run", duration_s=samples / rate, started_ns=time.time_ns(), seed=7)
    table = run.table.slice(0, samples)
    producer = kafka.producer()
    with _bar(table.num_rows, "produce arrow") as bar:
        for rows, block in arrow_blocks(table, block_samples):
            produce_waiting(producer, topic, b"bench-run", block, ARROW_HEADERS)
            producer.poll(0)
            bar.update(rows)
    producer.flush(120)
    return table.num_rows


def _produce_json(kafka: KafkaResource, topic: str, samples: int) -> int:
    rate = load_catalog().samples_per_second
    run = simulate_run("bench-json", duration_s=samples / rate, started_ns=time.time_ns(), seed=8)
    table = run.table.slice(0, samples)
    ts = table["ts"].cast("int64").to_numpy() // 1_000_000
    channels = table["channel"].to_pylist()
    values = table["value"].to_numpy()
    producer = kafka.producer()
    headers = [("content-type", JSON.encode())]
    with _bar(table.num_rows, "produce json") as bar:
        for i in range(table.num_rows):  # the baseline's wire format is one message per sample
            rec = {"run_id": "bench-json", "ts": int(ts[i]), "channel": channels[i], "value": float(values[i])}
            msg = json.dumps(rec)
            produce_waiting(producer, topic, b"bench-json", msg.encode(), headers)
            if i % 10_000 == 0:
                producer.poll(0)
                bar.update(10_000 if i else 0)
    producer.flush(120)
    return table.num_rows


def baseline_land(kafka: KafkaResource, topic: str, out: Path, bar: tqdm) -> int:
    """The seeds' consumer: per-message JSON parsing into row dicts, then one pandas write."""
    consumer = kafka.consumer("bench-baseline")
    consumer.assign([TopicPartition(topic, 0, 0)])
    rows: list[tuple] = []
    last = -1
    while True:
        msgs = consumer.consume(10_000, timeout=1.0)
        done = not msgs
        for m in msgs:
            if m.error():
                done = done or m.error().code() == KafkaError._PARTITION_EOF
                continue
            rec = json.loads(m.value())
            rows.append((rec["run_id"], rec["ts"], rec["channel"], float(rec["value"])))
            last = m.offset()
        bar.update(len(msgs))
        if done:
            break
    df = pd.DataFrame(rows, columns=["run_id", "ts", "channel", "value"])
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)  # generous: vectorised, not per row
    df.to_parquet(out)
    if last >= 0:
        consumer.commit(offsets=[TopicPartition(topic, 0, last + 1)], asynchronous=False)
    consumer.close()
    return len(rows)


def bench_ingest(samples: int = 5_000_000, baseline_samples: int = 200_000, block_samples: int = 4000) -> dict:
    with tempfile.TemporaryDirectory(prefix="aero-bench-") as tmp, EmbeddedBroker(port=free_port()) as broker:
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        kafka.ensure_topics(["bench.arrow", "bench.json"])
        produced = _produce_arrow(kafka, "bench.arrow", samples, block_samples)
        with _bar(produced, "land arrow (aero)") as bar:
            t0 = time.perf_counter()
            res = land_topic(kafka, Path(tmp) / "lake", "bench.arrow", WindtunnelSamplesDecoder(),
                             progress=lambda n: bar.update(n * block_samples))
            aero_s = time.perf_counter() - t0
        if res.rows != produced:
            raise RuntimeError(f"landing lost samples: {res.rows} landed of {produced}")

        produced_b = _produce_json(kafka, "bench.json", baseline_samples)
        with _bar(produced_b, "land json (baseline)") as bar:
            t0 = time.perf_counter()
            n_b = baseline_land(kafka, "bench.json", Path(tmp) / "baseline.parquet", bar)
            base_s = time.perf_counter() - t0
        if n_b != produced_b:
            raise RuntimeError(f"baseline lost samples: {n_b} of {produced_b}")

    aero_rate, base_rate = res.rows / aero_s, n_b / base_s
    return {
        "samples": res.rows,
        "samples_per_s": round(aero_rate),
        "baseline_samples": n_b,
        "baseline_samples_per_s": round(base_rate),
        "ratio": round(aero_rate / base_rate, 1),
        "landing_seconds": round(aero_s, 3),
        "parquet_bytes": res.bytes_written,
        "block_samples": block_samples,
    }
