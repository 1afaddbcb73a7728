"""The rig inbox: every hostile CSV has a clear outcome - rows quarantined with reasons, or the file
rejected with a reason file - never a crash, never a lost line, bounded memory on a big file; the file
sensor takes a file once it is complete, never twice unchanged, again when rewritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from aero_assets.rig.landing import land_csv
from sensors.rig_inbox import build_rig_inbox_sensor
from tests.conftest import REPO

HEADER = b"timestamp,temperature,pressure,uptime\n"
GOOD = b"2026-03-01T00:00:00Z,55.1,1010.5,12.0\n2026-03-01T00:06:00Z,55.3,1010.9,12.1\n"


def _land(tmp_path: Path, name: str, data: bytes):
    inbox = tmp_path / "inbox"
    (inbox / "rig").mkdir(parents=True, exist_ok=True)
    (inbox / "rig" / name).write_bytes(data)
    res = land_csv(inbox, tmp_path / "lake", name)
    rows = pq.read_table(res.path).to_pylist() if res.path else []
    return res, rows


@pytest.mark.parametrize(("label", "data"), [
    ("plain", HEADER + GOOD),
    ("semicolons", HEADER.replace(b",", b";") + GOOD.replace(b",", b";")),
    ("BOM and CRLF", b"\xef\xbb\xbf" + (HEADER + GOOD).replace(b"\n", b"\r\n")),
    ("tabs and wire names", b"rig_id\tts\ttemperature_c\tpressure_hpa\tuptime_h\n"
                            b"rig-07\t2026-03-01T00:00:00Z\t55.1\t1010.5\t12.0\n"
                            b"rig-07\t2026-03-01T00:06:00Z\t55.3\t1010.9\t12.1\n"),
    ("an extra column", b"timestamp,temperature,pressure,uptime,operator\n"
                        b"2026-03-01T00:00:00Z,55.1,1010.5,12.0,ann\n2026-03-01T00:06:00Z,55.3,1010.9,12.1,bob\n"),
    ("no trailing newline", HEADER + GOOD.rstrip(b"\n")),
])
def test_csv_dialects_land_the_same_readings(tmp_path, label, data):
    res, rows = _land(tmp_path, "rig-07.csv", data)
    assert res.rejected is None, label
    assert [(r["rig_id"], r["temperature_c"], r["problems"]) for r in rows] == \
        [("rig-07", 55.1, ""), ("rig-07", 55.3, "")], label
    assert [r["origin"] for r in rows] == ["inbox/rig/rig-07.csv:2", "inbox/rig/rig-07.csv:3"], label
    assert res.moved_to == tmp_path / "inbox" / "rig" / "processed" / "rig-07.csv"


def test_bad_lines_land_with_their_problem_and_line_so_nothing_is_lost(tmp_path):
    data = (HEADER + b"2026-03-01T00:00:00Z,55.1,1010.5,12.0\n"
            b"2026-03-01T00:06:00Z,55.3\n"  # too few fields
            b"\n"  # blank: not a reading
            b"2026-03-01T00:12:00Z,5\xe9,1011,12.2\n"  # Latin-1 byte
            b"yesterday,abc,1,5\n"  # unparseable values
            b"2026-03-01T00:18:00Z,55.4,1011.2,12.3,extra\n"  # too many
            b"2026-03-01T00:24:00Z,55.5,10")  # truncated last line
    res, rows = _land(tmp_path, "rig-07__march.csv", data)
    by_line = {int(r["origin"].rsplit(":", 1)[1]): r for r in rows}
    assert sorted(by_line) == [2, 3, 5, 6, 7, 8], "every data line is a row, the blank line is not"
    assert by_line[2]["problems"] == ""
    assert "2 field(s), expected 4" in by_line[3]["problems"]
    assert "not UTF-8" in by_line[5]["problems"]
    assert "'yesterday' is not a timestamp" in by_line[6]["problems"] and "'abc' is not a number" in by_line[6][
        "problems"]
    assert "5 field(s)" in by_line[7]["problems"] and "3 field(s)" in by_line[8]["problems"]
    assert res.bad_lines == 3 and res.rows == 6
    assert all(r["rig_id"] == "rig-07" for r in rows), "the rig comes from the file name"


@pytest.mark.parametrize(("label", "data", "reason"), [
    ("empty", b"", "empty"),
    ("blank", b"\n\n  \n", "empty"),
    ("no header", GOOD, "no header"),
    ("wrong header", b"a,b,c\n1,2,3\n", "unrecognised header"),
    ("missing column", b"timestamp,temperature,uptime\n2026-03-01T00:00:00Z,55,1\n", "pressure_hpa"),
    ("binary", b"\x00\x01\x02PK\x03\x04" * 100, "NUL"),
    ("UTF-16", "timestamp,temperature,pressure,uptime\n".encode("utf-16"), "NUL"),
])
def test_unreadable_files_are_rejected_with_a_reason_file(tmp_path, label, data, reason):
    res, rows = _land(tmp_path, "rig-07.csv", data)
    assert res.rejected and reason in res.rejected, (label, res.rejected)
    assert rows == [] and res.path is None
    assert res.moved_to == tmp_path / "inbox" / "rig" / "rejected" / "rig-07.csv"
    text = (tmp_path / "inbox" / "rig" / "rejected" / "rig-07.csv.reason.txt").read_text()
    assert reason in text and json.loads(text.split("\n\n", 1)[1])["sha256"] == res.sha256


def test_a_file_without_rig_id_takes_the_rig_from_its_name_and_a_hostile_name_is_refused(tmp_path):
    res, rows = _land(tmp_path, "rig-11__march.csv", HEADER + GOOD)
    assert res.rejected is None and {r["rig_id"] for r in rows} == {"rig-11"}
    with pytest.raises(ValueError, match="inbox file name"):
        _land(tmp_path, "../etc.csv", HEADER + GOOD)


def _landing_rss_growth_mb(tmp_path: Path, lines: int) -> tuple[int, int]:
    """(rows landed, max-RSS growth in MB) of landing a CSV of `lines` lines, in a fresh process."""
    script = f"""
import resource, sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from aero_assets.rig.landing import land_csv
root = Path({str(tmp_path)!r}) / "big-{lines}"
inbox = root / "inbox"
(inbox / "rig").mkdir(parents=True)
with (inbox / "rig" / "rig-09.csv").open("wb") as fh:
    fh.write(b"timestamp,temperature,pressure,uptime\\n")
    for _ in range({lines} // 50_000):
        fh.write(b"2026-03-01T00:00:00Z,55.123,1010.512,12.012\\n" * 50_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = land_csv(inbox, root / "lake", "rig-09.csv")
print(res.rows, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows, grew = map(int, out.stdout.split())
    return rows, grew


def test_a_big_file_lands_in_memory_that_does_not_grow_with_the_file(tmp_path):
    """Block by block: a file three times larger (43 MB vs 130 MB) costs about the same memory."""
    small_rows, small = _landing_rss_growth_mb(tmp_path, 1_000_000)
    big_rows, big = _landing_rss_growth_mb(tmp_path, 3_000_000)
    assert (small_rows, big_rows) == (1_000_000, 3_000_000)
    assert big < small + 40 and big < 250, f"{small} MB for 43 MB of CSV, {big} MB for 130 MB"


def _tick(sensor, instance, lake, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake})
    return sensor(ctx)


def test_the_inbox_sensor_takes_a_complete_file_once_and_a_rewritten_one_again(tmp_path, instance):
    from resources import LakeResource

    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(tmp_path / "inbox"))
    inbox = tmp_path / "inbox" / "rig"
    inbox.mkdir(parents=True)
    sensor = build_rig_inbox_sensor(settle_s=0.0)
    f = inbox / "rig-07.csv"
    f.write_bytes(HEADER + GOOD[:40])  # still being written
    r1 = _tick(sensor, instance, lake)
    assert not r1.run_requests and "settle" in r1.skip_reason.skip_message
    with f.open("ab") as fh:
        fh.write(GOOD[40:])
    r2 = _tick(sensor, instance, lake, r1.cursor)
    assert not r2.run_requests, "it grew since the last tick: not complete yet"
    r3 = _tick(sensor, instance, lake, r2.cursor)
    [req] = r3.run_requests
    assert req.run_config["ops"]["rig__readings"]["config"]["file"] == "rig-07.csv"
    r4 = _tick(sensor, instance, lake, r3.cursor)
    assert [r.run_key for r in r4.run_requests] == [req.run_key], "unchanged: the same run key (Dagster dedupes)"
    time.sleep(0.01)
    f.write_bytes(HEADER + GOOD + GOOD.replace(b"55.", b"56."))
    os.utime(f)
    r5 = _tick(sensor, instance, lake, r4.cursor)
    r6 = _tick(sensor, instance, lake, r5.cursor)
    assert r6.run_requests and r6.run_requests[0].run_key != req.run_key, "rewritten content: a new run"


def test_a_done_marker_means_complete_at_once_and_hostile_names_are_not_taken(tmp_path, instance):
    from resources import LakeResource

    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(tmp_path / "inbox"))
    inbox = tmp_path / "inbox" / "rig"
    inbox.mkdir(parents=True)
    (inbox / "rig-08.csv").write_bytes(HEADER + GOOD)
    (inbox / "rig-08.csv.done").write_bytes(b"")
    (inbox / "x;rm -rf.csv").write_bytes(HEADER + GOOD)
    result = _tick(build_rig_inbox_sensor(settle_s=3600), instance, lake)
    assert [r.tags["aero/file"] for r in result.run_requests] == ["rig-08.csv"]


def test_rows_read_and_rows_counted_come_from_one_listing_whatever_lands_meanwhile(tmp_path):
    """The day's balance check counts the files the day's rows were read from: a landing that writes
    the next file in between is no discrepancy (the sensor asks for the day again after it)."""
    from aero_assets.rig.landing import count_day_rows, day_files, day_rows

    _land(tmp_path, "rig-07.csv", HEADER + GOOD)
    files = day_files(tmp_path / "lake", "rig.readings")
    rows = day_rows(tmp_path / "lake", "rig.readings", "2026-03-01", files)
    _land(tmp_path, "rig-08.csv", HEADER + GOOD)  # lands while the day is being cleaned
    assert count_day_rows(tmp_path / "lake", "rig.readings", "2026-03-01", files) == rows.num_rows == 2
    assert count_day_rows(tmp_path / "lake", "rig.readings", "2026-03-01") == 4
