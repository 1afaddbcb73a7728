"""Generic landing: Kafka topic -> Parquet files in the lake, exactly once in effect.

How exactly-once holds without transactions:
- A landing reads from the consumer group's committed offset to the partition's end (an EOF
  event, not the watermark: Tansu under-reports watermarks) and records the offsets it consumed.
- Files are named `<incarnation>-p<partition>-<first>-<last>.parquet`, so landing the same range
  again overwrites the same file.
- Offsets are committed only after the files (and the DLQ messages) are durable.
- Files whose first offset is at or past the committed offset can only come from a landing that
  died before its commit; they are removed before the range is landed again, so a crash between
  write and commit can neither lose nor duplicate rows.
- Two landings of one topic must not run at once: the Dagster assets that call this share a pool.

Bad messages never stop a landing: they go to `<topic>.dlq` with the reason in the `aero-error`
header and are counted in the result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aero_assets.codec import DecodeError, Decoder, content_type_of
from resources.kafka import KafkaResource, TopicIdentity
from resources.lake import write_parquet_atomic

log = logging.getLogger(__name__)

LANDING_GROUP = "aero-landing"
ERROR_HEADER = "aero-error"


@dataclass
class PartitionRange:
    first: int
    last: int  # inclusive
    messages: int = 0


@dataclass
class LandingResult:
    topic: str
    incarnation: str | None
    ranges: dict[int, list[PartitionRange]] = field(default_factory=dict)
    messages: int = 0
    rows: int = 0
    dlq_messages: int = 0
    dlq_reasons: Counter = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)
    bytes_written: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    splits: set[str] = field(default_factory=set)

    def metadata(self) -> dict[str, object]:
        """Plain-Python figures for Dagster metadata (no NumPy scalars)."""
        return {
            "topic": self.topic,
            "incarnation": self.incarnation or "",
            "messages": int(self.messages),
            "rows": int(self.rows),
            "dlq_messages": int(self.dlq_messages),
            "dlq_reasons": dict(self.dlq_reasons.most_common(10)),
            "offset_ranges": {
                str(p): [[r.first, r.last] for r in rs] for p, rs in sorted(self.ranges.items())
            },
            "files_written": len(self.files),
            "bytes_written": int(self.bytes_written),
            "orphan_files_removed": int(self.orphans_removed),
            "landing_seconds": round(self.seconds, 3),
        }


def file_name(incarnation: str, partition: int, first: int, last: int) -> str:
    return f"{incarnation}-p{partition}-{first:020d}-{last:020d}.parquet"


def parse_file_name(name: str) -> tuple[str, int, int, int] | None:
    stem = name.removesuffix(".parquet")
    parts = stem.split("-")
    if len(parts) != 4 or not parts[1].startswith("p"):
        return None
    try:
        return parts[0], int(parts[1][1:]), int(parts[2]), int(parts[3])
    except ValueError:
        return None


def landed_files(topic_dir: Path, incarnation: str | None = None, split: tuple[str, str] | None = None) -> list[Path]:
    """Landed files of a topic, optionally of one incarnation and one split value, in offset order."""
    base = topic_dir / f"{split[0]}={split[1]}" if split else topic_dir
    pattern = "*.parquet" if split else "**/*.parquet"
    out = []
    for p in base.glob(pattern):
        parsed = parse_file_name(p.name)
        if parsed and (incarnation is None or parsed[0] == incarnation):
            out.append((parsed[1], parsed[2], p))
    return [p for _, _, p in sorted(out)]


def _partition_files(topic_dir: Path, incarnation: str, partition: int) -> list[tuple[Path, int, int]]:
    """(path, first, last) of every file landed for one (incarnation, partition), in any split folder."""
    out = []
    for p in topic_dir.glob(f"**/{incarnation}-p{partition}-*.parquet"):
        parsed = parse_file_name(p.name)
        if parsed:
            out.append((p, parsed[2], parsed[3]))
    return out


def _remove_orphans(topic_dir: Path, incarnation: str, partition: int, committed: int) -> int:
    """Delete files of a landing that wrote but never committed (first offset >= committed)."""
    orphans = [p for p, first, _ in _partition_files(topic_dir, incarnation, partition) if first >= committed]
    for p in orphans:
        p.unlink(missing_ok=True)
    return len(orphans)


def _landed_end(topic_dir: Path, incarnation: str, partition: int) -> int:
    """One past the last offset landed for (incarnation, partition); 0 when nothing was landed."""
    return max((last + 1 for _, _, last in _partition_files(topic_dir, incarnation, partition)), default=0)


def land_topic(
    kafka: KafkaResource,
    lake_root: Path,
    topic: str,
    decoder: Decoder,
    *,
    identity: TopicIdentity | None = None,
    group_id: str = LANDING_GROUP,
    chunk_messages: int = 20_000,
    idle_timeout_s: float = 10.0,
    before_commit: Callable[[list[Path]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> LandingResult:
    """Land everything between the committed offsets and the end of each partition.

    Works in chunks of at most `chunk_messages` per partition so memory stays bounded; each chunk
    is written and committed before the next is read. `before_commit` is called with the files
    of a chunk once they are durable (tests use it to simulate a crash there).
    """
    t0 = time.perf_counter()
    identity = identity or kafka.identity(topic)
    result = LandingResult(topic=topic, incarnation=identity.incarnation if identity else None)
    if identity is None:
        log.info("topic %s does not exist yet: nothing to land", topic)
        return result
    topic_dir = lake_root / "landing" / topic
    inc = identity.incarnation
    dlq_topic = f"{topic}.dlq"
    consumer = kafka.consumer(group_id)
    dlq = None
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in identity.partitions], timeout=10)
        positions: dict[int, int] = {}
        for tp in committed:
            if tp.error:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                positions[tp.partition] = tp.offset
                result.orphans_removed += _remove_orphans(topic_dir, inc, tp.partition, tp.offset)
            else:
                # No committed offset: a first landing, or the group's offsets expired
                # (offsets.retention.minutes). The lake's files are durable data, never orphans here:
                # resume after the last one, so nothing is deleted and nothing landed twice.
                positions[tp.partition] = _landed_end(topic_dir, inc, tp.partition)
        consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])

        open_parts = set(positions)
        while open_parts:
            batch, eof = _read_chunk(consumer, open_parts, chunk_messages, idle_timeout_s)
            open_parts -= eof
            if not batch:
                if not eof:  # idle timeout without EOF: the broker stopped answering
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no data or EOF from {topic} "
                                                    f"within {idle_timeout_s}s"))
                continue
            files, commit = [], []
            for partition, msgs in batch.items():
                good, bad = _decode_partition(decoder, msgs)
                if bad:
                    dlq = dlq or _dlq_producer(kafka, dlq_topic)
                    for msg, reason in bad:
                        headers = [
                            *(msg.headers() or []),
                            (ERROR_HEADER, reason.encode()),
                            ("aero-source", f"{topic}/{partition}/{msg.offset()}".encode()),
                        ]
                        dlq.produce(dlq_topic, value=msg.value(), key=msg.key(), headers=headers)
                        result.dlq_reasons[reason.split(":")[0][:80]] += 1
                    result.dlq_messages += len(bad)
                first, last = msgs[0].offset(), msgs[-1].offset()
                for split, table in good.items():
                    name = file_name(inc, partition, first, last)
                    d = topic_dir / f"{decoder.split_column}={split}" if split is not None else topic_dir
                    result.bytes_written += write_parquet_atomic(table, d / name)
                    files.append(d / name)
                    result.rows += table.num_rows
                    if split is not None:
                        result.splits.add(split)
                result.ranges.setdefault(partition, []).append(PartitionRange(first, last, len(msgs)))
                result.messages += len(msgs)
                commit.append(TopicPartition(topic, partition, last + 1))
            if dlq is not None and dlq.flush(30) > 0:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"DLQ {dlq_topic} not acknowledged"))
            if before_commit is not None:
                before_commit(files)
            consumer.commit(offsets=commit, asynchronous=False)
            result.files.extend(files)
            if progress is not None:
                progress(sum(len(m) for m in batch.values()))
    finally:
        consumer.close()
    result.seconds = time.perf_counter() - t0
    return result


def _read_chunk(consumer, open_parts: set[int], limit: int, idle_timeout_s: float):
    """Read up to `limit` messages per partition; return (messages by partition, partitions at EOF)."""
    batch: dict[int, list] = defaultdict(list)
    eof: set[int] = set()
    idle_since = time.monotonic()
    while open_parts - eof:
        # consume() waits for the full timeout unless it gets all it asked for: keep the timeout short
        msgs = consumer.consume(10_000, timeout=0.05)
        if not msgs:
            if time.monotonic() - idle_since > idle_timeout_s:
                break
            continue
        idle_since = time.monotonic()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error on %s: %s", m.topic(), err)
                continue
            batch[m.partition()].append(m)
        if any(len(v) >= limit for v in batch.values()):
            # stop fetching; messages already prefetched past this point are fetched again next time
            break
    if any(len(v) >= limit for v in batch.values()):
        for p, msgs in batch.items():
            del msgs[limit:]
            # reposition so the next chunk starts right after what this one keeps
            consumer.seek(TopicPartition(msgs[0].topic(), p, msgs[-1].offset() + 1))
    return dict(batch), eof - {p for p, v in batch.items() if len(v) >= limit}


def _decode_partition(decoder: Decoder, msgs: list) -> tuple[dict[str | None, pa.Table], list[tuple[object, str]]]:
    """Decode one partition's messages, grouped by split value; bad ones are returned with a reason."""
    tables: dict[str | None, list[pa.Table]] = defaultdict(list)
    offsets: dict[str | None, list[tuple[int, int]]] = defaultdict(list)
    bad = []
    for m in msgs:
        try:
            d = decoder.decode(m.value(), m.key(), content_type_of(m.headers(), m.value()))
        except DecodeError as exc:
            bad.append((m, str(exc)))
            continue
        except Exception as exc:  # a decoder bug must not wedge the topic: the message goes to the DLQ
            log.exception("decoder failed on %s/%s@%s", m.topic(), m.partition(), m.offset())
            bad.append((m, f"internal decoder error: {type(exc).__name__}: {exc}"))
            continue
        tables[d.split].append(d.table)
        offsets[d.split].append((m.offset(), d.table.num_rows))
    out = {}
    for split, ts in tables.items():
        table = pa.concat_tables(ts)
        offs = np.array(offsets[split], dtype=np.int64)
        table = table.append_column("_offset", pa.array(np.repeat(offs[:, 0], offs[:, 1])))
        out[split] = table
    return out, bad


def _dlq_producer(kafka: KafkaResource, dlq_topic: str):
    kafka.ensure_topics([dlq_topic])
    return kafka.producer(**{"linger.ms": 0})
