"""`tires.raw` decoding: the batch path and the per-message path give the same verdicts on hostile input."""

from __future__ import annotations

import json
import random
import time

import pytest

from aero_assets.codec import ARROW, JSON, DecodeError
from aero_assets.tires.decoder import MAX_LINES, TireReadingsDecoder

NOW = time.time_ns()
TS = "2026-01-05T10:00:00.250Z"


def reading(**over) -> dict:
    r = {"vehicle_id": "fleet-v001", "tire": "FL", "pressure_kpa": 231.5, "temperature_c": 44.0, "ts": TS}
    r.update(over)
    return {k: v for k, v in r.items() if v is not _DROP}


_DROP = object()


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


HOSTILE: list[tuple[bytes | None, bytes | None, str]] = [
    (enc(reading()), b"fleet-v001", "ok"),
    (enc(reading(ts=1767607200250)), b"fleet-v001", "ok: epoch ms"),
    (enc(reading(ts="2026-01-05T12:00:00+02:00")), b"fleet-v001", "ok: offset"),
    (enc(reading()) + b"\n" + enc(reading(tire="RR")), b"fleet-v001", "ok: two readings"),
    (enc(reading()) + b"\n", b"fleet-v001", "ok: trailing newline"),
    (json.dumps(reading(), indent=2).encode(), b"fleet-v001", "ok: pretty-printed"),
    (b"{not json", b"fleet-v001", "malformed"),
    (b"", b"fleet-v001", "empty"),
    (b"[1, 2]", b"fleet-v001", "array"),
    (enc(reading(tire="XL")), b"fleet-v001", "unknown tire"),
    (enc(reading(tire=_DROP)), b"fleet-v001", "missing tire"),
    (enc(reading(pressure_kpa=_DROP)), b"fleet-v001", "missing pressure"),
    (enc(reading(pressure_kpa="231")), b"fleet-v001", "string pressure"),
    (enc(reading(pressure_kpa=True)), b"fleet-v001", "bool pressure"),
    (b'{"vehicle_id":"fleet-v001","tire":"FL","pressure_kpa":NaN,"temperature_c":40,"ts":"' + TS.encode() + b'"}',
     b"fleet-v001", "NaN"),
    (b'{"vehicle_id":"fleet-v001","tire":"FL","pressure_kpa":1e999,"temperature_c":40,"ts":"' + TS.encode() + b'"}',
     b"fleet-v001", "infinite"),
    (enc(reading(pressure_kpa=-5)), b"fleet-v001", "negative pressure"),
    (enc(reading(pressure_kpa=50_000)), b"fleet-v001", "absurd pressure"),
    (enc(reading(temperature_c=900)), b"fleet-v001", "absurd temperature"),
    (enc(reading(ts="2096-01-01T00:00:00Z")), b"fleet-v001", "far future"),
    (enc(reading(ts="1999-12-31T23:59:59Z")), b"fleet-v001", "before 2000"),
    (enc(reading(ts="2026-01-05T10:00:00")), b"fleet-v001", "no offset"),
    (enc(reading(ts=None)), b"fleet-v001", "null ts"),
    (enc(reading(vehicle_id="../../etc")), b"../../etc", "path id"),
    (enc(reading(vehicle_id="x'); DROP TABLE tire_alerts;--")), b"x'); DROP TABLE tire_alerts;--", "sql id"),
    (enc(reading(vehicle_id=17)), b"17", "numeric id"),
    (enc(reading()), b"fleet-v002", "key differs"),
    (enc(reading()), None, "no key"),
    (enc(reading()) + b"\n" + b"{broken", b"fleet-v001", "one bad line"),
    (enc(reading()) + b"\n" + enc(reading(vehicle_id="fleet-v009")), b"fleet-v001", "two vehicles"),
    (b"\n".join([enc(reading())] * (MAX_LINES + 1)), b"fleet-v001", "too many lines"),
    (b"\xff\xfe{}", b"fleet-v001", "not utf-8"),
]


def verdict_one(d: TireReadingsDecoder, value, key) -> int | str:
    try:
        return d.decode(value, key, JSON).table.num_rows
    except DecodeError as exc:
        return f"bad: {exc}"


def test_every_hostile_message_gets_the_same_verdict_alone_and_in_a_batch():
    d = TireReadingsDecoder()
    values = [v for v, _, _ in HOSTILE]
    keys = [k for _, k, _ in HOSTILE]
    batch = d.decode_batch(values, keys, [JSON] * len(values))
    rows_per_msg = {i: int((batch.message_index == i).sum()) for i in range(len(values))}
    bad = dict(batch.bad)
    for i, (value, key, label) in enumerate(HOSTILE):
        alone = verdict_one(d, value, key)
        if label.startswith("ok"):
            assert isinstance(alone, int) and alone >= 1, (label, alone)
            assert rows_per_msg[i] == alone and i not in bad, label
        else:
            assert isinstance(alone, str), (label, alone)
            assert bad.get(i) == alone.removeprefix("bad: "), label  # the DLQ reason is the per-message one
            assert rows_per_msg[i] == 0, label


def test_a_random_mix_of_good_and_bad_messages_keeps_every_good_reading_in_message_order():
    d = TireReadingsDecoder()
    rng = random.Random(7)
    picks = [rng.choice(HOSTILE) for _ in range(3000)]
    batch = d.decode_batch([p[0] for p in picks], [p[1] for p in picks], [JSON] * len(picks))
    expected = sum(verdict_one(d, v, k) if isinstance(verdict_one(d, v, k), int) else 0 for v, k, _ in picks)
    assert batch.table.num_rows == expected
    assert list(batch.message_index) == sorted(batch.message_index)
    assert len(batch.bad) == sum(1 for p in picks if not p[2].startswith("ok"))


def test_slices_prepared_on_worker_threads_land_what_one_slice_lands(monkeypatch):
    import aero_assets.json_batch as jb

    d = TireReadingsDecoder(clock_ns=lambda: NOW)
    rng = random.Random(11)
    picks = [rng.choice(HOSTILE) for _ in range(3000)]
    args = ([p[0] for p in picks], [p[1] for p in picks], [JSON] * len(picks))
    whole = d.decode_batch(*args)
    monkeypatch.setattr(jb, "_SLICE_BYTES", 2048)  # ~100 slices, two in flight on the workers
    sliced = d.decode_batch(*args)
    assert sliced.table.equals(whole.table)
    assert list(sliced.message_index) == list(whole.message_index)
    assert sliced.bad == whole.bad


def test_other_content_types_are_refused_with_a_reason():
    d = TireReadingsDecoder()
    with pytest.raises(DecodeError, match="must be JSON"):
        d.decode(b"\xff\xff\xff\xff", b"fleet-v001", ARROW)
    batch = d.decode_batch([b"\xff\xff\xff\xff", enc(reading())], [b"fleet-v001"] * 2, [ARROW, JSON])
    assert batch.table.num_rows == 1 and batch.bad[0][0] == 0


def _line(**raw: str) -> bytes:
    """One reading with raw JSON text per field (so duplicates, escapes and odd literals can be written)."""
    fields = {"vehicle_id": '"fleet-v001"', "tire": '"FL"', "pressure_kpa": "231.5", "temperature_c": "44.0",
              "ts": f'"{TS}"'}
    fields.update(raw)
    return ("{" + ",".join(f'"{k.split("__")[0]}":{v}' for k, v in fields.items() if v is not None) + "}").encode()


EDGE: list[tuple[bytes | None, bytes | None, str]] = [
    (_line(vehicle_id="17"), b"17", "numeric vehicle id"),
    (_line(vehicle_id="true"), b"true", "boolean vehicle id"),
    (_line(vehicle_id='["fleet-v001"]'), b"fleet-v001", "array vehicle id"),
    (_line(tire='{"x":"FL"}'), b"fleet-v001", "object tire"),
    (_line(tire="1"), b"fleet-v001", "number tire"),
    (_line(tire="null"), b"fleet-v001", "null tire"),
    (_line(pressure_kpa="false"), b"fleet-v001", "boolean pressure"),
    (_line(pressure_kpa='{"v":231}'), b"fleet-v001", "object pressure"),
    (_line(pressure_kpa="[231]"), b"fleet-v001", "array pressure"),
    (_line(pressure_kpa="1" + "0" * 400), b"fleet-v001", "integer beyond float range"),
    (_line(pressure_kpa="231"), b"fleet-v001", "ok: integer pressure"),
    (_line(pressure_kpa="2.315e2"), b"fleet-v001", "ok: exponent pressure"),
    (_line(pressure_kpa="231.50000000000001"), b"fleet-v001", "ok: more digits than a double holds"),
    (_line(pressure_kpa="-0.0"), b"fleet-v001", "ok: negative zero"),
    (_line(pressure_kpa="Infinity"), b"fleet-v001", "Infinity literal"),
    (_line(pressure_kpa="-Infinity"), b"fleet-v001", "-Infinity literal"),
    (_line(ts="1767607200250.5"), b"fleet-v001", "ok: fractional epoch ms"),
    (_line(ts="true"), b"fleet-v001", "boolean ts"),
    (_line(ts='{"t":1}'), b"fleet-v001", "object ts"),
    (_line(ts='"not a time"'), b"fleet-v001", "garbage ts"),
    (_line(ts='"2026-01-05T10:00:00.250+14:00"'), b"fleet-v001", "ok: far offset"),
    (_line(ts='"2026-02-30T10:00:00Z"'), b"fleet-v001", "impossible date"),
    (_line(ts='"2026-01-05T10:00:00.123456789Z"'), b"fleet-v001", "ok: nanoseconds"),
    (_line(ts='"2026-01-05T10:00:00.5Z"'), b"fleet-v001", "ok: one fraction digit"),
    (_line(ts='"2026-01-05T10:00:00,250Z"'), b"fleet-v001", "ok: comma fraction"),
    (_line(ts='"2026-01-05 10:00:00Z"'), b"fleet-v001", "ok: space separator"),
    (_line(ts='"2026-01-05T10:00Z"'), b"fleet-v001", "ok: no seconds"),
    (_line(ts='"2026-01-05T10Z"'), b"fleet-v001", "ok: hour only"),
    (_line(ts='"2026-01-05T10:00:00+0100"'), b"fleet-v001", "ok: offset without colon"),
    (_line(ts='"2026-01-05T10:00:00+01"'), b"fleet-v001", "ok: offset hours only"),
    (_line(ts='"2026-01-05T10:00:00-00:00"'), b"fleet-v001", "ok: minus zero offset"),
    (_line(ts='"2026-01-05T10:00:00z"'), b"fleet-v001", "lower-case z (refused by fromisoformat)"),
    (_line(ts='"2026-W02-1T10:00:00Z"'), b"fleet-v001", "ok: ISO week date"),
    (_line(ts='"20260105T100000Z"'), b"fleet-v001", "ok: basic format"),
    (_line(ts='"2026-01-05T10:00:00.250+01:00:30"'), b"fleet-v001", "ok: offset with seconds"),
    (_line(ts='"2026-01-05"'), b"fleet-v001", "date only"),
    (_line(ts="1767607200250.0"), b"fleet-v001", "ok: integral float epoch ms"),
    (_line(ts="1767607200251"), b"fleet-v001", "ok: epoch ms not a multiple of 4"),
    (_line(ts="1.767607200251e12"), b"fleet-v001", "ok: epoch ms with exponent"),
    (_line(ts="9200000000000000"), b"fleet-v001", "epoch ms at the storable limit"),
    (_line(ts="-1767607200250"), b"fleet-v001", "negative epoch ms"),
    (_line(ts='"2026-01-05T24:00:00Z"'), b"fleet-v001", "hour 24"),
    (_line(pressure_kpa__2="5000"), b"fleet-v001", "duplicate key, last out of range"),
    (_line(pressure_kpa="5000", pressure_kpa__2="231"), b"fleet-v001", "ok: duplicate key, last in range"),
    (_line(tire__2='"RR"'), b"fleet-v001", "ok: duplicate tire, last wins"),
    (_line(vehicle_id='"fleet-v00\\u0031"'), b"fleet-v001", "ok: unicode escape in the id"),
    (_line(tire='"F\\u004c"'), b"fleet-v001", "ok: unicode escape in the tire"),
    (_line(vehicle_id='"fleet-v001\\n"'), b"fleet-v001\n", "escaped newline in the id"),
    (_line(vehicle_id='"fl\u00e9et"'), "fl\u00e9et".encode(), "non-ascii id"),
    (_line(note='"' + "x" * 200_000 + '"'), b"fleet-v001", "ok: very long line"),
    (_line(extra='{"nested":{"deep":[1,2,{"a":null}]}}'), b"fleet-v001", "ok: nested unknown field"),
    (b" " + _line() + b" ", b"fleet-v001", "ok: surrounding spaces"),
    (_line() + b"\n\n" + _line(tire='"RR"'), b"fleet-v001", "ok: blank line between readings"),
    (_line() + b"\r\n" + _line(tire='"RR"'), b"fleet-v001", "ok: CRLF between readings"),
    (_line() + b" " + _line(tire='"RR"'), b"fleet-v001", "two objects on one line"),
    (b"null", b"fleet-v001", "null message"),
    (b'"a string"', b"fleet-v001", "string message"),
    (b"{}", b"fleet-v001", "empty object"),
]


def test_edge_cases_get_the_same_verdict_and_the_same_values_alone_and_in_a_batch():
    """Verdicts, DLQ reasons and the landed values themselves match the per-message path."""
    d = TireReadingsDecoder()
    cases = HOSTILE + EDGE
    rng = random.Random(11)
    picks = [rng.choice(cases) for _ in range(2000)] + cases
    batch = d.decode_batch([p[0] for p in picks], [p[1] for p in picks], [JSON] * len(picks))
    bad = dict(batch.bad)
    index = batch.message_index
    rows = batch.table.to_pylist()
    starts = {}
    for r, i in enumerate(index.tolist()):
        starts.setdefault(i, r)
    for i, (value, key, label) in enumerate(picks):
        try:
            alone = d.decode(value, key, JSON).table.to_pylist()
        except DecodeError as exc:
            assert bad.get(i) == str(exc), (label, bad.get(i), str(exc))
            assert i not in starts, label
            continue
        assert label.startswith("ok"), (label, "accepted alone")
        assert i not in bad, (label, bad.get(i))
        got = rows[starts[i]:starts[i] + len(alone)]
        assert got == alone, label  # same values, bit for bit (floats compared exactly)
        assert int((index == i).sum()) == len(alone), label


def test_lines_that_are_not_one_object_each_never_shift_readings_between_messages():
    """`{..}{..}` on one line is two rows to pyarrow, a blank line none: together they used to cancel out.

    Message A (one line, two objects) is invalid alone; message B (two readings around a blank line) is
    valid. Counted by lines, A's second object was landed as a reading of B and A was accepted.
    """
    d = TireReadingsDecoder()
    a = _line() + _line(tire='"RR"')
    b = _line() + b"\n\n" + _line(tire='"RL"')
    batch = d.decode_batch([a, b], [b"fleet-v001"] * 2, [JSON] * 2)
    assert [i for i, _ in batch.bad] == [0]
    assert batch.table["tire"].to_pylist() == ["FL", "RL"] and batch.message_index.tolist() == [1, 1]


@pytest.mark.parametrize("order", [0, 1, 2])
def test_a_null_document_never_reaches_the_batch_parser(order):
    """pyarrow 26 segfaults on a buffer whose first document is `null`: a hostile message must not kill the landing."""
    d = TireReadingsDecoder()
    values = [enc(reading()), enc(reading(tire="RR"))]
    values.insert(order, b"null")
    batch = d.decode_batch(values, [b"fleet-v001"] * 3, [JSON] * 3)
    assert [i for i, _ in batch.bad] == [order] and batch.table.num_rows == 2


def test_a_finisher_that_raises_on_some_value_leaves_the_verdict_to_the_per_message_path():
    """The batch path's contract is that a finisher never raises; if one does on a hostile value, the batch
    is halved down to single messages, which the per-message decoder (the authority) decides."""
    from aero_assets.json_batch import decode_json_batch
    from aero_assets.tires.decoder import _PARSE_ISO, SCHEMA

    d = TireReadingsDecoder()

    def finish(parsed, keys):
        raise ValueError("a bug the batch path must survive")

    good, bad = enc(reading()), b"{not json"
    out = decode_json_batch([good, bad, good], [b"fleet-v001"] * 3, [JSON] * 3, parse_schemas=[_PARSE_ISO],
                            finish=finish, decode_one=d.decode, empty=SCHEMA.empty_table())
    assert out.table.num_rows == 2 and [i for i, _ in out.bad] == [1]
