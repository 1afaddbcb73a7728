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


def test_other_content_types_are_refused_with_a_reason():
    d = TireReadingsDecoder()
    with pytest.raises(DecodeError, match="must be JSON"):
        d.decode(b"\xff\xff\xff\xff", b"fleet-v001", ARROW)
    batch = d.decode_batch([b"\xff\xff\xff\xff", enc(reading())], [b"fleet-v001"] * 2, [ARROW, JSON])
    assert batch.table.num_rows == 1 and batch.bad[0][0] == 0
