"""Hostile review of the rig domain: each test pins one promise of the issue that the code breaks.

(Failing on purpose until fixed: input rows = clean + quarantined always; a file taken once complete;
bad CSVs get a clear outcome, never a crash, never a lost or made-up row; hostile ids safe in
Postgres; no file outside the inbox is read.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from aero_assets.keys import RIG_CLEAN, RIG_READINGS, rig_daily
from aero_assets.rig.cleaning import clean
from aero_assets.rig.csv_inbox import read_rig_csv
from aero_assets.rig.decoder import RigReadingsDecoder
from aero_assets.rig.landing import CSV_DIR, day_rows, land_csv
from sensors.rig_inbox import build_rig_inbox_sensor
from tests.conftest import REPO

HEADER = b"timestamp,temperature,pressure,uptime\n"


def _line(i: int, temp: str = "55.1") -> bytes:
    return b"2026-03-01T%02d:%02d:%02dZ,%s,1010.5,12.0\n" % (i // 3600 % 24, i // 60 % 60, i % 60, temp.encode())


def _inbox(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    (inbox / "rig").mkdir(parents=True, exist_ok=True)
    return inbox


def _land(tmp_path: Path, name: str, data: bytes):
    inbox = _inbox(tmp_path)
    (inbox / "rig" / name).write_bytes(data)
    res = land_csv(inbox, tmp_path / "lake", name)
    rows = pq.read_table(res.path).to_pylist() if res.path else []
    return res, rows


def _tick(sensor, instance, lake, cursor=None):
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))


# --- CSV parsing: never a crash, never a lost or made-up row -------------------------------------------------


@pytest.mark.parametrize("ts", ["2999-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31 23:59:59"])
def test_a_timestamp_outside_the_nanosecond_range_is_a_problem_not_a_crash_of_the_whole_file(tmp_path, ts):
    """pandas parses these at second resolution; `.as_unit("ns")` then raises OutOfBoundsDatetime, the
    landing run fails (and its retries), the file never moves and none of its good rows land."""
    res, rows = _land(tmp_path, "rig-07.csv", HEADER + _line(0) + ts.encode() + b",55.1,1010.5,12.0\n")
    assert res.rejected is None and len(rows) == 2
    assert rows[0]["problems"] == "" and "not a timestamp" in rows[1]["problems"]
    assert res.moved_to == tmp_path / "inbox" / "rig" / "processed" / "rig-07.csv"


def test_a_json_reading_dated_2999_is_landed_with_a_problem_not_a_decoder_crash():
    """Same parser on the topic: the decoder raises, landing treats it as a decoder bug and sends the
    whole message (every reading in it) to the DLQ instead of landing it for the quarantine."""
    value = json.dumps({"rig_id": "rig-01", "ts": "2999-01-01T00:00:00Z", "temperature_c": 50,
                        "pressure_hpa": 1000, "uptime_h": 1}).encode()
    table = RigReadingsDecoder().decode(value, b"rig-01", "application/json").table
    assert table.num_rows == 1 and "not a timestamp" in table["problems"][0].as_py()


def test_epoch_milliseconds_beyond_the_int64_range_are_a_problem_not_a_made_up_timestamp(tmp_path):
    """`ms * 1_000_000` overflows int64 silently for 14-16 digits: 9999999999999999 lands as a clean
    reading at 2029-02-02 07:34:09.422 - a timestamp nobody sent."""
    _, rows = _land(tmp_path, "rig-07.csv", HEADER + b"9999999999999999,55.1,1010.5,12.0\n")
    assert len(rows) == 1
    assert rows[0]["problems"] != "", f"landed as a valid reading at {rows[0]['ts']}"


def test_a_stray_quote_does_not_swallow_the_lines_after_it(tmp_path):
    """One unbalanced quote turns the rest of the file into one 'bad line' (its text cut to 200
    characters): 50 good readings after it are neither clean nor quarantined as readings."""
    data = HEADER + _line(0) + b'2026-03-01T00:00:01Z,"55.1,1010.5,12.0\n' + b"".join(_line(i) for i in range(2, 52))
    res, rows = _land(tmp_path, "rig-07.csv", data)
    assert res.rejected is None
    assert len(rows) == 52, f"52 data lines, {len(rows)} landed rows"
    good, quarantined = clean(pq.read_table(res.path))
    assert good.num_rows == 51 and quarantined.num_rows == 1


@pytest.mark.xfail(strict=True, reason="known limit: a CSV record is one physical line (quoted newlines are not "
                                       "supported; rig exports have none); each part lands as a bad line")
def test_quoted_newlines_make_up_no_row_at_a_block_boundary_and_origins_name_the_real_line(tmp_path):
    """newlines_in_values is off: a quoted value with a newline that straddles a 2 MB block is cut in
    two (one made-up bad row 'b"'), and every origin after the first multi-line value names a line
    that is not where the reading is (rows counted as lines)."""
    n = 60_000
    rows_in = [b'2026-03-01T%02d:%02d:%02dZ,55.1,1010.5,12.0,"a\nb"\n' % (i // 3600 % 24, i // 60 % 60, i % 60)
               for i in range(n)]
    path = _inbox(tmp_path) / "rig" / "rig-07.csv"
    path.write_bytes(b"timestamp,temperature,pressure,uptime,note\n" + b"".join(rows_in))
    out = [r for t, _ in read_rig_csv(path, "f", 0) for r in t.select(["origin", "problems"]).to_pylist()]
    assert len(out) == n, f"{n} readings in the file, {len(out)} rows landed"
    assert all(r["problems"] == "" for r in out)
    assert out[1]["origin"] == "f:4" and out[-1]["origin"] == f"f:{2 + 2 * (n - 1)}", (out[1], out[-1])


def test_a_quoted_header_name_holding_the_delimiter_does_not_turn_every_line_bad(tmp_path):
    """The header is split on the delimiter without CSV quoting: 6 names for 5 columns, so every data
    line 'has 5 field(s), expected 6' and the whole file is quarantined."""
    _, rows = _land(tmp_path, "rig-07.csv", b'timestamp,temperature,pressure,uptime,"note, free text"\n'
                                            b'2026-03-01T00:00:00Z,55.1,1010.5,12.0,"a, b"\n')
    assert [r["problems"] for r in rows] == [""]


def test_a_bom_inside_a_quoted_rig_id_header_still_names_the_rig_column(tmp_path):
    """'"\\ufeffrig_id"' is not recognised (str.strip keeps U+FEFF), so the rig_id column is ignored and
    every reading is silently attributed to the rig of the file name instead of 'r1'."""
    _, rows = _land(tmp_path, "rig-07.csv", b'"\xef\xbb\xbfrig_id",ts,temperature,pressure,uptime\n'
                                            b"r1,2026-03-01T00:00:00Z,55.1,1010.5,12.0\n")
    assert [r["rig_id"] for r in rows] == ["r1"]


@pytest.mark.xfail(strict=True, reason="known limit: a line longer than a parse block (2 MB) rejects the file with "
                                       "a reason instead of quarantining that line")
def test_one_overlong_line_is_a_bad_line_not_a_rejected_file(tmp_path):
    """A single line longer than the parse block (8 MB here; the brief's 2 GB line alike) rejects the
    whole file - every good line with it - instead of quarantining that one line."""
    data = HEADER + _line(0) + b"2026-03-01T00:00:01Z," + b"7" * (8 << 20) + b",1,1\n" + _line(2)
    res, rows = _land(tmp_path, "rig-07.csv", data)
    assert res.rejected is None, res.rejected
    assert len(rows) == 3 and sum(r["problems"] != "" for r in rows) == 1


# --- days: every landed row is accounted for in some daily partition ---------------------------------------


def test_every_landed_row_falls_in_a_daily_partition_so_it_is_cleaned_or_quarantined(tmp_path):
    """Rows dated before 2024-01-01 (or epoch *seconds*, read as milliseconds = January 1970) or far in
    the future land on a day that is no partition: the readings sensor only logs a warning (or keeps
    the day pending for decades) and the rows are never clean nor in the quarantine."""
    _, rows = _land(tmp_path, "rig-07.csv", HEADER + b"2023-06-01T00:00:00Z,55.1,1010.5,12.0\n"
                                            b"1700000000,55.1,1010.5,12.0\n"
                                            b"2099-01-01T00:00:00Z,55.1,1010.5,12.0\n")
    outside = [(r["origin"], r["day"]) for r in rows if not rig_daily.has_partition_key(r["day"])]
    assert not outside, f"rows on days without a partition: {outside}"


# --- the inbox: files taken once complete, never from outside --------------------------------------------


def test_a_symlink_in_the_inbox_is_not_followed_out_of_the_inbox(tmp_path, instance):
    """`is_file()` follows links: a link to a file anywhere the Dagster user can read is landed (its
    rows enter the lake), and a link to /etc/passwd puts its first line into the reason file."""
    from resources import LakeResource

    inbox = _inbox(tmp_path)
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_bytes(b"rig_id,ts,temperature,pressure,uptime\nsecret,2026-03-01T00:00:00Z,1,1,1\n")
    (inbox / "rig" / "link.csv").symlink_to(secret)
    (inbox / "rig" / "passwd.csv").symlink_to("/etc/passwd")
    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(inbox))
    sensor = build_rig_inbox_sensor(settle_s=0)
    r1 = _tick(sensor, instance, lake)
    r2 = _tick(sensor, instance, lake, r1.cursor)
    requested = sorted(r.tags["aero/file"] for r in [*(r1.run_requests or []), *(r2.run_requests or [])])
    landed_rows, reasons = 0, ""
    for name in ("link.csv", "passwd.csv"):
        try:
            res = land_csv(inbox, tmp_path / "lake", name)
        except (ValueError, OSError):
            continue
        landed_rows += res.rows
        if res.moved_to is not None:
            reason_file = res.moved_to.parent / f"{res.moved_to.name}.reason.txt"
            reasons += reason_file.read_text() if reason_file.exists() else ""
    assert not requested, f"the sensor requested symlinked files {requested}"
    assert landed_rows == 0, "rows of a file outside the inbox were landed"
    assert "root:" not in reasons, "the first line of /etc/passwd is in the reason file"


def test_a_stale_done_marker_does_not_make_a_rewritten_file_complete_while_it_is_written(tmp_path, instance):
    """The `.done` marker stays after landing. The next file of that name is 'complete' at once: it is
    landed half-written and moved to processed/, the writer's remaining lines go into the moved file
    and are never landed."""
    from resources import LakeResource

    inbox = _inbox(tmp_path)
    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(inbox))
    sensor = build_rig_inbox_sensor(settle_s=3600)  # only the marker can make a file complete here
    f = inbox / "rig" / "rig-07.csv"
    f.write_bytes(HEADER + _line(0))
    Path(f"{f}.done").write_bytes(b"")
    cursor = None

    def tick_and_run():
        nonlocal cursor
        result = _tick(sensor, instance, lake, cursor)
        cursor = result.cursor
        for req in result.run_requests or []:
            land_csv(inbox, tmp_path / "lake", req.run_config["ops"]["rig__readings"]["config"]["file"])

    tick_and_run()  # the first file: marked complete, landed
    time.sleep(0.01)
    with f.open("wb") as fh:  # the next day's file of the same name, being written
        fh.write(HEADER + _line(100) + _line(101))
        fh.flush()
        tick_and_run()
        fh.write(_line(102) + _line(103))
    Path(f"{f}.done").touch()  # the writer marks it complete
    tick_and_run()
    tick_and_run()
    ts = {str(r["ts"]) for p in (tmp_path / "lake").joinpath(*CSV_DIR).glob("*.parquet")
          for r in pq.read_table(p, columns=["ts"]).to_pylist()}
    assert len(ts) == 5, f"5 readings written, {len(ts)} landed"


def test_a_file_name_with_spaces_or_unicode_gets_an_outcome_not_a_forever_wait(tmp_path, instance):
    """Refused names only get a warning in the sensor log; the file is neither landed nor moved to
    rejected/ with a reason, so whoever dropped 'rig 07 run.csv' never learns what happened."""
    from resources import LakeResource

    inbox = _inbox(tmp_path)
    for name in ("rig 07 run.csv", "prüfstand-3.csv"):
        (inbox / "rig" / name).write_bytes(HEADER + _line(0))
    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(inbox))
    sensor = build_rig_inbox_sensor(settle_s=0)
    r1 = _tick(sensor, instance, lake)
    r2 = _tick(sensor, instance, lake, r1.cursor)
    requested = {r.tags["aero/file"] for r in [*(r1.run_requests or []), *(r2.run_requests or [])]}
    for name in ("rig 07 run.csv", "prüfstand-3.csv"):
        assert name in requested or (inbox / "rig" / "rejected" / f"{name}.reason.txt").exists(), name


def test_a_rewritten_file_s_corrected_values_are_the_ones_that_come_out_clean(tmp_path):
    """Each version of a file lands into its own Parquet named by content hash and all stay; the day
    keeps the first copy 'in landing order', i.e. the version whose hash sorts first: corrections of
    a rewritten file are quarantined as duplicates of a stale value."""
    inbox = _inbox(tmp_path)
    f = inbox / "rig" / "rig-07.csv"
    for temp in (b"99.0", b"55.0", b"56.0", b"57.0"):
        f.write_bytes(HEADER + b"2026-03-01T00:00:00Z," + temp + b",1010,1\n")
        land_csv(inbox, tmp_path / "lake", "rig-07.csv")
    good, _ = clean(day_rows(tmp_path / "lake", "rig.readings", "2026-03-01"))
    assert good["temperature_c"].to_pylist() == [57.0], "the latest version of the file should win"


def test_a_landing_killed_mid_write_leaves_no_temporary_file_after_its_retry(tmp_path):
    """kill -9 while the Parquet is written: the retry lands once and moves the file (good), but the
    hidden `.tmp` of the killed attempt stays in the lake forever (hundreds of MB for a big file)."""
    inbox = _inbox(tmp_path)
    (inbox / "rig" / "rig-07.csv").write_bytes(HEADER + b"".join(_line(i) for i in range(86_400)) * 12)
    code = ("import sys; from pathlib import Path; from aero_assets.rig.landing import land_csv; "
            "land_csv(Path(sys.argv[1]), Path(sys.argv[2]), 'rig-07.csv')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out_dir = (tmp_path / "lake").joinpath(*CSV_DIR)
    p = subprocess.Popen([sys.executable, "-c", code, str(inbox), str(tmp_path / "lake")], env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (out_dir.exists() and any(out_dir.glob(".*.tmp"))):
        time.sleep(0.02)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (inbox / "rig" / "rig-07.csv").exists(), "killed before the move"
    res = land_csv(inbox, tmp_path / "lake", "rig-07.csv")
    assert res.rows == 86_400 * 12 and res.moved_to.parent.name == "processed"
    assert [q.name for q in out_dir.iterdir()] == [res.path.name]


# --- Postgres: hostile rig ids never wedge a day ------------------------------------------------------------


FILLER = 2000


def _hostile_day_csv(rig: str) -> bytes:
    # the hostile line after 64 KB, past the sniffer's NUL check
    filler = b"".join(b"rig-01,2026-03-01T%02d:%02d:%02dZ,55.0,1010.0,1.0\n" % (i // 3600, i // 60 % 60, i % 60)
                      for i in range(FILLER))
    return (b"rig_id,timestamp,temperature,pressure,uptime\n" + filler +
            rig.encode() + b",2026-03-01T23:59:00Z,55.0,1010.0,1.0\n")


@pytest.mark.postgres
@pytest.mark.parametrize("label", ["NUL byte", "10 KB id"])
def test_a_hostile_rig_id_does_not_wedge_the_day_in_postgres(tmp_path, serving_pg_url, monkeypatch, label):
    """rig ids are never validated: one reading whose id holds a NUL (Postgres text cannot) or is 10 KB
    (over the btree key limit of the primary key) fails `rig/clean_readings` with a raw psycopg2 error
    on every materialization; the day's good readings are never served, its anomalies/KPIs never run."""
    import psycopg2

    from aero_assets.definitions import build_definitions
    from resources import load_settings

    rng = random.Random(1)
    rig = "r\x001" if label == "NUL byte" else "".join(rng.choice(string.ascii_letters) for _ in range(10_000))
    monkeypatch.setenv("AERO_SERVING_PG_URL", serving_pg_url)
    settings = load_settings({"AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                              "AERO_SERVING_PG_URL": serving_pg_url})
    defs = build_definitions(settings)
    inbox = settings.home / "inbox" / "rig"
    inbox.mkdir(parents=True)
    (inbox / "day.csv").write_bytes(_hostile_day_csv(rig))
    with dg.instance_for_test() as instance:
        landed = dg.materialize([defs.get_assets_def(RIG_READINGS)], instance=instance, resources=defs.resources,
                                run_config={"ops": {"rig__readings": {"config": {"file": "day.csv"}}}})
        assert landed.asset_materializations_for_node("rig__readings")[0].metadata["dagster/row_count"].value \
            == FILLER + 1
        res = dg.materialize([defs.get_assets_def(RIG_CLEAN)], instance=instance, resources=defs.resources,
                             partition_key="2026-03-01", raise_on_error=False)
    assert res.success, label
    with psycopg2.connect(serving_pg_url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from rig_readings where rig_id = 'rig-01'")
        assert cur.fetchone()[0] == FILLER


# --- more: the decoder's key check, the sensor racing the landing run --------------------------------------


@pytest.mark.parametrize(("rig_id", "key"), [(7, b"7"), (" rig-01 ", b"rig-01")])
def test_a_rig_id_equal_to_its_key_once_parsed_is_not_quarantined_as_differing(rig_id, key):
    """The key check compares the raw JSON value, not the parsed one: a numeric id 7 with key "7" is
    quarantined as "rig_id '7' differs from the message key '7'", a padded id likewise."""
    value = json.dumps({"rig_id": rig_id, "ts": "2026-03-01T00:00:00Z", "temperature_c": 50, "pressure_hpa": 1000,
                        "uptime_h": 1}).encode()
    table = RigReadingsDecoder().decode(value, key, "application/json").table
    assert table["problems"].to_pylist() == [""]


def test_a_file_moved_away_during_a_tick_does_not_fail_the_tick(tmp_path, instance, monkeypatch):
    """The landing run moves a file to processed/ while the sensor lists the inbox (likely: hashing a big
    file takes seconds): FileNotFoundError escapes the tick, and the other files' requests are lost
    with it."""
    import sensors.rig_inbox as mod
    from resources import LakeResource

    inbox = _inbox(tmp_path)
    for name in ("a.csv", "b.csv"):
        (inbox / "rig" / name).write_bytes(HEADER + _line(0))
        Path(inbox / "rig" / f"{name}.done").write_bytes(b"")
    real = mod.sha256_of

    def moved_by_the_run(path: Path) -> str:
        if path.name == "a.csv":
            (inbox / "rig" / "processed").mkdir(exist_ok=True)
            path.rename(inbox / "rig" / "processed" / path.name)
        return real(path)

    monkeypatch.setattr(mod, "sha256_of", moved_by_the_run)
    lake = LakeResource(root=str(tmp_path / "lake"), inbox_root=str(inbox))
    result = _tick(build_rig_inbox_sensor(settle_s=3600), instance, lake)
    assert [r.tags["aero/file"] for r in result.run_requests] == ["b.csv"]


def test_lines_appended_while_a_file_is_landed_are_not_moved_away_unlanded(tmp_path, monkeypatch):
    """A writer that pauses longer than settle_s (a stalled upload) gets its file taken: the landing reads
    to the current end, then moves the file without checking it is still what it hashed, so the
    writer's next lines end up in processed/ and are never landed - silently."""
    import aero_assets.rig.landing as mod

    inbox = _inbox(tmp_path)
    f = inbox / "rig" / "rig-07.csv"
    f.write_bytes(HEADER + _line(0) + _line(1))
    real = mod.read_rig_csv

    def writer_resumes(*args, **kwargs):
        yield from real(*args, **kwargs)
        with f.open("ab") as fh:  # the upload resumes just after the reader reached the end
            fh.write(_line(2) + _line(3))

    monkeypatch.setattr(mod, "read_rig_csv", writer_resumes)
    res = land_csv(inbox, tmp_path / "lake", "rig-07.csv")
    landed = pq.read_table(res.path).num_rows if res.path else 0
    moved = res.moved_to.read_bytes().count(b"\n") - 1 if res.moved_to and res.moved_to.exists() else 0
    assert moved <= landed, f"{moved} data lines in {res.moved_to}, only {landed} landed"
