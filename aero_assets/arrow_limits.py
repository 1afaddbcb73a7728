"""How large an Arrow IPC stream becomes once decoded, read from its metadata before decoding it.

A 1 MB Kafka message with LZ4/ZSTD buffer compression can declare gigabytes of zeros; decoding it
first and checking afterwards is exactly the out-of-memory kill we want to avoid. Each record
batch's flatbuffer metadata lists its buffers, and the Arrow format prefixes every compressed
buffer with its uncompressed length (int64 LE, -1 for "stored uncompressed"), so the decoded size
is known exactly from a few hundred bytes of metadata and eight bytes per buffer.

pyarrow does not expose the record-batch metadata, hence the small flatbuffer reader below. It
reads only the fields it needs (Message.header, RecordBatch.length/buffers/compression,
DictionaryBatch.data) and treats anything it cannot follow as malformed.
"""

from __future__ import annotations

import struct

# MessageHeader union tags (format/Message.fbs)
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


class ArrowMalformed(ValueError):
    """The stream's framing or batch metadata is broken; the text says where."""


class ArrowLimitError(ValueError):
    """The stream would decode to more bytes than allowed."""


class _Table:
    """A flatbuffer table: field lookups through its vtable, bounds-checked."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        (soff,) = _unpack("<i", buf, pos)
        self.vt = pos - soff
        (self.vt_len,) = _unpack("<H", buf, self.vt)

    def _field_pos(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot + 2 > self.vt_len:
            return None
        (off,) = _unpack("<H", self.buf, self.vt + slot)
        return self.pos + off if off else None

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        p = self._field_pos(index)
        return default if p is None else _unpack(fmt, self.buf, p)[0]

    def table(self, index: int) -> _Table | None:
        p = self._field_pos(index)
        if p is None:
            return None
        (rel,) = _unpack("<I", self.buf, p)
        return _Table(self.buf, p + rel)

    def struct_vector(self, index: int, size: int) -> tuple[int, int]:
        """(position of the first element, element count) of a vector of fixed-size structs."""
        p = self._field_pos(index)
        if p is None:
            return 0, 0
        (rel,) = _unpack("<I", self.buf, p)
        (n,) = _unpack("<I", self.buf, p + rel)
        start = p + rel + 4
        if start + n * size > len(self.buf):
            raise ArrowMalformed("record batch metadata lists more buffers than it holds")
        return start, n


def _unpack(fmt: str, buf: memoryview, pos: int) -> tuple:
    if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
        raise ArrowMalformed("record batch metadata points outside itself")
    return struct.unpack_from(fmt, buf, pos)


def _batch_bytes(batch: _Table, body_view: memoryview) -> int:
    rows = batch.scalar(0, "<q")
    if rows < 0:
        raise ArrowMalformed(f"record batch declares a negative length ({rows})")
    start, n = batch.struct_vector(2, 16)
    compressed = batch.table(3) is not None
    total = 8 * rows  # a batch costs at least a word per row, even if it declares no buffers
    for i in range(n):
        offset, length = struct.unpack_from("<qq", batch.buf, start + 16 * i)
        if offset < 0 or length < 0 or offset + length > len(body_view):
            raise ArrowMalformed("a buffer of the record batch lies outside the message body")
        if not compressed or length == 0:
            total += length
            continue
        if length < 8:
            raise ArrowMalformed("a compressed buffer is shorter than its 8-byte length prefix")
        (raw,) = struct.unpack_from("<q", body_view, offset)
        total += length - 8 if raw == -1 else raw
        if raw < -1:
            raise ArrowMalformed(f"a compressed buffer declares a negative length ({raw})")
    return total


def decoded_size(value: bytes) -> int:
    """Bytes the stream's record and dictionary batches take once decoded (exact for buffers).

    Walks the IPC stream framing itself (continuation marker, metadata length, flatbuffer, body)
    rather than through pyarrow's MessageReader: it is on the landing's hot path, once per message.
    Raises `ArrowMalformed` for framing or metadata it cannot follow.
    """
    view = memoryview(value)
    pos, total = 0, 0
    dictionaries: dict[int, int] = {}  # dictionary id -> decoded bytes
    while pos < len(view):
        if pos + 4 > len(view):
            raise ArrowMalformed("the message ends before the stream does (inside a message header)")
        (meta_len,) = struct.unpack_from("<i", view, pos)
        pos += 4
        if meta_len == -1:  # continuation marker: the length follows (format >= 0.15)
            if pos + 4 > len(view):
                raise ArrowMalformed("the message ends before the stream does (inside a message header)")
            (meta_len,) = struct.unpack_from("<i", view, pos)
            pos += 4
        if meta_len == 0:  # end-of-stream marker
            break
        if meta_len < 0 or pos + meta_len > len(view):
            raise ArrowMalformed(f"the message ends before the stream does: a header declares {meta_len} "
                                 f"bytes of metadata, {len(view) - pos} bytes are left")
        meta = view[pos:pos + meta_len]
        pos += meta_len
        (root,) = _unpack("<I", meta, 0)
        message = _Table(meta, root)
        body_len = message.scalar(3, "<q")
        if body_len < 0 or pos + body_len > len(view):
            raise ArrowMalformed(f"the message ends before the stream does: a batch declares a {body_len}-byte "
                                 f"body, {len(view) - pos} bytes are left")
        body = view[pos:pos + body_len]
        pos += body_len
        kind = message.scalar(1, "<B")
        header = message.table(2)
        if header is None:
            continue
        if kind == _DICTIONARY_BATCH:
            # Deltas make the reader concatenate a new dictionary per delta and keep every version alive
            # (memory = deltas x dictionary): no rig needs them, so they are refused outright.
            if header.scalar(2, "<B"):
                raise ArrowMalformed("dictionary delta batches are not accepted; send whole dictionaries")
            data = header.table(1)
            if data is not None:
                dictionaries[header.scalar(0, "<q")] = _batch_bytes(data, body)
        elif kind == _RECORD_BATCH:
            # each record batch is validated and cast with its dictionaries: charge them per batch, so
            # 2,000 one-row batches sharing a 50 MB dictionary count as what they cost
            total += _batch_bytes(header, body) + sum(dictionaries.values())
    return total


def check_decoded_size(value: bytes, limit: int) -> int:
    """`decoded_size`, refusing streams over `limit` bytes before a single buffer is expanded."""
    size = decoded_size(value)
    if size > limit:
        raise ArrowLimitError(
            f"Arrow stream would decode to {size:,} bytes from a {len(value):,}-byte message, over the "
            f"{limit:,}-byte limit per message (split it into smaller record batches/messages)"
        )
    return size
