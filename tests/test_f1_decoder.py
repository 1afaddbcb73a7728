"""`f1.telemetry` and `f1.sessions` decoding: impossible values refused with a reason, the batch path
and the per-message path agree on every hostile message, Arrow rows accepted like JSON ones."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from aero_assets.codec import ARROW, JSON, DecodeError
from aero_assets.f1.decoder import MAX_LINES, F1TelemetryDecoder, SessionEventsDecoder
from aero_assets.simulators.publish import arrow_blocks
from tests.f1_data import session_table

TS = "2026-09-21T10:00:00.010Z"
K = b"silverstone-s1"


def sample(**over) -> dict:
    s = {"session_id": "silverstone-s1", "ts": TS, "lap": 3, "distance_m": 1234.5, "x_m": -300.2, "y_m": 88.1,
         "speed_kph": 287.4, "throttle": 1.0, "brake": 0.0, "gear": 7, "rpm": 11250.0, "g_lat": 1.2,
         "g_long": 0.4, "fuel_kg": 48.2}
    s.update(over)
    return {k: v for k, v in s.items() if v is not _DROP}


_DROP = object()


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def raw(text: str) -> bytes:
    return ('{"session_id":"silverstone-s1","ts":"' + TS + '","lap":3,"distance_m":1,"x_m":0,"y_m":0,'
            '"speed_kph":' + text + ',"throttle":1,"brake":0,"gear":7,"rpm":11000,"g_lat":0,"g_long":0,'
            '"fuel_kg":40}').encode()


HOSTILE = [
    (enc(sample()), K, "ok"),
    (enc(sample(ts=1790000000010)), K, "ok: epoch ms"),
    (enc(sample()) + b"\n" + enc(sample(ts="2026-09-21T10:00:00.020Z")) + b"\n", K, "ok: two samples"),
    (json.dumps(sample(), indent=1).encode(), K, "ok: pretty-printed"),
    (enc(sample(gear=0, speed_kph=0)), K, "ok: standing in neutral"),
    (enc({**sample(), "drs": 1}), K, "ok: an extra field"),
    (enc(sample(speed_kph=-3)), K, "negative speed"),
    (enc(sample(speed_kph=900)), K, "absurd speed"),
    (enc(sample(throttle=1.2)), K, "throttle above 1"),
    (enc(sample(brake=-0.1)), K, "brake below 0"),
    (enc(sample(gear=9)), K, "gear 9"),
    (enc(sample(gear=-1)), K, "reverse gear"),
    (enc(sample(gear=3.0)), K, "gear as a float"),
    (enc(sample(lap="3")), K, "lap as a string"),
    (enc(sample(lap=True)), K, "lap as a boolean"),
    (enc(sample(lap=-1)), K, "negative lap"),
    (enc(sample(lap=10**30)), K, "huge lap"),
    (enc(sample(rpm=_DROP)), K, "missing rpm"),
    (enc(sample(g_lat=None)), K, "null g"),
    (enc(sample(g_long=45)), K, "absurd g"),
    (enc(sample(fuel_kg=-1)), K, "negative fuel"),
    (raw("NaN"), K, "NaN speed"),
    (raw("1e999"), K, "infinite speed"),
    (enc(sample(ts="2096-01-01T00:00:00Z")), K, "far future"),
    (enc(sample(ts="1999-12-31T23:59:59Z")), K, "before 2000"),
    (enc(sample(ts="2026-09-21T10:00:00")), K, "no offset"),
    (enc(sample(session_id="../../etc")), b"../../etc", "path id"),
    (enc(sample(session_id="s'; DROP TABLE laps;--")), b"s'; DROP TABLE laps;--", "sql id"),
    (enc(sample(session_id=7)), b"7", "numeric id"),
    (enc(sample()), b"silverstone-s2", "key differs"),
    (enc(sample()), None, "no key"),
    (enc(sample()) + b"\n{broken", K, "one bad line"),
    (b"\n".join([enc(sample())] * (MAX_LINES + 1)), K, "too many lines"),
    (b"{not json", K, "malformed"),
    (b"", K, "empty"),
    (b"[1]", K, "array"),
    (b"\xff\xfe{}", K, "not utf-8"),
]


def verdict_one(d, value, key) -> int | str:
    try:
        return d.decode(value, key, JSON).table.num_rows
    except DecodeError as exc:
        return f"bad: {exc}"


def test_every_hostile_message_gets_the_same_verdict_alone_and_in_a_batch():
    d = F1TelemetryDecoder()
    values, keys = [v for v, _, _ in HOSTILE], [k for _, k, _ in HOSTILE]
    batch = d.decode_batch(values, keys, [JSON] * len(values))
    rows = {i: int((batch.message_index == i).sum()) for i in range(len(values))}
    bad = dict(batch.bad)
    for i, (value, key, label) in enumerate(HOSTILE):
        alone = verdict_one(d, value, key)
        if label.startswith("ok"):
            assert isinstance(alone, int) and alone >= 1, (label, alone)
            assert rows[i] == alone and i not in bad, label
        else:
            assert isinstance(alone, str), (label, alone)
            assert bad.get(i) == alone.removeprefix("bad: "), label
            assert rows[i] == 0, label


@pytest.mark.parametrize(("label", "needle"), [("negative speed", "speed_kph"), ("throttle above 1", "throttle"),
                                               ("gear 9", "gear"), ("gear as a float", "whole number"),
                                               ("path id", "session_id"), ("far future", "future")])
def test_reasons_name_the_field_to_fix(label, needle):
    value, key, _ = next(h for h in HOSTILE if h[2] == label)
    assert needle in verdict_one(F1TelemetryDecoder(), value, key)


def test_a_random_mix_keeps_every_good_sample_in_message_order_with_its_session():
    d = F1TelemetryDecoder()
    rng = random.Random(3)
    picks = [rng.choice(HOSTILE) for _ in range(2000)]
    batch = d.decode_batch([p[0] for p in picks], [p[1] for p in picks], [JSON] * len(picks))
    expected = sum(v if isinstance(v := verdict_one(d, p[0], p[1]), int) else 0 for p in picks)
    assert batch.table.num_rows == expected
    assert list(batch.message_index) == sorted(batch.message_index)
    assert set(batch.splits) == {"silverstone-s1"}


def test_arrow_rows_decode_like_json_and_bad_arrow_rows_are_refused():
    table = session_table("silverstone-s1", laps=0, extra_m=2000)
    d = F1TelemetryDecoder(clock_ns=lambda: 1_800_000_000_000_000_000)
    (_, payload), *_ = list(arrow_blocks(table, 500))
    got = d.decode(payload, K, ARROW)
    assert got.split == "silverstone-s1" and got.table.num_rows == 500
    assert got.table.equals(table.slice(0, 500))
    bad = table.slice(0, 10).set_column(table.schema.get_field_index("speed_kph"), "speed_kph",
                                        pa.array([-1.0] * 10, pa.float32()))
    (_, payload), *_ = list(arrow_blocks(bad, 10))
    with pytest.raises(DecodeError, match="speed_kph"):
        d.decode(payload, K, ARROW)
    with pytest.raises(DecodeError, match="lacks"):
        (_, payload), *_ = list(arrow_blocks(table.drop_columns(["gear"]).slice(0, 5), 5))
        d.decode(payload, K, ARROW)


def test_session_events_are_validated():
    d = SessionEventsDecoder()
    ok = {"event": "lap_completed", "session_id": "s1", "lap": 2, "completed_at": TS, "lap_time_s": 88.1}
    got = d.decode(enc(ok), b"s1", JSON)
    assert got.split == "s1" and got.table["lap"][0].as_py() == 2
    for bad, needle in [({**ok, "event": "pit"}, "event"), ({**ok, "lap": -1}, "lap"),
                        ({**ok, "session_id": "../x"}, "session id"), ({**ok, "completed_at": "x"}, "ISO"),
                        ({**ok, "lap": True}, "lap")]:
        with pytest.raises(DecodeError, match=needle):
            d.decode(enc(bad), bad["session_id"].encode() if isinstance(bad["session_id"], str) else b"x", JSON)
    with pytest.raises(DecodeError, match="key"):
        d.decode(enc(ok), b"s2", JSON)
