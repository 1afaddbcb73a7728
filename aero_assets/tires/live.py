"""`aero stream tires-alerts`: alert episodes on `tires.alerts` within a second of the reading.

A long-running consumer in its own group (`aero-live-tires-alerts`, beside the landing's group on the
same topic). Each fetched batch is decoded with the landing's batch decoder and evaluated with
`episodes.detect_episodes`, the function the hourly asset uses, over the batch plus the few
minutes of history per tire the rules need (`Thresholds.lookback_ns`); so both paths find the same
episodes with the same ids, and the asset's reconciliation check can prove it.

State per partition (the history buffer and the open episodes) is small. It is snapshotted under
`$AERO_HOME/state/tires-alerts/<topic incarnation>/` every few seconds, then the offsets are
committed: a restart resumes from the snapshot and, at worst, publishes the last few seconds' alerts
again under the same ids. More instances in the group share the partitions (a vehicle's readings
are in one partition, keyed by vehicle id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aero_assets.codec import JSON, content_type_of
from aero_assets.tires.alerts_topic import LIVE_GROUP
from aero_assets.tires.decoder import SCHEMA, TireReadingsDecoder
from aero_assets.tires.episodes import (
    HIGH_TEMPERATURE,
    RAPID_PRESSURE_LOSS,
    Thresholds,
    codes,
    detect_episodes,
    episode_message,
)
from resources.kafka import KafkaResource
from resources.lake import write_bytes_atomic
from resources.settings import Settings

log = logging.getLogger(__name__)
LOG_SCHEMA = SCHEMA.append(pa.field("_partition", pa.int32())).append(pa.field("_offset", pa.int64()))
_HEADERS = [("content-type", JSON.encode())]


def _max_peak(alert_type: str) -> bool:
    return alert_type in (HIGH_TEMPERATURE, RAPID_PRESSURE_LOSS)


@dataclass
class PartitionState:
    next_offset: int = 0
    buffer: pa.Table = field(default_factory=LOG_SCHEMA.empty_table)
    open: dict[str, dict] = field(default_factory=dict)  # "vehicle|tire|type" -> episode row

    def to_bytes(self) -> bytes:
        """An Arrow IPC stream of the history buffer, the rest in its schema metadata.

        At 10,000 readings/s the buffer holds about a million rows; as JSON that was ~100 MB and
        seconds per snapshot, as Arrow it is a memory copy.
        """
        meta = {b"aero.live": json.dumps({"next_offset": self.next_offset, "open": self.open}).encode()}
        table = self.buffer.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionState:
        table = pa.ipc.open_stream(data).read_all()
        meta = json.loads(table.schema.metadata[b"aero.live"])
        return cls(int(meta["next_offset"]), table.replace_schema_metadata(None).cast(LOG_SCHEMA), meta["open"])


class LiveAlerts:
    """The pure core of the service: state per partition in, messages to publish out (testable without Kafka)."""

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        self.parts: dict[int, PartitionState] = {}

    def process(self, partition: int, rows: pa.Table, published_ms: np.ndarray | None = None) -> list[dict]:
        """Evaluate new decoded rows (LOG_SCHEMA, log order) of one partition; returns alert messages."""
        state = self.parts.setdefault(partition, PartitionState())
        if rows.num_rows == 0:
            return []
        combined = pa.concat_tables([state.buffer, rows.select(LOG_SCHEMA.names).cast(LOG_SCHEMA)])
        new = np.zeros(combined.num_rows, dtype=bool)
        new[state.buffer.num_rows:] = True
        found = detect_episodes(combined, self.thresholds, new_from=new)
        out: list[dict] = []
        # continuations first: an episode that ends in this batch is closed before a new one of its tire opens
        for ep in sorted(found.to_dict("records"), key=lambda e: (bool(e["open_is_new"]), e["opened_at"])):
            key = f"{ep['vehicle_id']}|{ep['tire']}|{ep['alert_type']}"
            if ep["open_is_new"]:
                if published_ms is not None:
                    idx = int(np.searchsorted(rows["_offset"].to_numpy(), ep["open_offset"]))
                    ep["reading_published_ms"] = int(published_ms[min(idx, len(published_ms) - 1)])
                out.append(self._message(ep))
                if not ep["closed"]:
                    state.open[key] = _episode_state(ep)
                continue
            known = state.open.get(key)
            if known is None:  # already closed and published, or begun before this state existed
                continue
            known["last_at"] = max(int(known["last_at"]), int(ep["last_at"]))
            if ep["new_readings"]:
                known["readings"] += int(ep["new_readings"])
                peak = float(ep["new_peak"])
                known["peak_value"] = max(known["peak_value"], peak) if _max_peak(ep["alert_type"]) else \
                    min(known["peak_value"], peak)
            if ep["closed"]:
                known["closed"] = True
                known["duration_s"] = (known["last_at"] - known["opened_at"]) / 1e9
                out.append(self._message(known))
                del state.open[key]
        state.buffer = self._trim(combined)
        state.next_offset = int(rows["_offset"][-1].as_py()) + 1
        return out

    def _message(self, ep: dict) -> dict:
        msg = episode_message(ep)
        if "reading_published_ms" in ep:
            msg["reading_published_ms"] = ep["reading_published_ms"]
        return msg

    def _trim(self, combined: pa.Table) -> pa.Table:
        """Keep, per tire, the readings within the rules' lookback of its latest reading."""
        if combined.num_rows == 0:
            return combined
        _, vcode = codes(combined["vehicle_id"])
        _, tcode = codes(combined["tire"])
        group = vcode * 8 + tcode
        ts = combined["ts"].cast(pa.int64()).to_numpy()
        latest = np.full(int(group.max()) + 1, np.iinfo(np.int64).min)
        np.maximum.at(latest, group, ts)
        return combined.filter(pa.array(ts >= latest[group] - self.thresholds.lookback_ns))


def _episode_state(ep: dict) -> dict:
    keep = ("alert_id", "vehicle_id", "tire", "alert_type", "opened_at", "last_at", "closed", "threshold",
            "peak_value", "duration_s", "readings", "open_partition", "open_offset")
    out = {k: ep[k] for k in keep}
    for k in ("opened_at", "last_at", "readings", "open_partition", "open_offset"):
        out[k] = int(out[k])
    for k in ("threshold", "peak_value", "duration_s"):
        out[k] = float(out[k])
    out["closed"] = bool(out["closed"])
    return out


class Snapshots:
    """Partition states on disk, per topic incarnation, written atomically (temp file, fsync, rename)."""

    def __init__(self, root: Path, incarnation: str):
        self.dir = root / incarnation

    def path(self, partition: int) -> Path:
        return self.dir / f"p{partition}.arrow"

    def load(self, partition: int) -> PartitionState | None:
        try:
            return PartitionState.from_bytes(self.path(partition).read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError, pa.ArrowException) as exc:
            log.warning("unreadable state snapshot %s (%s): starting that partition from its committed offset",
                        self.path(partition), exc)
            return None

    def save(self, partition: int, state: PartitionState) -> None:
        write_bytes_atomic(self.path(partition), state.to_bytes())


class IncarnationChanged(RuntimeError):
    """The broker restarted or the topic was recreated: offsets and state of the old one mean nothing."""


def _same_incarnation(kafka: KafkaResource, topic: str, incarnation: str) -> None:
    now = kafka.identity(topic)
    if now is None or now.incarnation != incarnation:
        raise IncarnationChanged(
            f"{topic} changed (incarnation {incarnation} -> {now.incarnation if now else 'gone'}): the broker "
            "restarted or the topic was recreated. Stopping without committing; start the service again (its "
            "supervisor does) and it reads the new topic from its start with fresh state.")


def run_live_alerts(settings: Settings, *, stop: threading.Event, thresholds: Thresholds | None = None,
                    kafka: KafkaResource | None = None, snapshot_every_s: float = 5.0,
                    on_publish: Callable[[dict], None] | None = None,
                    crash_after_publish: Callable[[], bool] | None = None,
                    ready: threading.Event | None = None) -> dict:
    """Consume `tires.raw` and publish alert episodes until `stop` is set; returns counters.

    `ready` is set once partitions are assigned (a group join takes a few seconds on Tansu).
    `crash_after_publish` is a test hook: when it returns True the loop raises after publishing and
    before snapshotting and committing, the window a real crash could hit.
    """
    thresholds = thresholds or Thresholds()
    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    raw, alerts_topic = settings.topics.tires_raw, settings.topics.tires_alerts
    kafka.ensure_topics([raw, alerts_topic])
    identity = kafka.identity(raw)
    snaps = Snapshots(settings.home / "state" / "tires-alerts", identity.incarnation)
    core = LiveAlerts(thresholds)
    decoder = TireReadingsDecoder()
    producer = kafka.producer(**{"linger.ms": 2})
    consumer = kafka.consumer(LIVE_GROUP, **{"enable.partition.eof": False, "session.timeout.ms": 10_000,
                                             "heartbeat.interval.ms": 1000})
    stats = {"readings": 0, "bad_messages": 0, "alerts_published": 0, "batches": 0}
    dirty: set[int] = set()

    def checkpoint(partitions: set[int]) -> None:
        """Alerts acknowledged -> state durable -> offsets committed, for the partitions given."""
        if not partitions:
            return
        if producer.flush(30) > 0:
            raise RuntimeError("alerts were not acknowledged by the broker within 30 s")
        commits = []
        for p in sorted(partitions):
            state = core.parts.get(p)
            if state is None:
                continue
            snaps.save(p, state)
            commits.append(TopicPartition(raw, p, state.next_offset))
        if commits:
            consumer.commit(offsets=commits, asynchronous=False)
        partitions.clear()

    def on_assign(c, partitions):
        for tp in partitions:
            committed = c.committed([TopicPartition(raw, tp.partition)], timeout=10)[0].offset
            state = snaps.load(tp.partition)
            if state is not None and state.next_offset >= max(committed, 0):
                core.parts[tp.partition] = state
                tp.offset = state.next_offset
            else:
                if committed > 0:
                    log.warning("no state snapshot for %s/%s at offset %s: starting there with empty history",
                                raw, tp.partition, committed)
                core.parts[tp.partition] = PartitionState(next_offset=max(committed, 0))
                tp.offset = max(committed, 0)
        c.assign(partitions)
        log.info("assigned %s", [(tp.partition, tp.offset) for tp in partitions])
        if ready is not None:
            ready.set()

    def on_revoke(c, partitions):
        checkpoint({tp.partition for tp in partitions} & set(core.parts))
        for tp in partitions:
            core.parts.pop(tp.partition, None)

    consumer.subscribe([raw], on_assign=on_assign, on_revoke=on_revoke)
    last_snapshot = last_log = time.monotonic()
    try:
        while not stop.is_set():
            msgs = consumer.consume(10_000, timeout=0.05)
            by_part: dict[int, list] = {}
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                by_part.setdefault(m.partition(), []).append(m)
            for p, ms in by_part.items():
                if p not in core.parts:
                    continue  # revoked meanwhile
                values, keys, cts, keep = [], [], [], []
                for m in ms:
                    try:
                        cts.append(content_type_of(m.headers(), m.value()))
                    except Exception:
                        stats["bad_messages"] += 1
                        continue
                    values.append(m.value())
                    keys.append(m.key())
                    keep.append(m)
                decoded = decoder.decode_batch(values, keys, cts)
                stats["bad_messages"] += len(decoded.bad)
                offsets = np.fromiter((m.offset() for m in keep), dtype=np.int64, count=len(keep))
                published = np.fromiter((m.timestamp()[1] for m in keep), dtype=np.int64, count=len(keep))
                idx = decoded.message_index
                rows = decoded.table.append_column("_partition", pa.array(np.full(len(idx), p, np.int32))) \
                                    .append_column("_offset", pa.array(offsets[idx]))
                messages = core.process(p, rows, published[idx])
                core.parts[p].next_offset = int(ms[-1].offset()) + 1  # bad messages at the end are passed too
                for msg in messages:
                    producer.produce(alerts_topic, json.dumps(msg).encode(), msg["alert_id"].encode(),
                                     headers=_HEADERS)
                    if on_publish is not None:
                        on_publish(msg)
                producer.poll(0)
                stats["readings"] += rows.num_rows
                stats["alerts_published"] += len(messages)
                stats["batches"] += 1
                dirty.add(p)
            if crash_after_publish is not None and crash_after_publish():
                producer.flush(10)
                raise RuntimeError("injected crash after publishing, before the snapshot and commit")
            now = time.monotonic()
            if now - last_snapshot >= snapshot_every_s:
                _same_incarnation(kafka, raw, identity.incarnation)
                checkpoint(dirty)
                last_snapshot = now
            if now - last_log >= 10:
                log.info("live tire alerts: %s", stats)
                last_log = now
        checkpoint(dirty)
    except BaseException:
        core.parts.clear()  # died: closing must not snapshot or commit what may not be published
        raise
    finally:
        consumer.close()
    return stats
