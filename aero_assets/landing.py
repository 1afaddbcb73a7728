"""Generic landing: Kafka topic -> Parquet files in the lake, exactly once in effect.

How exactly-once holds without transactions (the state it keeps is described in `landing_state`):
- A landing holds the topic's exclusive lock (`flock` on a file in the topic folder) from start to
  end, so two landings of one topic never interleave, whatever the Dagster pool says.
- It reads from its start position to the partition's end (an EOF event, not the watermark: Tansu
  under-reports watermarks) and records the offsets it consumed. The start position is the
  consumer group's committed offset or, when the group has none (first landing, expired offsets),
  the lake checkpoint: the end of the last chunk whose files were all durable.
- Files are named `<incarnation>-p<partition>-<first>-<last>.parquet`, so landing the same range
  again overwrites the same file. Files at or past the start position come from a landing that
  died before finishing its chunk; they are removed before the range is landed again, and so are
  temporary files of killed writers.
- Per chunk: files durable -> DLQ messages acknowledged -> checkpoint -> offsets committed. A
  commit never moves the group's offset backwards: if another landing moved it meanwhile, this
  one stops with an error instead of committing.

Bad messages never stop a landing: they go to `<topic>.dlq` (see `aero_assets.dlq`) and are
counted in the result. Memory stays bounded: chunks are capped in messages and bytes, and decoders
refuse messages that would expand past their limit.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aero_assets.codec import ARROW, JSON, DecodeError, Decoder, content_type_of
from aero_assets.dlq import ERROR_HEADER, DlqWriter, dlq_dir
from aero_assets.landing_state import (
    Checkpoint,
    file_name,
    landed_files,
    parse_file_name,
    partition_files,
    remove_files_from,
    remove_temp_files,
    topic_lock,
)
from resources.kafka import KafkaResource, TopicIdentity
from resources.lake import write_parquet_atomic

__all__ = ["ERROR_HEADER", "LANDING_GROUP", "LandingConflict", "LandingResult", "land_topic", "landed_files",
           "parse_file_name"]

log = logging.getLogger(__name__)

LANDING_GROUP = "aero-landing"
CHUNK_BYTES = 256 * 1024 * 1024  # message bytes held in memory per chunk, all partitions together


class LandingConflict(RuntimeError):
    """Another landing moved the committed offset while this one ran; committing would move it back."""


class IncarnationChanged(RuntimeError):
    """The broker restarted or the topic was recreated while a landing ran; nothing of the chunk is kept."""


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
    start_offsets: dict[int, int] = field(default_factory=dict)
    start_source: str = ""
    messages: int = 0
    rows: int = 0
    dlq_messages: int = 0
    dlq_repeats_skipped: int = 0
    dlq_oversized: int = 0
    dlq_reasons: Counter = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)
    bytes_written: int = 0
    orphans_removed: int = 0
    files_trimmed: int = 0
    temp_files_removed: int = 0
    lock_wait_seconds: float = 0.0
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
            "dlq_oversized_kept_in_lake": int(self.dlq_oversized),
            "dlq_repeats_skipped": int(self.dlq_repeats_skipped),
            "start_offsets": {str(p): o for p, o in sorted(self.start_offsets.items())},
            "start_from": self.start_source,
            "offset_ranges": {
                str(p): [[r.first, r.last] for r in rs] for p, rs in sorted(self.ranges.items())
            },
            "files_written": len(self.files),
            "bytes_written": int(self.bytes_written),
            "orphan_files_removed": int(self.orphans_removed),
            "files_trimmed_at_start": int(self.files_trimmed),
            "temp_files_removed": int(self.temp_files_removed),
            "lock_wait_seconds": round(self.lock_wait_seconds, 3),
            "landing_seconds": round(self.seconds, 3),
        }


def land_topic(
    kafka: KafkaResource,
    lake_root: Path,
    topic: str,
    decoder: Decoder,
    *,
    identity: TopicIdentity | None = None,
    group_id: str = LANDING_GROUP,
    chunk_messages: int = 20_000,
    chunk_bytes: int = CHUNK_BYTES,
    idle_timeout_s: float = 10.0,
    lock_timeout_s: float = 600.0,
    after_file: Callable[[Path], None] | None = None,
    before_commit: Callable[[list[Path]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> LandingResult:
    """Land everything between the start position and the end of each partition.

    Works in chunks of at most `chunk_messages` per partition and `chunk_bytes` in all, so memory
    stays bounded; each chunk is written, checkpointed and committed before the next is read.
    `after_file` (each durable file) and `before_commit` (a chunk's files, all durable, DLQ sent
    and checkpoint written) are crash points for tests.
    """
    t0 = time.perf_counter()
    topic_dir = lake_root / "landing" / topic
    result = LandingResult(topic=topic, incarnation=None)
    probe = _IdentityProbe(kafka)
    with topic_lock(topic_dir, timeout_s=lock_timeout_s) as waited:
        result.lock_wait_seconds = waited
        # looked up under the lock: a landing that waited minutes must not land a stale incarnation
        identity = identity if identity is not None and waited == 0 else probe.identity(topic)
        if identity is None:
            log.info("topic %s does not exist yet: nothing to land", topic)
            return result
        result.incarnation = identity.incarnation
        _land_locked(kafka, probe, lake_root, topic_dir, identity, decoder, result, group_id=group_id,
                     chunk_messages=chunk_messages, chunk_bytes=chunk_bytes, idle_timeout_s=idle_timeout_s,
                     after_file=after_file, before_commit=before_commit, progress=progress)
    result.seconds = time.perf_counter() - t0
    return result


def _start_positions(consumer, topic_dir: Path, identity: TopicIdentity, checkpoint: Checkpoint,
                     result: LandingResult) -> tuple[dict[int, int], dict[int, int]]:
    """(where to start reading, the committed offsets as found) per partition."""
    committed = consumer.committed([TopicPartition(identity.topic, p) for p in identity.partitions], timeout=10)
    positions: dict[int, int] = {}
    sources = set()
    for tp in committed:
        if tp.error:
            raise KafkaException(tp.error)
        files = partition_files(topic_dir, identity.incarnation, tp.partition)  # one scan serves all below
        if tp.offset >= 0 and not checkpoint.exists and not files:
            # Offsets this lake never committed: every landing checkpoints before it commits. They come
            # from a landing that lost its broker between its last check and its commit (and committed
            # into the restarted one), or from another lake. Trusting them would skip the messages below.
            log.warning("ignoring committed offset %s of %s/%s: this lake has no checkpoint or file of incarnation %s",
                        tp.offset, identity.topic, tp.partition, identity.incarnation)
            positions[tp.partition], source = 0, "beginning (a committed offset not ours was ignored)"
        elif tp.offset >= 0:
            positions[tp.partition], source = tp.offset, "committed offsets"
        else:
            # No committed offset: a first landing, or the group's offsets expired
            # (offsets.retention.minutes). Resume at the lake checkpoint, never at "the end of the
            # files that exist": a crash can leave one split folder's file written and another's not.
            positions[tp.partition] = checkpoint.partitions.get(tp.partition, 0)
            source = "lake checkpoint" if tp.partition in checkpoint.partitions else "beginning"
        sources.add(source)
        result.files_trimmed += _trim_straddling_files(files, identity.incarnation, tp.partition,
                                                       positions[tp.partition])
        result.orphans_removed += remove_files_from(files, positions[tp.partition])
    result.start_offsets, result.start_source = dict(positions), ", ".join(sorted(sources))
    return positions, {tp.partition: tp.offset for tp in committed}


def _trim_straddling_files(files: list[tuple[Path, int, int]], incarnation: str, partition: int,
                           position: int) -> int:
    """Cut a landed file that the start position falls inside down to the rows before it.

    A group rewound into the middle of a file (an operator replaying part of a topic) would otherwise
    land the file's tail a second time. The head is kept, not re-read: the log may no longer hold it
    (retention). Crash-safe: the trimmed file is durable before the original goes, and a repeat
    produces the same trimmed file.
    """
    trimmed = 0
    for path, first, last in files:
        if not first < position <= last:
            continue
        table = pq.read_table(path)
        head = table.filter(pc.less(table["_offset"], position))
        if head.num_rows:
            write_parquet_atomic(head, path.with_name(file_name(incarnation, partition, first, position - 1)))
        path.unlink()
        trimmed += 1
    return trimmed


class _IdentityProbe:
    """`KafkaResource.identity` with one admin client for the whole landing.

    A new client per look-up costs ~50 ms (connecting to the broker twice: bootstrap, then the broker
    it names), once at the start and once per chunk. The look-up itself is the resource's own code,
    and every call still asks the broker (metadata and topic description are never cached), so a
    restarted broker or a recreated topic is seen as before.
    """

    def __init__(self, kafka: KafkaResource):
        self._kafka = kafka
        self._admin = None

    def admin(self):
        if self._admin is None:
            self._admin = self._kafka.admin()
        return self._admin

    def __getattr__(self, name):  # what `identity` reads besides `admin()`: `_metadata`, `bootstrap_servers`
        return getattr(self._kafka, name)

    def identity(self, topic: str) -> TopicIdentity | None:
        return type(self._kafka).identity(self, topic)


def _land_locked(kafka: KafkaResource, probe: _IdentityProbe, lake_root: Path, topic_dir: Path, identity: TopicIdentity,
                 decoder: Decoder, result: LandingResult, *, group_id: str, chunk_messages: int,
                 chunk_bytes: int, idle_timeout_s: float, after_file, before_commit, progress) -> None:
    topic, inc = identity.topic, identity.incarnation
    result.temp_files_removed = remove_temp_files(topic_dir) + remove_temp_files(dlq_dir(lake_root, topic))
    checkpoint = Checkpoint.load(topic_dir, inc)
    consumer = kafka.consumer(group_id)
    dlq = None
    try:
        positions, committed = _start_positions(consumer, topic_dir, identity, checkpoint, result)
        # Starting behind the checkpoint (a crash between checkpoint and commit, or a rewound group):
        # DLQ messages for the range ahead may predate the checkpoint's DLQ ends, so look from the start.
        behind = any(o < checkpoint.partitions.get(p, o) for p, o in positions.items())
        dlq = DlqWriter(kafka, lake_root, topic, inc, {} if behind else checkpoint.dlq_ends)
        if positions != {p: checkpoint.partitions.get(p) for p in positions}:
            checkpoint.partitions.update(positions)  # never claim rows that were just removed as orphans
            checkpoint.save(topic_dir)
        consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])

        open_parts = set(positions)
        while open_parts:
            batch, heads, eof = _read_chunk(consumer, open_parts, chunk_messages, chunk_bytes, idle_timeout_s)
            open_parts -= eof
            if not batch:
                if not eof:  # idle timeout without EOF: the broker stopped answering
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no data or EOF from {topic} "
                                                    f"within {idle_timeout_s}s"))
                continue
            files, commit = [], []
            budget = chunk_bytes  # counted again in decoded bytes: a small message can expand a lot
            for partition, msgs in batch.items():
                good, bad, used, n = _decode_partition(decoder, msgs, heads[partition], max(budget, 1))
                budget -= used
                if n < len(msgs):  # over budget: the rest of the partition is read again by the next chunk
                    del msgs[n:]
                    consumer.seek(TopicPartition(topic, partition, msgs[-1].offset() + 1))
                    open_parts.add(partition)
                for msg, reason in bad:
                    dlq.send(msg, reason)
                first, last = msgs[0].offset(), msgs[-1].offset()
                for split, table in good.items():
                    d = topic_dir / f"{decoder.split_column}={split}" if split is not None else topic_dir
                    path = d / file_name(inc, partition, first, last)
                    result.bytes_written += write_parquet_atomic(table, path)
                    files.append(path)
                    result.rows += table.num_rows
                    if split is not None:
                        result.splits.add(split)
                    if after_file is not None:
                        after_file(path)
                result.ranges.setdefault(partition, []).append(PartitionRange(first, last, len(msgs)))
                result.messages += len(msgs)
                commit.append(TopicPartition(topic, partition, last + 1))
            dlq.flush()
            _same_incarnation(probe, identity, files)
            checkpoint.partitions.update({tp.partition: tp.offset for tp in commit})
            checkpoint.dlq_ends = dict(dlq.ends)
            checkpoint.save(topic_dir)
            if before_commit is not None:
                before_commit(files)
            _commit_forward(consumer, commit, committed)
            committed.update({tp.partition: tp.offset for tp in commit})
            result.files.extend(files)
            if progress is not None:
                progress(sum(len(m) for m in batch.values()))
        # partitions that had nothing to land and no group offset (a crash after their checkpoint):
        # commit where they stand, so the group's offsets (and lag figures) are right
        unset = [TopicPartition(topic, p, o) for p, o in positions.items() if committed.get(p, -1) < 0 < o]
        if unset:
            _commit_forward(consumer, unset, committed)
    finally:
        consumer.close()
        if dlq is not None:
            s = dlq.stats
            result.dlq_messages, result.dlq_reasons = s.messages, s.reasons
            result.dlq_repeats_skipped, result.dlq_oversized = s.repeats_skipped, s.oversized


def _same_incarnation(kafka: KafkaResource | _IdentityProbe, identity: TopicIdentity, files: list[Path]) -> None:
    """Stop before checkpoint and commit if the broker restarted or the topic was recreated meanwhile.

    A restarted broker answers on the same address: offsets read from the old one and committed
    to the new one would make the next landing skip the new topic's first messages. The chunk's
    files may mix both brokers' messages, so they are removed, not checkpointed.
    """
    now = kafka.identity(identity.topic)
    if now is not None and now.incarnation == identity.incarnation:
        return
    for f in files:
        f.unlink(missing_ok=True)
    raise IncarnationChanged(
        f"{identity.topic} changed while landing (incarnation {identity.incarnation} -> "
        f"{now.incarnation if now else 'gone'}): the broker restarted or the topic was recreated. Nothing of "
        "this chunk was committed; the next landing reads the new incarnation from its start."
    )


def _commit_forward(consumer, commit: list[TopicPartition], expected: dict[int, int]) -> None:
    """Commit, unless another landing moved a committed offset since this landing last saw it.

    Under the topic lock this cannot happen; it guards against a landing of the same group that
    does not share our lake (and so not our lock): committing would move its offsets backwards.
    """
    now = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in commit], timeout=10)
    for tp in now:
        if tp.error:
            raise KafkaException(tp.error)
        if tp.offset != expected[tp.partition] and tp.offset > max(expected[tp.partition], 0):
            raise LandingConflict(
                f"the committed offset of {tp.topic}/{tp.partition} moved from {expected[tp.partition]} to "
                f"{tp.offset} while this landing ran: another landing of the group uses a different lake or "
                "ignores its lock. Not committing (that would move the offset backwards)."
            )
    consumer.commit(offsets=commit, asynchronous=False)


# the header lists well-behaved producers send: their size is known without walking them
_USUAL_HEADERS = ([("content-type", JSON.encode())], [("content-type", ARROW.encode())])
_USUAL_HEADER_BYTES = 64 + len("content-type") + len(ARROW)


def _wire_size(value: bytes | None, key: bytes | None, headers) -> int:
    """Bytes a message holds in memory: value, key and headers (a tombstone still has a key and headers)."""
    size = len(value or b"") + len(key or b"") + 64
    if headers:
        if headers == _USUAL_HEADERS[0] or headers == _USUAL_HEADERS[1]:
            return size + _USUAL_HEADER_BYTES
        size += sum(len(k) + len(v or b"") for k, v in headers)
    return size


def _read_chunk(consumer, open_parts: set[int], limit: int, byte_limit: int, idle_timeout_s: float):
    """Read up to `limit` messages per partition and about `byte_limit` bytes in all.

    Returns (messages by partition, their headers by partition, partitions at EOF). The headers are
    read once here (`Message.headers()` builds a new list on every call: ~3 us, as much as the rest
    of a message's bookkeeping) and handed on to the decoding.
    """
    batch: dict[int, list] = defaultdict(list)
    heads: dict[int, list] = defaultdict(list)
    sizes: dict[int, list[int]] = defaultdict(list)
    eof: set[int] = set()
    size = 0
    idle_since = time.monotonic()
    full = False
    while open_parts - eof and not full:
        # consume() waits for the full timeout unless it gets all it asked for: keep the timeout short.
        # With one partition left, ask for no more than its limit leaves: messages past the cut would
        # be dropped by a seek, and the seek also throws away what the client prefetched meanwhile.
        want = 10_000
        reading = open_parts - eof
        if len(reading) == 1:
            want = max(1, min(want, limit - len(batch.get(next(iter(reading)), ()))))
        msgs = consumer.consume(want, timeout=0.05)
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
            p, h = m.partition(), m.headers()
            w = _wire_size(m.value(), m.key(), h)
            batch[p].append(m)
            heads[p].append(h)
            sizes[p].append(w)
            size += w
        full = size >= byte_limit or any(len(v) >= limit for v in batch.values())
    if full:
        # keep at most `limit` per partition and stop at the byte budget; prefetched messages past
        # the cut are fetched again by the next chunk
        budget, cut = byte_limit, set()
        for p, msgs in batch.items():
            if size < byte_limit:  # only the message limit applies: no need to weigh each message again
                keep = min(len(msgs), limit)
            else:
                keep = 0
                for w in sizes[p][:limit]:
                    keep += 1
                    budget -= w
                    if budget <= 0:
                        break
            keep = max(keep, 1)
            if keep < len(msgs):
                del msgs[keep:]
                del heads[p][keep:]
                cut.add(p)
                consumer.seek(TopicPartition(msgs[0].topic(), p, msgs[-1].offset() + 1))
        eof -= cut  # a cut partition is not at its end: the next chunk goes on reading it
    return {p: v for p, v in batch.items() if v}, heads, eof


def _decode_partition(decoder: Decoder, msgs: list, heads: list, budget: int):
    """Decode a partition's messages in order until `budget` decoded bytes are used (at least one message).

    Returns (tables by split value, bad messages with a reason, decoded bytes used, messages used).
    Decoders with a `decode_batch` (JSON topics) get the whole list at once; their output is bounded
    by the chunk's wire bytes (a JSON reading decodes to fewer bytes than it takes on the wire).
    """
    if hasattr(decoder, "decode_batch"):
        return _decode_partition_batch(decoder, msgs, heads)
    tables: dict[str | None, list[pa.Table]] = defaultdict(list)
    offsets: dict[str | None, list[tuple[int, int]]] = defaultdict(list)
    bad = []
    used = n = 0
    for m, headers in zip(msgs, heads, strict=True):
        n += 1
        try:
            value = m.value()
            d = decoder.decode(value, m.key(), content_type_of(headers, value))
        except DecodeError as exc:
            bad.append((m, str(exc)))
            continue
        except Exception as exc:  # a decoder bug must not wedge the topic: the message goes to the DLQ
            log.exception("decoder failed on %s/%s@%s", m.topic(), m.partition(), m.offset())
            bad.append((m, f"internal decoder error: {type(exc).__name__}: {exc}"))
            continue
        tables[d.split].append(d.table)
        offsets[d.split].append((m.offset(), d.table.num_rows))
        used += d.table.nbytes
        if used >= budget:
            break
    out = {}
    for split, ts in tables.items():
        table = pa.concat_tables(ts)
        offs = np.array(offsets[split], dtype=np.int64)
        table = table.append_column("_offset", pa.array(np.repeat(offs[:, 0], offs[:, 1])))
        out[split] = table
    return out, bad, used, n


def _decode_partition_batch(decoder, msgs: list, heads: list):
    json_headers = _USUAL_HEADERS[0]
    values = [m.value() for m in msgs]
    if all(h == json_headers for h in heads):  # the common case: every message says JSON, nothing to parse
        bad, idx, cts = [], msgs, [JSON] * len(msgs)
        keys = [m.key() for m in msgs]
        offsets = np.fromiter((m.offset() for m in msgs), dtype=np.int64, count=len(msgs))
    else:
        bad, idx, cts, keep = [], [], [], []
        for i, (m, headers) in enumerate(zip(msgs, heads, strict=True)):
            if headers == json_headers:
                cts.append(JSON)
            else:
                try:
                    cts.append(content_type_of(headers, values[i]))
                except DecodeError as exc:
                    bad.append((m, str(exc)))
                    continue
            idx.append(m)
            keep.append(i)
        values = [values[i] for i in keep]
        keys = [m.key() for m in idx]
        offsets = np.fromiter((m.offset() for m in idx), dtype=np.int64, count=len(idx))
    out: dict[str | None, pa.Table] = {}
    if idx:
        d = decoder.decode_batch(values, keys, cts)
        bad.extend((idx[i], reason) for i, reason in d.bad)
        table = d.table.append_column("_offset", pa.array(offsets[d.message_index]))
        if d.splits is None:
            if table.num_rows:
                out[None] = table
        else:
            split_col = pa.array(d.splits, pa.string())
            for value in pc.unique(split_col).to_pylist():
                out[value] = table.filter(pc.equal(split_col, value))
    bad.sort(key=lambda b: b[0].offset())
    return out, bad, sum(t.nbytes for t in out.values()), len(msgs)
