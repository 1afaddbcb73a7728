"""Live alert latency: reading published -> alert on `tires.alerts`, on the embedded stack.

The service runs as `aero stream tires-alerts` in its own process (as deployed); the fleet simulator
publishes in real time at the requested rate with a high episode rate, and a consumer of the alerts
topic measures, for each opened episode, receive time minus the publish time of the reading that
opened it (`reading_published_ms`, the Kafka timestamp the service copies into the alert).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, TopicPartition

from resources.embedded_broker import EmbeddedBroker, free_port, stop_process_group
from resources.kafka import KafkaResource
from resources.settings import load_settings


def bench_alert_latency_embedded(readings_per_s: int = 10_000, seconds: float = 20.0, rate_hz: float = 10.0) -> dict:
    vehicles = max(1, round(readings_per_s / (4 * rate_hz)))
    with EmbeddedBroker(port=free_port()) as broker, tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AERO_HOME": home, "AERO_KAFKA_BOOTSTRAP": broker.bootstrap}
        settings = load_settings(env)
        kafka = KafkaResource.from_settings(settings.kafka)
        kafka.ensure_topics(settings.topics.all())
        service = subprocess.Popen([str(Path(sys.executable).with_name("aero")), "stream", "tires-alerts"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        latencies: list[float] = []
        stop = threading.Event()

        def collect():
            consumer = kafka.consumer("bench-latency", **{"enable.partition.eof": False, "fetch.wait.max.ms": 5})
            consumer.assign([TopicPartition(settings.topics.tires_alerts, 0, 0)])
            while not stop.is_set():
                for m in consumer.consume(100, timeout=0.02):
                    if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                        continue
                    if m.error() is None:
                        msg = json.loads(m.value())
                        if "reading_published_ms" in msg:
                            latencies.append(time.time() * 1000 - msg["reading_published_ms"])
            consumer.close()

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            time.sleep(6)  # the service joins its group (a few seconds on Tansu) before the traffic starts
            from aero_assets.simulators.tires_publish import simulate_tires

            summary = simulate_tires(settings, vehicles=vehicles, rate_hz=rate_hz, duration_s=seconds,
                                     late_fraction=0.0, seed=11, episode_rate=60.0, first_episode_within_s=5.0,
                                     kafka=kafka, progress=True)
            time.sleep(3)
        finally:
            stop.set()
            reader.join(10)
            service.send_signal(signal.SIGINT)
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                stop_process_group(service)
    lat = np.array(latencies) / 1000.0
    return {"alert_latency_p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
            "alert_latency_p95_s": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
            "alert_latency_max_s": round(float(lat.max()), 3) if len(lat) else None,
            "alerts_timed": len(lat), "latency_readings_per_s": round(summary["readings"] / summary["seconds"])}
