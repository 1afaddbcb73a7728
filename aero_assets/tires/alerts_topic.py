"""What the live path has published on `tires.alerts`, and how far it has read `tires.raw`.

The hourly alerts asset compares its episodes with these (the reconciliation check) and publishes
the ones the live path should have published but did not (it was down, or not deployed). Both are
cheap: the alerts topic holds two small messages per episode, and positions are one metadata call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, TopicPartition

from aero_assets.codec import JSON
from resources.kafka import KafkaResource

LIVE_GROUP = "aero-live-tires-alerts"  # the consumer group of `aero stream tires-alerts`
_HEADERS = [("content-type", JSON.encode())]


@dataclass
class PublishedAlert:
    alert_id: str
    status: str
    opened_at: str
    message: dict


def published_alerts(kafka: KafkaResource, topic: str, timeout_s: float = 30.0) -> dict[str, PublishedAlert]:
    """Latest message per alert id on the alerts topic (read from the beginning to the end)."""
    identity = kafka.identity(topic)
    if identity is None:
        return {}
    consumer = kafka.consumer("aero-alerts-reader")
    out: dict[str, PublishedAlert] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in identity.partitions])
        pending = set(identity.partitions)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(5000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                try:
                    obj = json.loads(m.value() or b"")
                    out[obj["alert_id"]] = PublishedAlert(obj["alert_id"], obj.get("status", ""),
                                                          obj.get("opened_at", ""), obj)
                except (ValueError, KeyError, TypeError):
                    continue  # not an alert of ours; the topic is ours to write, but be tolerant on read
        if pending:
            raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
    finally:
        consumer.close()
    return out


def live_positions(kafka: KafkaResource, raw_topic: str, group: str = LIVE_GROUP) -> dict[int, int]:
    """Next offset of `tires.raw` a consumer group will read, per partition (empty: it never committed).

    For the live group: how far alerts are published; for the landing group: how far readings are landed.
    """
    identity = kafka.identity(raw_topic)
    if identity is None:
        return {}
    consumer = kafka.consumer(group)
    try:
        committed = consumer.committed([TopicPartition(raw_topic, p) for p in identity.partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}


def source_position(message: dict) -> tuple[int, int] | None:
    """(partition, offset) of the reading that opened a published episode, from its `source` field."""
    try:
        p, o = str(message.get("source", "")).split("/")
        return int(p), int(o)
    except ValueError:
        return None


def publish_alerts(kafka: KafkaResource, topic: str, messages: list[dict]) -> int:
    """Publish alert messages keyed by alert id; returns how many the broker acknowledged."""
    if not messages:
        return 0
    producer = kafka.producer(**{"linger.ms": 5})
    for msg in messages:
        producer.produce(topic, json.dumps(msg).encode(), msg["alert_id"].encode(), headers=_HEADERS)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} alert messages were not acknowledged by the broker within 30 s")
    return len(messages)
