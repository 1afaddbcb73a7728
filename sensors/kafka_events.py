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
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aero_assets.landing import LANDING_GROUP
from resources.kafka import BrokerUnavailable, KafkaResource, TopicIdentity
from resources.settings import SettingsError


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
            offsets = {int(k): int(v) for k, v in obj.get("offsets", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor is treated as a fresh start, never a crash loop
        if any(not 0 <= k < 2**31 or not 0 <= v < 2**63 for k, v in offsets.items()):
            return cls()  # offsets Kafka cannot hold (negative means "the end" to librdkafka: events would be skipped)
        return cls(obj.get("incarnation"), offsets)


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


@dataclass(frozen=True)
class LandingPolicy:
    """When a backlog is worth a landing run: enough messages wait, or the oldest waited long enough.

    Both thresholds are settings (`<prefix>_MIN_MESSAGES`, `<prefix>_MAX_WAIT_S`), so a 2-core laptop
    runs the demo without a queue of tiny runs and production can land more often.
    """

    min_messages: int = 20_000
    max_wait_s: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, prefix: str = "AERO_TIRES_LANDING",
                 **defaults) -> LandingPolicy:
        env = os.environ if env is None else env
        out = dict(defaults)
        for name, attr, cast, lo in ((f"{prefix}_MIN_MESSAGES", "min_messages", int, 1),
                                      (f"{prefix}_MAX_WAIT_S", "max_wait_s", float, 0.0)):
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                value = cast(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number: set it to a {cast.__name__} >= {lo}.") from None
            if value < lo:
                raise SettingsError(f"{name}={value} is too small: set it to a value >= {lo}.")
            out[attr] = value
        return cls(**out)

    def due(self, lag: int, oldest_s: float | None) -> bool:
        return bool(lag) and (lag >= self.min_messages or (oldest_s is not None and oldest_s >= self.max_wait_s))


def waiting(kafka: KafkaResource, identity: TopicIdentity, group_id: str = LANDING_GROUP,
            now_ms: int | None = None) -> tuple[dict[int, int], int, float | None]:
    """(committed offset per partition, messages waiting (a lower bound on Tansu), age of the oldest in s).

    Cheap: offsets and watermarks, plus a peek at one message per partition with something waiting.
    """
    # the landing's group, to read its committed offsets; peeking with assign() commits nothing
    consumer = kafka.consumer(group_id, **{"enable.partition.eof": False})
    try:
        tps = [TopicPartition(identity.topic, p) for p in identity.partitions]
        committed = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=5)}
        lag, oldest = 0, None
        for p in identity.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(identity.topic, p), timeout=5)
            start = max(committed.get(p, 0), low)
            if high <= start:
                continue
            lag += high - start
            consumer.assign([TopicPartition(identity.topic, p, start)])
            msg = consumer.poll(2.0)
            if msg is not None and msg.error() is None:
                _, ts_ms = msg.timestamp()
                if ts_ms > 0:
                    age = ((now_ms if now_ms is not None else time.time() * 1000) - ts_ms) / 1000
                    oldest = age if oldest is None else max(oldest, age)
        return committed, lag, oldest
    finally:
        consumer.close()


@dataclass
class LandedCursor:
    """Cursor of a landing-driven sensor: the last landing materialization read, and the partitions its
    landings touched that are not partitions yet (a clock ahead), kept until they open."""

    after_storage_id: int = 0
    pending: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, raw: str | None) -> LandedCursor:
        try:
            obj = json.loads(raw or "{}")
            return cls(int(obj.get("after_storage_id", 0)), [str(h) for h in obj.get("pending", [])][:1000])
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"after_storage_id": self.after_storage_id, "pending": self.pending})


def landings_since(context, asset_key, after_storage_id: int, limit: int = 200) -> tuple[list[dict], int]:
    """(the metadata of each materialization of `asset_key` after the cursor, oldest first; the new cursor).

    What every landing-driven sensor reads: a landing lists what its rows touched in its metadata. At most
    `limit` per tick; the rest is read on the next tick (the cursor only moves past what was read).
    """
    import dagster as dg

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after_storage_id), limit=limit,
        ascending=True).records
    metas = [rec.asset_materialization.metadata if rec.asset_materialization else {} for rec in records]
    return metas, max([after_storage_id, *(rec.storage_id for rec in records)])


def touched_partitions(context, cursor: LandedCursor, asset_key, metadata_key: str,
                       partitions_def) -> tuple[list, set[str], set[str]]:
    """(landing records since the cursor, touched keys that are partitions, keys before the first one).

    Each landing lists what its rows touched under `metadata_key`; a key that is not a partition yet waits
    in the cursor (a clock ahead); one before the partitions' start is never materialized (the caller says so).
    """
    records, cursor.after_storage_id = landings_since(context, asset_key, cursor.after_storage_id)
    keys: set[str] = set(cursor.pending)
    for meta in records:
        touched = meta.get(metadata_key)
        keys.update(touched.value if touched is not None else [])
    ready = {k for k in keys if partitions_def.has_partition_key(k)}
    early = {k for k in keys - ready if k < partitions_def.start.strftime(partitions_def.fmt)}
    cursor.pending = sorted(keys - ready - early)
    return records, ready, early


def landing_request(topic: str, identity: TopicIdentity, committed: dict[int, int], lag: int, asset_key,
                    key_suffix: str, **tags: str):
    """The run request of a landing: its key names topic, incarnation and the offsets it starts from (a
    repeated tick asks for nothing new), plus `key_suffix` (a retry window, the events that made it due)."""
    import dagster as dg

    start = ",".join(f"{p}:{o}" for p, o in sorted(committed.items()))
    return dg.RunRequest(
        run_key=f"{topic}@{identity.incarnation}/{start}/{key_suffix}", asset_selection=[asset_key],
        tags={"aero/topic": topic, "aero/incarnation": identity.incarnation, "aero/start_offsets": start,
              "aero/waiting_hint": str(lag), **tags})


def backlog_landing(kafka: KafkaResource, topic: str, policy: LandingPolicy, asset_key,
                    retry_window_s: int = 600):
    """(a landing request when the backlog policy says so, or None; the reason when not)."""
    try:
        identity = kafka.identity(topic)
        if identity is None:
            return None, f"Topic {topic} does not exist yet."
        committed, lag, oldest = waiting(kafka, identity)
    except (BrokerUnavailable, KafkaException) as exc:
        return None, kafka_skip_reason(topic, exc)
    if policy.due(lag, oldest):
        return landing_request(topic, identity, committed, lag, asset_key, str(int(time.time()) // retry_window_s)), ""
    return None, backlog_note(topic, lag, oldest, policy)


def backlog_note(topic: str, lag: int, oldest: float | None, policy: LandingPolicy, when: str = "") -> str:
    return (f"{lag:,} message(s) wait on {topic}" + (f", the oldest for {oldest:.0f} s" if oldest is not None else "")
            + f" (landing {when}at {policy.min_messages:,} or {policy.max_wait_s:g} s).")
