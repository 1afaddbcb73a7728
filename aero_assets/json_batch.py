"""Batch JSON decoding: a whole fetched batch of JSON messages parsed at once, same results as one by one.

Parsing message by message costs a `json.loads` and a small Arrow table per message; at one reading
per message that caps a landing near 40k readings/s. Here the values of a batch are joined into one
newline-delimited buffer and parsed by pyarrow's multi-threaded JSON reader into columns, which a
topic's decoder then validates with vectorised checks.

The per-message `decode` of the topic stays the authority: whenever the batch cannot be mapped row
for row onto its messages (a parse error, a pretty-printed object spanning lines, a blank line), the
batch is split in halves and parsed again, down to single messages decoded one by one. A message
that fails a vectorised check is decoded alone too, so its DLQ reason is exactly the one the
per-message path gives. A message may carry several readings as newline-delimited objects
(NDJSON, e.g. a gateway sending all four tires of one tick); a bad line sends the whole message
to the DLQ, never a part of it.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from aero_assets.codec import JSON, Decoded, DecodeError

# rows parsed per pyarrow block: large blocks parse faster; 16 MiB measured best on 2 cores
_BLOCK_SIZE = 16 * 1024 * 1024
_MIN_BLOCK = 1024 * 1024
_SLICE_BYTES = 8 * 1024 * 1024
_WORKERS = 2  # slices prepared at once (see `_prepared_in_order`)


@dataclass
class BatchDecoded:
    """Good rows of a batch in message order, the message each row came from, and the bad messages."""

    table: pa.Table
    message_index: np.ndarray  # int64, one per row: index of the row's message in the batch
    splits: list[str | None] | None  # split value per row, or None when the topic is not split
    bad: list[tuple[int, str]]


# (parsed columns, the key of each row's message as binary) -> (table in the landed schema, rows that are valid,
# split value per row or None), or None when a column cannot be converted as a whole (the batch is
# then halved). Must never raise for bad data: bad rows are marked in the mask.
Finisher = Callable[[pa.Table, pa.Array],
                    tuple[pa.Table, np.ndarray, list[str | None] | None] | None]


# bytes that may follow a `}` in a slice the batch parser is given: `,` `}` `]` or a newline
_AFTER_CLOSE = np.zeros(256, dtype=bool)
_AFTER_CLOSE[[ord(","), ord("}"), ord("]"), ord("\n")]] = True


def _lines(values: list[bytes], joined: bytes) -> np.ndarray | None:
    """Lines (objects, if NDJSON) of each message, or None when a line may not be exactly one object.

    A trailing newline ends the last line, it starts none. `joined` is `b"\\n".join(values)` (a
    slice of ~8 MB): its newlines are found in one vectorised pass and counted per message by their
    positions.

    pyarrow's reader takes a blank line as no row and `{..}{..}` or `{..} null` on one line as two;
    it crashes the process (segfault, pyarrow 26) on a buffer whose first document is `null`. So the
    slice goes to the parser only if every line starts with `{` (the blank line after a message's
    trailing newline excepted) and every `}` is followed by `,` `}` `]`, a newline or the end: then
    every object starts a line and ends one, no line holds two, and the parser's row count equals the
    line count only if each line is exactly one object, so rows map onto messages. Anything else (a
    pretty-printed object, CRLF, spaces after a `}`, a `}` inside a string) is halved down to the
    per-message path, which decides.
    """
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    starts = np.cumsum(lens + 1) - lens - 1
    ends = starts + lens
    raw = np.frombuffer(joined, np.uint8)
    n = len(raw)
    if n == 0 or raw[0] != ord("{"):
        return None
    newlines = np.flatnonzero(raw == 10)
    trailing = (lens > 0) & (raw[np.maximum(ends - 1, 0)] == 10)
    after_nl = newlines + 1
    is_trailing = np.zeros(len(newlines), dtype=bool)
    is_trailing[np.searchsorted(newlines, ends[trailing] - 1)] = True
    at_end = after_nl >= n
    next_byte = raw[np.minimum(after_nl, n - 1)]
    if not np.all(np.where(is_trailing, at_end | (next_byte == 10), ~at_end & (next_byte == ord("{")))):
        return None
    after_close = np.flatnonzero(raw == ord("}")) + 1
    if not np.all(_AFTER_CLOSE[raw[np.minimum(after_close, n - 1)]] | (after_close >= n)):
        return None
    inside = np.searchsorted(newlines, ends) - np.searchsorted(newlines, starts)
    return inside - trailing + 1


def decode_json_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    content_types: Sequence[str],
    *,
    parse_schemas: Sequence[pa.Schema],
    finish: Finisher,
    decode_one: Callable[[bytes | None, bytes | None, str], Decoded],
    empty: pa.Table,
    max_lines: int = 10_000,
) -> BatchDecoded:
    """Decode a batch of messages; JSON ones through the batch parser, any other one by one.

    `parse_schemas` are tried in order for the whole batch (e.g. `ts` as an ISO string, then as epoch
    milliseconds), so a producer that uses one convention throughout never falls back.
    """
    tables: list[pa.Table] = []
    index: list[np.ndarray] = []
    splits: list[str | None] = []
    split_topic = [False]
    bad: list[tuple[int, str]] = []

    def one(i: int) -> None:
        try:
            d = decode_one(values[i], keys[i], content_types[i])
        except DecodeError as exc:
            bad.append((i, str(exc)))
            return
        except Exception as exc:  # a decoder bug must not wedge the topic: the message goes to the DLQ
            bad.append((i, f"internal decoder error: {type(exc).__name__}: {exc}"))
            return
        tables.append(d.table)
        index.append(np.full(d.table.num_rows, i, dtype=np.int64))
        if d.split is not None:
            split_topic[0] = True
        splits.extend([d.split] * d.table.num_rows)

    def prepare(ids: np.ndarray):
        """Parse and finish a slice: (counts, row_msg, finished), or None when it cannot be parsed as a whole.

        Pure (no shared state is touched), so slices may be prepared on worker threads.
        """
        parsed = _parse(ids)
        if parsed is None:
            return None
        table_rows, counts = parsed
        row_msg = np.repeat(ids, counts)
        try:
            finished = finish(table_rows, key_array.take(pa.array(row_msg)))
        except Exception:  # a finisher bug on some value must not fail the landing: the per-message path decides
            finished = None
        return counts, row_msg, finished

    def batch(ids: np.ndarray, prepared=_UNPREPARED) -> None:
        if len(ids) == 1:
            one(int(ids[0]))
            return
        prepared = prepare(ids) if prepared is _UNPREPARED else prepared
        if prepared is None:  # cannot map rows onto messages: halve and try again
            mid = len(ids) // 2
            batch(ids[:mid])
            batch(ids[mid:])
            return
        counts, row_msg, finished = prepared
        if finished is None:  # a column the finisher cannot convert as a whole: find the culprit by halves
            mid = len(ids) // 2
            batch(ids[:mid])
            batch(ids[mid:])
            return
        table, ok, row_splits = finished
        # a message is good only if every one of its rows is
        msg_ok = counts <= max_lines  # longer messages are refused by `decode_one`, with its reason
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        msg_ok &= np.logical_and.reduceat(ok, starts) if len(ok) else msg_ok
        keep = np.repeat(msg_ok, counts)
        if keep.all():
            tables.append(table)
            index.append(row_msg)
            if row_splits is not None:
                split_topic[0] = True
                splits.extend(row_splits)
            else:
                splits.extend([None] * len(row_msg))
            return
        # good messages as a block; each bad one decoded alone for its exact reason
        # (the order of rows follows the order of messages: keep runs in sequence)
        for run_ok, lo, hi in _runs(msg_ok):
            if run_ok:
                r0, r1 = int(starts[lo]), int(starts[hi - 1] + counts[hi - 1])
                tables.append(table.slice(r0, r1 - r0))
                index.append(row_msg[r0:r1])
                splits.extend(row_splits[r0:r1] if row_splits is not None else [None] * (r1 - r0))
                if row_splits is not None:
                    split_topic[0] = True
            else:
                for i in ids[lo:hi]:
                    one(int(i))

    def _parse(ids: np.ndarray):
        vals = [values[i] for i in ids.tolist()]
        if not all(vals):  # an empty message has no line: decoded alone, for its reason
            return None
        buf = b"\n".join(vals)
        counts = _lines(vals, buf)
        if counts is None:  # a line that may not be exactly one object: halve, down to one by one
            return None
        for schema in parse_schemas:
            try:
                # blocks small enough that both cores parse, large enough to keep per-block costs low
                block = min(_BLOCK_SIZE, max(_MIN_BLOCK, len(buf) // 4))
                t = pj.read_json(pa.BufferReader(buf), read_options=pj.ReadOptions(block_size=block),
                                 parse_options=pj.ParseOptions(explicit_schema=schema,
                                                               unexpected_field_behavior="ignore"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
                continue
            if t.num_rows == int(counts.sum()):
                return t.combine_chunks(), counts
            return None
        return None

    key_array = pa.array(keys, pa.binary())
    json_ids = np.array([i for i, ct in enumerate(content_types) if ct == JSON], dtype=np.int64)
    other = [i for i, ct in enumerate(content_types) if ct != JSON]
    if len(json_ids):
        # parsed in slices of ~8 MB: buffers that size are recycled by the allocator, while one buffer
        # of a whole 100 MB chunk costs fresh pages (its join alone took as long as half the parse)
        sizes = np.cumsum(np.fromiter(map(len, (values[i] for i in json_ids.tolist())), dtype=np.int64,
                                      count=len(json_ids)))
        cuts = np.searchsorted(sizes, np.arange(_SLICE_BYTES, int(sizes[-1]) + 1, _SLICE_BYTES), side="right")
        slices = [json_ids[lo:hi] for lo, hi in
                  itertools.pairwise([0, *sorted(set(cuts.tolist()) - {0, len(json_ids)}), len(json_ids)])]
        for ids, prepared in _prepared_in_order(slices, prepare):
            batch(ids, prepared)
    for i in other:
        one(i)
    if not tables:
        return BatchDecoded(empty, np.zeros(0, dtype=np.int64), None, sorted(bad))
    msg_index = np.concatenate(index)
    order = np.argsort(msg_index, kind="stable")  # back to message order (other content types came last)
    table = pa.concat_tables([t.select(empty.column_names).cast(empty.schema) for t in tables])
    if not np.all(order[:-1] < order[1:]):
        table = table.take(pa.array(order))
        msg_index = msg_index[order]
        splits = [splits[j] for j in order.tolist()]
    return BatchDecoded(table, msg_index, splits if split_topic[0] else None, sorted(bad))


_UNPREPARED = object()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="aero-json-batch")
        return _POOL


def _forget_pool_in_child() -> None:
    # a forked child has none of the parent's worker threads: an inherited pool would never run a task
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _prepared_in_order(slices: list[np.ndarray], prepare):
    """(slice, prepare(slice)) in slice order, the next slices prepared on worker threads meanwhile.

    The parser's own threads keep both cores busy only while it parses; joining a slice, checking
    its lines and validating its rows run on one. With two slices in flight those steps of one
    overlap the parse of the other. The bookkeeping (and any halving down to single messages)
    stays on the calling thread, in slice order. Slices that cannot go to a worker (a single
    message) are left to the caller.
    """
    if len(slices) < 2:
        yield from ((ids, _UNPREPARED) for ids in slices)
        return
    pool = _pool()
    pending: collections.deque = collections.deque()
    it = iter(slices)

    def submit() -> None:
        ids = next(it, None)
        if ids is not None:
            pending.append((ids, pool.submit(prepare, ids) if len(ids) > 1 else None))

    for _ in range(_WORKERS):
        submit()
    try:
        while pending:
            ids, fut = pending.popleft()
            submit()
            yield ids, (fut.result() if fut is not None else _UNPREPARED)
    finally:  # a failure of the caller: let the slices in flight finish, their results are dropped
        for _, fut in pending:
            if fut is not None:
                fut.cancel()


def json_objects(value: bytes, max_lines: int, noun: str = "reading") -> list[dict]:
    """The objects of one message: one JSON object, or several as newline-delimited lines (NDJSON).

    The per-message path of every JSON topic: a bad line refuses the whole message, never a part of it,
    and the reasons name what is wrong.
    """
    try:
        objs = [json.loads(value)]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        lines = [ln for ln in value.split(b"\n") if ln.strip()]
        if len(lines) < 2:
            raise DecodeError(f"invalid JSON: {exc}") from None
        if len(lines) > max_lines:
            raise DecodeError(f"a message may carry at most {max_lines} {noun}s, this one has {len(lines)}") from None
        try:
            objs = [json.loads(ln) for ln in lines]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc2:
            raise DecodeError(f"invalid JSON on a line of a multi-{noun} message: {exc2}") from None
    for o in objs:
        if not isinstance(o, dict):
            raise DecodeError(f"expected a JSON object per {noun}, got {type(o).__name__}")
    return objs


def verdicts(problems: Sequence[tuple[np.ndarray, str]], n: int) -> tuple[np.ndarray, list[str]]:
    """(rows with no problem, the reasons that apply to some row) from (bad-row mask, reason) pairs."""
    ok = np.ones(n, dtype=bool)
    reasons = []
    for bad, reason in problems:
        if bad.any():
            ok &= ~bad
            reasons.append(reason)
    return ok, reasons


def _runs(mask: np.ndarray):
    """(value, start, end) of each run of equal values in a boolean array."""
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [len(mask)]))
    for lo, hi in itertools.pairwise(bounds):
        yield bool(mask[lo]), int(lo), int(hi)
