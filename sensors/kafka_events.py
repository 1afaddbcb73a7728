"""Reading a small lifecycle topic from a sensor: cursor = topic incarnation + next offset per partition.

A sensor tick must be cheap and must never lose an event: it reads at most `max_messages`
from the offsets in its cursor to the partition ends and returns the new cursor; the caller
stores that cursor in the same `SensorResult` as its run requests, so a failed tick stores
nothing and the next tick reads the same events again.

When the topic's incarnation changes (the embedded broker restarted with a new cluster id, or the
topic was deleted and recreated), old offsets mean nothing: the reader starts from the new
beginning and says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, TopicPartition

from resources.kafka import BrokerUnavailable, KafkaResource, TopicIdentity


@dataclass
class TopicCursor:
    incarnation: str | None = None
    offsets: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"incarnation": self.incarnation, "offsets": {str(k): v for k, v in self.offsets.items()}})

    @classmethod
    def from_json(cls, raw: str | None) -> TopicCursor:
        if not raw:
            return cls()
        try:
            obj = json.loads(raw)
            return cls(obj.get("incarnation"), {int(k): int(v) for k, v in obj.get("offsets", {}).items()})
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor is treated as a fresh start, never a crash loop


@dataclass(frozen=True)
class Event:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list | None


@dataclass
class ReadResult:
    identity: TopicIdentity
    events: list[Event]
    cursor: TopicCursor
    incarnation_changed_from: str | None = None
    reached_end: bool = True


def kafka_skip_reason(topic: str, exc: Exception) -> str:
    """A tick's skip reason for a Kafka failure: what failed, and that nothing was lost."""
    if isinstance(exc, BrokerUnavailable):
        return str(exc)
    return (f"Kafka error while reading {topic}: {exc}. Skipping this tick; the cursor is unchanged, so the "
            "next tick reads the same events again. If it persists, check the Kafka settings (AERO_KAFKA_*).")


def landing_lag_hint(kafka: KafkaResource, identity: TopicIdentity, group_id: str) -> dict[str, int]:
    """Per partition: high watermark minus the landing group's committed offset.

    A hint only: Tansu under-reports watermarks after multi-message batches (DESIGN.md), so the
    true backlog can be larger; real Kafka reports it exactly. Two cheap metadata calls, no data.
    """
    consumer = kafka.consumer(group_id)
    try:
        tps = [TopicPartition(identity.topic, p) for p in identity.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}
        lag = {}
        for p in identity.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(identity.topic, p), timeout=5)
            lag[str(p)] = max(0, high - max(committed.get(p, 0), 0))
        return lag
    finally:
        consumer.close()


def read_events(kafka: KafkaResource, topic: str, cursor: TopicCursor, identity: TopicIdentity,
                max_messages: int = 2000, timeout_s: float = 10.0) -> ReadResult:
    changed = None
    offsets = dict(cursor.offsets)
    if cursor.incarnation is not None and cursor.incarnation != identity.incarnation:
        changed, offsets = cursor.incarnation, {}
    start = {p: offsets.get(p, 0) for p in identity.partitions}
    consumer = kafka.consumer("aero-sensors")
    events: list[Event] = []
    pending = set(start)
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        deadline = time.monotonic() + timeout_s
        while pending and len(events) < max_messages and time.monotonic() < deadline:
            for m in consumer.consume(min(500, max_messages - len(events)), timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                events.append(Event(m.partition(), m.offset(), m.key(), m.value(), m.headers()))
    finally:
        consumer.close()
    new_offsets = dict(start)
    for e in events:
        new_offsets[e.partition] = max(new_offsets[e.partition], e.offset + 1)
    return ReadResult(identity, events, TopicCursor(identity.incarnation, new_offsets), changed, not pending)
