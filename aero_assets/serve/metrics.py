"""Prometheus metrics and health of the API: computed when scraped, from the lake and the broker.

The gauges are read at scrape time (a custom collector), not kept up to date by the API, so they
say what the lake and the broker say now. The broker part (landing lag and DLQ sizes: watermarks
against the landing group's committed offsets) is cached for 15 s and bounded by a 3 s timeout, so
a scrape stays fast while the broker is down, and says so (`aero_broker_up 0`).
"""

import logging
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aero_assets.serve import lake_reader as lr
from resources.settings import Settings

BROKER_CACHE_S = 15.0
log = logging.getLogger(__name__)
LANDED_TOPICS = ("windtunnel_samples", "windtunnel_runs", "tires_raw", "f1_telemetry", "f1_sessions", "rig_readings",
                 "weather_observations")


class ApiMetrics:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.requests = Counter("aero_api_requests", "API requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("aero_api_request_seconds", "API request latency by route", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry)
        self.registry.register(_LakeCollector(self))
        self._broker: tuple[float, dict] | None = None

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def broker_state(self) -> dict:
        """{'up': bool, 'lag': {topic: n}, 'dlq': {topic: n}}, cached for BROKER_CACHE_S."""
        now = time.monotonic()
        if self._broker is not None and now - self._broker[0] < BROKER_CACHE_S:
            return self._broker[1]
        state = _read_broker(self.settings)
        self._broker = (now, state)
        return state

    def health(self) -> dict:
        from aero_assets.doctor import check_instance

        lake = self.settings.lake_dir
        broker = self.broker_state()
        storage = [f for f in check_instance(self.settings) if f.check == "instance storage"]
        return {
            "lake": {"status": "ok" if lake.is_dir() else "missing"},  # (no path: /healthz needs no token)
            "broker": {"status": "ok" if broker["up"] else "down", "bootstrap": self.settings.kafka.bootstrap_servers},
            "instance_storage": {"status": "ok" if storage and storage[0].status == "ok" else "down",
                                 "detail": storage[0].detail if storage else ""},
        }


def _read_broker(settings: Settings) -> dict:
    from confluent_kafka import TopicPartition

    from aero_assets.landing import LANDING_GROUP
    from resources.kafka import BrokerUnavailable, KafkaResource

    kafka = KafkaResource.from_settings(settings.kafka)
    try:
        _, topics = kafka.cluster(timeout=3)
    except BrokerUnavailable:
        return {"up": False, "lag": {}, "dlq": {}}
    names = {getattr(settings.topics, t) for t in LANDED_TOPICS}
    consumer = kafka.consumer(LANDING_GROUP, **{"enable.auto.commit": False})
    lag, dlq = {}, {}
    try:
        for topic in sorted(names & set(topics)):
            identity = kafka.identity(topic, timeout=3)
            if identity is None:
                continue
            parts = [TopicPartition(topic, p) for p in identity.partitions]
            committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=3)}
            total = 0
            for p in identity.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=3)
                done = committed.get(p, -1)
                total += high - (done if done >= 0 else low)
            lag[topic] = total
            dlq_topic = settings.topics.dlq(topic)
            if dlq_topic in topics:
                dlq[topic] = sum(max(0, h - lo) for lo, h in (
                    consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), timeout=3)
                    for p in (kafka.identity(dlq_topic, timeout=3) or identity).partitions))
    except Exception:  # a broker lost mid-scrape: report it down rather than fail the scrape
        return {"up": False, "lag": lag, "dlq": dlq}
    finally:
        consumer.close()
    return {"up": True, "lag": lag, "dlq": dlq}


class _LakeCollector:
    def __init__(self, owner: ApiMetrics) -> None:
        self.owner = owner

    def collect(self):
        settings = self.owner.settings
        lake, exports = settings.lake_dir, settings.home / "exports"
        broker = self.owner.broker_state()
        up = GaugeMetricFamily("aero_broker_up", "1 when the Kafka broker answers")
        up.add_metric([], 1.0 if broker["up"] else 0.0)
        yield up
        lag = GaugeMetricFamily("aero_landing_lag_messages", "Messages on a topic not yet landed", labels=["topic"])
        for topic, n in broker["lag"].items():
            lag.add_metric([topic], n)
        yield lag
        dlq = GaugeMetricFamily("aero_dlq_messages", "Messages in a topic's dead-letter queue", labels=["topic"])
        for topic, n in broker["dlq"].items():
            dlq.add_metric([topic], n)
        yield dlq

        unreadable = GaugeMetricFamily("aero_lake_unreadable_files", "Lake files a scrape could not read (damaged):"
                                       " runs with an unreadable QC report, or 1 for a part that failed",
                                       labels=["part"])
        runs = GaugeMetricFamily("aero_windtunnel_runs", "Landed wind-tunnel runs by QC status", labels=["qc_status"])
        counts = {"pass": 0, "warn": 0, "fail": 0, "unchecked": 0}
        for r in _guarded(unreadable, "windtunnel", lambda: lr.windtunnel_runs(lake, exports), []):
            counts[r["qc_status"]] = counts.get(r["qc_status"], 0) + 1
        for status, n in counts.items():
            runs.add_metric([status], n)
        if counts.get("unreadable"):
            unreadable.add_metric(["windtunnel"], counts["unreadable"])
        yield runs

        # each part read on its own: a damaged file leaves its gauge out (and says so), never fails the scrape
        for name, doc, part, read in (
            ("aero_tires_open_alerts", "Tire alert episodes still open", "tires", lambda: _open_alerts(lake)),
            ("aero_f1_laps_summarised", "F1 laps summarised, all sessions", "f1",
             lambda: sum(s["laps"] for s in lr.f1_sessions(lake))),
            ("aero_rig_anomalies", "Rig anomalies in the last 7 days with data", "rig",
             lambda: _recent_rig_anomalies(lake)),
        ):
            gauge = GaugeMetricFamily(name, doc)
            n = _guarded(unreadable, part, read, None)
            if n is not None:
                gauge.add_metric([], n)
            yield gauge
        yield from _guarded(unreadable, "forecast", lambda: list(_forecast_families(lake)), [])
        yield unreadable


def _guarded(unreadable: GaugeMetricFamily, part: str, read, default):
    try:
        return read()
    except Exception:  # a damaged lake file: logged, counted, the rest of the scrape goes on
        log.exception("metrics: cannot read the lake's %s part", part)
        unreadable.add_metric([part], 1)
        return default


def _open_alerts(lake: Path) -> int:
    parts = lr._parts(lake, "tires", "alerts")
    if not parts:
        return 0
    import pyarrow as pa

    table = pa.concat_tables([pq.read_table(p, columns=["alert_id", "closed", "last_at"]) for _, p in parts])
    if table.num_rows == 0:
        return 0
    # an episode is written again by every hour it spans: its newest row says whether it is still open
    newest = table.sort_by([("last_at", "descending")]).group_by("alert_id", use_threads=False).aggregate(
        [("closed", "first")])
    return int(pc.sum(pc.invert(newest["closed_first"])).as_py() or 0)


def _recent_rig_anomalies(lake: Path) -> int:
    days = lr._parts(lake, "rig", "anomalies")[-7:]
    return sum(pq.ParquetFile(p).metadata.num_rows for _, p in days)


def _forecast_families(lake: Path):
    import json

    from aero_assets.forecast.assets import read_release_state
    from resources import LakeResource

    res = LakeResource(root=str(lake))
    drifted = GaugeMetricFamily("aero_forecast_drifted", "1 when the station's latest drift verdict is drift",
                                labels=["station"])
    retrain = GaugeMetricFamily("aero_forecast_last_retrain_timestamp_seconds", "When the station's champion was "
                                "last released", labels=["station"])
    champion = GaugeMetricFamily("aero_forecast_champion_info", "The champion in service", labels=["station", "model",
                                                                                                    "version"])
    for station in lr.forecast_stations(lake):
        report = lake / "forecast" / "drift_report" / f"station={station}" / "drift_report.json"
        try:
            verdict = json.loads(report.read_text())
            drifted.add_metric([station], 1.0 if verdict.get("drifted") else 0.0)
        except (OSError, ValueError, AttributeError):
            pass
        state = read_release_state(res, station)
        current = state["current"]
        if current is not None:
            champion.add_metric([station, str(current.get("kind")), str(current.get("version"))], 1.0)
            released = current.get("released_at") or current.get("released_ts")
            if isinstance(released, (int, float)):
                retrain.add_metric([station], released / 1e9 if released > 1e12 else released)
            elif isinstance(released, str):
                from datetime import datetime

                try:
                    retrain.add_metric([station], datetime.fromisoformat(released).timestamp())
                except ValueError:
                    pass
    yield drifted
    yield retrain
    yield champion
