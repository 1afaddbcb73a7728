"""Dead-letter queue: where undecodable messages go, in a form that always fits and is sent once.

Each DLQ message on `<topic>.dlq` carries the original key and headers plus:
- `aero-error`: why it was refused (capped at 1,000 characters);
- `aero-source`: `topic/partition/offset`, and `aero-source-incarnation`: the topic incarnation.
  Together they identify the source message, so a consumer can drop repeats.

A message too large for the DLQ (Kafka brokers refuse messages over ~1 MB by default; the original
may have been accepted by a broker configured for more) is kept whole in the lake under
`<lake>/dlq/<topic>/<incarnation>-p<partition>-<offset>.bin` (key and headers in a `.json` beside
it), and the DLQ gets its first `TRUNCATED_BYTES` with `aero-truncated`, `aero-payload-bytes`, `aero-payload-sha256` and
`aero-payload-path` (relative to the lake root). One oversized message can therefore never wedge a
topic's landing.

Repeats: a landing that crashes after its DLQ sends and before its commit sees the same bad
messages again. Before sending, it reads the DLQ from where it ended at the last checkpoint and
skips sources already there, so the DLQ holds each bad message once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from resources.kafka import KafkaResource
from resources.lake import write_bytes_atomic
from resources.settings import Topics

log = logging.getLogger(__name__)

ERROR_HEADER = "aero-error"
SOURCE_HEADER = "aero-source"
INCARNATION_HEADER = "aero-source-incarnation"
INLINE_MAX_BYTES = 512 * 1024  # payload + headers sent as is; half of Kafka's default message.max.bytes
TRUNCATED_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000
_OWN_HEADERS = {ERROR_HEADER, SOURCE_HEADER, INCARNATION_HEADER, "aero-truncated", "aero-payload-bytes",
                "aero-payload-sha256", "aero-payload-path"}


def dlq_dir(lake_root: Path, topic: str) -> Path:
    """Where oversized DLQ messages of `topic` are kept whole."""
    return lake_root / "dlq" / topic


@dataclass
class DlqStats:
    messages: int = 0
    repeats_skipped: int = 0
    oversized: int = 0
    reasons: Counter = field(default_factory=Counter)


class DlqWriter:
    """Sends one landing's bad messages; `flush()` before the landing commits its offsets."""

    def __init__(self, kafka: KafkaResource, lake_root: Path, topic: str, incarnation: str,
                 dlq_ends: dict[int, int]):
        self.kafka, self.lake_root, self.topic, self.incarnation = kafka, lake_root, topic, incarnation
        self.dlq_topic = Topics.dlq(topic)
        self.ends = dict(dlq_ends)  # next DLQ offset per DLQ partition after what we know was sent
        self.stats = DlqStats()
        self._producer = None
        self._already_sent: set[tuple[int, int]] | None = None
        self._errors: list[str] = []

    # -- sending ------------------------------------------------------------------------------
    def send(self, msg, reason: str) -> None:
        partition, offset = msg.partition(), msg.offset()
        self.stats.reasons[reason.split(":")[0][:80]] += 1
        self.stats.messages += 1
        if (partition, offset) in self._sent_before():
            self.stats.repeats_skipped += 1
            return
        value, key = msg.value(), msg.key()
        original = [(k, v) for k, v in (msg.headers() or []) if k not in _OWN_HEADERS]
        headers = [
            *original,
            (ERROR_HEADER, reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
            (SOURCE_HEADER, f"{self.topic}/{partition}/{offset}".encode()),
            (INCARNATION_HEADER, self.incarnation.encode()),
        ]
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        if size > INLINE_MAX_BYTES:
            value, key, headers = self._spill(msg, value or b"", key, headers, original)
        self._producer_for().produce(self.dlq_topic, value=value, key=key, headers=headers,
                                     on_delivery=self._delivered)

    def _spill(self, msg, value: bytes, key: bytes | None, headers: list, original: list):
        """Keep the whole message in the lake; send a stub that fits."""
        rel = dlq_dir(Path(), self.topic) / f"{self.incarnation}-p{msg.partition()}-{msg.offset():020d}.bin"
        write_bytes_atomic(self.lake_root / rel, value)
        # key and headers beside it, losslessly (base64: header values are bytes, not text)
        write_bytes_atomic((self.lake_root / rel).with_suffix(".json"), json.dumps({
            "key_b64": base64.b64encode(key).decode() if key is not None else None,
            "headers": [[k, base64.b64encode(v).decode() if v is not None else None] for k, v in original],
        }).encode())
        self.stats.oversized += 1
        ours = [h for h in headers if h[0] in _OWN_HEADERS]
        ours += [
            ("aero-truncated", b"1"),
            ("aero-payload-bytes", str(len(value)).encode()),
            ("aero-payload-sha256", hashlib.sha256(value).hexdigest().encode()),
            ("aero-payload-path", str(rel).encode()),
        ]
        if key is not None and len(key) > TRUNCATED_BYTES:
            key = key[:TRUNCATED_BYTES]
        return value[:TRUNCATED_BYTES], key, ours

    def _producer_for(self):
        if self._producer is None:
            self.kafka.ensure_topics([self.dlq_topic])
            self._producer = self.kafka.producer(**{"linger.ms": 5})
        return self._producer

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{err}")
            return
        p = msg.partition()
        self.ends[p] = max(self.ends.get(p, 0), msg.offset() + 1)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every DLQ message to be acknowledged; raise if any was not (the landing must not commit)."""
        if self._producer is None:
            return
        left = self._producer.flush(timeout_s)
        if left or self._errors:
            detail = "; ".join(self._errors[:3]) or f"{left} messages unacknowledged after {timeout_s:.0f}s"
            self._errors.clear()
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"DLQ {self.dlq_topic} not acknowledged: {detail}"))

    # -- repeats -----------------------------------------------------------------------------
    def _sent_before(self) -> set[tuple[int, int]]:
        """(partition, offset) of our incarnation's sources already on the DLQ past the checkpoint."""
        if self._already_sent is None:
            self._already_sent = self._scan()
        return self._already_sent

    def _scan(self, idle_timeout_s: float = 10.0) -> set[tuple[int, int]]:
        ident = self.kafka.identity(self.dlq_topic)
        if ident is None:
            return set()
        consumer = self.kafka.consumer("aero-dlq-scan")
        found: set[tuple[int, int]] = set()
        open_parts = set(ident.partitions)
        try:
            consumer.assign([TopicPartition(self.dlq_topic, p, self.ends.get(p, 0)) for p in ident.partitions])
            idle = time.monotonic()
            while open_parts:
                msgs = consumer.consume(1000, timeout=0.05)
                if not msgs:
                    if time.monotonic() - idle > idle_timeout_s:
                        raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                                        f"no EOF from {self.dlq_topic} within {idle_timeout_s}s"))
                    continue
                idle = time.monotonic()
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(m.partition())
                        continue
                    h = dict(m.headers() or [])
                    if h.get(INCARNATION_HEADER, b"").decode() != self.incarnation:
                        continue
                    src = h.get(SOURCE_HEADER, b"").decode().rsplit("/", 2)
                    if len(src) == 3 and src[0] == self.topic:
                        found.add((int(src[1]), int(src[2])))
                    self.ends[m.partition()] = max(self.ends.get(m.partition(), 0), m.offset() + 1)
        finally:
            consumer.close()
        if found:
            log.info("%d DLQ messages of %s were sent by a landing that did not commit; not sending them again",
                     len(found), self.topic)
        return found
