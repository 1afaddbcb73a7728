"""Wire formats of DESIGN.md: what decodes, and the reason given for what does not."""

import json

import pyarrow as pa
import pytest

from aero_assets.codec import (
    ARROW,
    JSON,
    TS_TYPE,
    DecodeError,
    RunEventsDecoder,
    WindtunnelSamplesDecoder,
    content_type_of,
    parse_ts_ns,
)
from aero_assets.simulators.publish import arrow_blocks

DEC = WindtunnelSamplesDecoder()


def _ipc(table: pa.Table) -> bytes:
    return arrow_blocks(table, table.num_rows)[0][1]


def _samples(n=3, channel_type=None, ts_type=TS_TYPE, t0=1_700_000_000_000_000_000):
    channel_type = channel_type or pa.string()
    return pa.table({
        "ts": pa.array([t0 + i for i in range(n)], pa.int64()).cast(ts_type),
        "channel": pa.array(["FB_FZ"] * n).cast(channel_type),
        "value": pa.array([1.0 * i for i in range(n)]),
    })


def test_arrow_block_decodes_with_the_key_as_run_id():
    d = DEC.decode(_ipc(_samples()), b"run-1", ARROW)
    assert d.split == "run-1"
    assert d.table.num_rows == 3
    assert d.table.schema.equals(DEC.schema)


def test_arrow_dictionary_channels_and_other_timestamp_units_are_normalised():
    t = _samples(channel_type=pa.dictionary(pa.int8(), pa.string()), ts_type=pa.timestamp("us", tz="UTC"),
                 t0=1_700_000_000_000_000)
    d = DEC.decode(_ipc(t), b"run-1", ARROW)
    assert d.table.schema.equals(DEC.schema)
    assert d.table["ts"][0].value == 1_700_000_000_000_000_000


def test_arrow_timestamps_outside_the_nanosecond_range_are_rejected_not_crashing():
    t = _samples(ts_type=pa.timestamp("s", tz="UTC"), t0=10**15)
    with pytest.raises(DecodeError, match="cannot convert"):
        DEC.decode(_ipc(t), b"run-1", ARROW)


@pytest.mark.parametrize(
    ("table", "key", "why"),
    [
        (_samples(ts_type=pa.timestamp("ns")), b"run-1", "time zone"),
        (_samples().drop_columns(["value"]), b"run-1", "lacks column"),
        (_samples(), None, "key"),
        (_samples(), b"../x", "invalid message key"),
    ],
)
def test_invalid_arrow_blocks_are_rejected_with_a_reason(table, key, why):
    with pytest.raises(DecodeError, match=why):
        DEC.decode(_ipc(table), key, ARROW)


def test_truncated_arrow_stream_is_rejected():
    with pytest.raises(DecodeError, match="Arrow"):
        DEC.decode(_ipc(_samples())[:40], b"run-1", ARROW)


def test_json_long_and_wide_forms_decode_to_the_same_rows():
    long = DEC.decode(json.dumps({"run_id": "r1", "ts": "2026-01-01T00:00:00Z", "channel": "A", "value": 1}).encode(),
                      b"r1", JSON)
    wide = DEC.decode(json.dumps({"run_id": "r1", "ts": 1767225600000, "values": {"A": 1, "B": None}}).encode(),
                      None, JSON)
    assert long.table.to_pylist()[0] == wide.table.to_pylist()[0]
    assert wide.table.num_rows == 2 and wide.table["value"][1].as_py() is None


@pytest.mark.parametrize(
    ("obj", "key", "why"),
    [
        ({"run_id": "r1", "ts": "2026-01-01T00:00:00", "channel": "A", "value": 1}, None, "no UTC offset"),
        ({"run_id": "r1", "ts": "yesterday", "channel": "A", "value": 1}, None, "not ISO-8601"),
        ({"run_id": "r1", "ts": 1, "channel": "A", "value": "high"}, None, "must be a number"),
        ({"run_id": "r1", "ts": 1, "value": 1}, None, "channel"),
        ({"run_id": "r2", "ts": 1, "channel": "A", "value": 1}, b"r1", "differs"),
        ({"ts": 1, "channel": "A", "value": 1}, None, "run id is missing"),
        ({"run_id": "a/b", "ts": 1, "channel": "A", "value": 1}, None, "separator"),
        ({"run_id": "r1", "ts": 1, "values": {}}, None, "non-empty"),
    ],
)
def test_invalid_json_samples_are_rejected_with_a_reason(obj, key, why):
    with pytest.raises(DecodeError, match=why):
        DEC.decode(json.dumps(obj).encode(), key, JSON)


def test_malformed_json_is_rejected():
    with pytest.raises(DecodeError, match="invalid JSON"):
        DEC.decode(b'{"run_id": ', b"r1", JSON)


def test_content_type_comes_from_the_header_or_is_sniffed():
    assert content_type_of([("content-type", b"application/json; charset=utf-8")], b"x") == JSON
    assert content_type_of(None, _ipc(_samples())) == ARROW
    assert content_type_of([], b'  {"a": 1}') == JSON
    with pytest.raises(DecodeError, match="unsupported content-type"):
        content_type_of([("content-type", b"text/csv")], b"a,b")
    with pytest.raises(DecodeError, match="neither JSON nor"):
        content_type_of(None, b"\x00\x01garbage")
    with pytest.raises(DecodeError, match="empty"):
        content_type_of(None, b"")


def test_timestamps_accept_iso_with_offset_and_epoch_millis_to_the_same_instant():
    assert parse_ts_ns("2026-01-01T01:00:00+01:00") == parse_ts_ns(1767225600000) == 1767225600 * 10**9
    assert parse_ts_ns("2026-01-01T00:00:00.123456Z") == 1767225600 * 10**9 + 123_456_000


def test_lifecycle_events_decode_and_validate():
    ev = RunEventsDecoder()
    started = {"event": "run_started", "run_id": "r1", "session_id": "s1", "started_at": "2026-01-01T00:00:00Z",
               "config": {"yaw_deg": 1.5}, "baseline_run_id": None}
    row = ev.decode(json.dumps(started).encode(), b"r1", JSON).table.to_pylist()[0]
    assert row["session_id"] == "s1" and json.loads(row["config"]) == {"yaw_deg": 1.5}
    finished = {"event": "run_finished", "run_id": "r1", "finished_at": 1767225600000, "sample_count": 10}
    assert ev.decode(json.dumps(finished).encode(), b"r1", JSON).table["sample_count"][0].as_py() == 10
    for bad, why in [({**finished, "sample_count": -1}, "non-negative"), ({**finished, "event": "paused"}, "event"),
                     ({**started, "baseline_run_id": "../b"}, r"\.\."), ({**started, "config": [1]}, "object")]:
        with pytest.raises(DecodeError, match=why):
            ev.decode(json.dumps(bad).encode(), b"r1", JSON)


def _ipc(table, compression=None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table, max_chunksize=700)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_the_decoded_size_of_an_arrow_stream_is_read_from_its_metadata(compression):
    from aero_assets.arrow_limits import decoded_size

    t = pa.table({"ts": pa.array(range(2000), pa.int64()).cast(TS_TYPE),
                  "channel": pa.array(["FB_FZ", "FB_FX"] * 1000).dictionary_encode(),
                  "value": pa.array([float(i) for i in range(2000)])})
    size = decoded_size(_ipc(t, compression))
    decoded = pa.ipc.open_stream(_ipc(t, compression)).read_all().nbytes
    assert decoded <= size <= decoded + 8 * 2 * t.num_rows + 4096, "exact buffers, plus a word per row"


@pytest.mark.parametrize("cut", [3, 9, 40, 300])
def test_a_cut_or_scrambled_arrow_stream_is_refused_as_corrupt_not_as_a_decoder_bug(cut):
    t = pa.table({"ts": pa.array([0, 1], pa.int64()).cast(TS_TYPE), "channel": ["A", "B"], "value": [1.0, 2.0]})
    whole = _ipc(t, "lz4")
    for broken in (whole[:cut], whole[:cut] + bytes(reversed(whole[cut:]))):
        with pytest.raises(DecodeError, match=r"truncated or corrupt|refused|invalid|must|lacks"):
            WindtunnelSamplesDecoder().decode(broken, b"r1", ARROW)


def _block(channels, n=None):
    n = n or len(channels)
    return pa.table({"ts": pa.array(range(n), pa.int64()).cast(TS_TYPE), "channel": channels,
                     "value": pa.array([1.0] * n)})


def _lying_offsets_block() -> bytes:
    """The samples schema, string offsets [0, 2, 2e9, 6, 8]: passes pyarrow's cheap checks (found by review)."""
    import struct

    good = _ipc(_block(pa.array(["C0", "C1", "C2", "C3"])))
    return good.replace(struct.pack("<5i", 0, 2, 4, 6, 8), struct.pack("<5i", 0, 2, 2_000_000_000, 6, 8))


def _lying_dictionary_block(end: int) -> bytes:
    import struct

    ch = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3] * 2, pa.int32()), pa.array(["C0", "C1", "C2", "C3"]))
    return _ipc(_block(ch)).replace(struct.pack("<5i", 0, 2, 4, 6, 8), struct.pack("<5i", 0, 2, 4, 6, end))


@pytest.mark.parametrize("make", [
    _lying_offsets_block,
    lambda: _lying_dictionary_block(2_000_000_000),  # crashed the process in the dictionary cast
    lambda: _lying_dictionary_block(100_000),  # was accepted, with 200 KB of foreign memory as a channel name
    lambda: _ipc(_block(pa.array([b"ok", b"\xff\xfe"], pa.binary()).cast(pa.string(), safe=False))),
], ids=["offsets", "dictionary-crash", "dictionary-overread", "not-utf8"])
def test_an_arrow_block_with_lying_buffers_is_refused_before_anything_reads_them(make):
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        WindtunnelSamplesDecoder().decode(make(), b"r1", ARROW)


def test_a_dictionary_that_would_expand_past_the_limit_is_refused():
    rows = 100_000
    ch = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int8()), pa.array(["X" * 20_000]))
    bomb = _ipc(_block(ch, rows), "zstd")
    assert len(bomb) < 200_000
    with pytest.raises(DecodeError, match="dictionary expands to 2,000,000,000 bytes"):
        WindtunnelSamplesDecoder().decode(bomb, b"r1", ARROW)


def test_a_very_wide_block_is_refused_quickly():
    wide = pa.table({f"c{i}": pa.array([1.0]) for i in range(5000)})
    with pytest.raises(DecodeError, match="5000 columns"):
        WindtunnelSamplesDecoder().decode(_ipc(wide), b"r1", ARROW)


def test_dictionary_delta_batches_are_refused():
    schema = pa.schema([("ts", TS_TYPE), ("channel", pa.dictionary(pa.int32(), pa.string())), ("value", pa.float64())])
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
    with pa.ipc.new_stream(sink, schema, options=opts) as w:
        for i in range(3):
            ch = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array([f"c{j}" for j in range(i + 1)]))
            ts = pa.array([i], pa.int64()).cast(TS_TYPE)
            w.write_batch(pa.record_batch([ts, ch, pa.array([1.0])], schema=schema))
    with pytest.raises(DecodeError, match="dictionary delta"):
        WindtunnelSamplesDecoder().decode(sink.getvalue().to_pybytes(), b"r1", ARROW)


def test_a_dictionary_shared_by_many_batches_is_charged_per_batch():
    """2,000 one-row batches sharing one 10 MB dictionary: each batch is validated with it (found by review)."""
    from aero_assets.arrow_limits import decoded_size

    dictionary = pa.array(["x" * 1000] * 10_000)
    schema = pa.schema([("ts", TS_TYPE), ("channel", pa.dictionary(pa.int32(), pa.string())), ("value", pa.float64())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for i in range(2000):
            ch = pa.DictionaryArray.from_arrays(pa.array([i % 10_000], pa.int32()), dictionary)
            ts = pa.array([i], pa.int64()).cast(TS_TYPE)
            w.write_batch(pa.record_batch([ts, ch, pa.array([1.0])], schema=schema))
    msg = sink.getvalue().to_pybytes()
    assert decoded_size(msg) > 2000 * 10_000_000
    with pytest.raises(DecodeError, match="would decode to"):
        WindtunnelSamplesDecoder().decode(msg, b"r1", ARROW)
