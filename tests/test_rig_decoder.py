"""`rig.readings` decoding: every reading lands, the parser says what did not parse; only non-readings go to
the DLQ. The same parser serves CSV cells, so a value means the same from either source."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from aero_assets.codec import ARROW, JSON, DecodeError
from aero_assets.rig.decoder import RigReadingsDecoder
from aero_assets.rig.parse import parse_raw


def rows(obj, key=b"rig-01"):
    value = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return RigReadingsDecoder().decode(value, key, JSON).table.to_pylist()


GOOD = {"rig_id": "rig-01", "ts": "2026-11-30T10:00:00Z", "temperature_c": 55.5, "pressure_hpa": 1010, "uptime_h": 3}


def test_a_good_reading_lands_clean():
    [r] = rows(GOOD)
    assert (r["rig_id"], r["temperature_c"], r["pressure_hpa"], r["uptime_h"], r["problems"], r["day"]) == \
        ("rig-01", 55.5, 1010.0, 3.0, "", "2026-11-30")


@pytest.mark.parametrize(("over", "needle"), [
    ({"temperature_c": "abc"}, "temperature_c 'abc' is not a number"),
    ({"temperature_c": True}, "temperature_c '<true>' is not a number"),
    ({"pressure_hpa": [1]}, "pressure_hpa '<list>' is not a number"),
    ({"ts": "yesterday"}, "ts 'yesterday' is not a timestamp"),
    ({"rig_id": "rig-02"}, "differs from the message key"),
])
def test_unparseable_values_land_with_the_problem_instead_of_going_to_the_dlq(over, needle):
    [r] = rows({**GOOD, **over})
    assert needle in r["problems"]


def test_nulls_and_numeric_strings_are_values_not_problems():
    [r] = rows({**GOOD, "temperature_c": None, "pressure_hpa": " 1011.5 ", "ts": 1764496800000})
    assert r["temperature_c"] is None and r["pressure_hpa"] == 1011.5 and r["problems"] == ""
    assert r["day"] == "2025-11-30"


@pytest.mark.parametrize(("value", "ct", "needle"), [
    (b"{not json", JSON, "invalid JSON"), (b"[1, 2]", JSON, "object"), (b"", JSON, "empty"),
    (b"\xff\xff\xff\xff", ARROW, "must be JSON"),
])
def test_what_is_no_reading_at_all_goes_to_the_dlq(value, ct, needle):
    with pytest.raises(DecodeError, match=needle):
        RigReadingsDecoder().decode(value, b"rig-01", ct)


def test_several_readings_per_message_and_one_bad_line_refuses_the_message():
    line = json.dumps(GOOD).encode()
    assert len(rows(line + b"\n" + line)) == 2
    with pytest.raises(DecodeError, match="line"):
        RigReadingsDecoder().decode(line + b"\n{oops", b"rig-01", JSON)


def test_csv_cells_and_json_values_parse_alike():
    csv = parse_raw({"rig_id": pa.array(["rig-01"]), "ts": pa.array(["2026-11-30 10:00:00"]),
                     "temperature_c": pa.array(["55.5"]), "pressure_hpa": pa.array(["1010"]),
                     "uptime_h": pa.array(["3"])}, pa.array(["f.csv:2"])).to_pylist()[0]
    [js] = rows(GOOD)
    assert {k: csv[k] for k in ("rig_id", "ts", "temperature_c", "pressure_hpa", "uptime_h", "problems", "day")} == \
        {k: js[k] for k in ("rig_id", "ts", "temperature_c", "pressure_hpa", "uptime_h", "problems", "day")}
