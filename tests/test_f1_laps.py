"""Lap summaries: exact times from interpolated line crossings, and never a wrong summary from bad order.

Pins: lap and sector times match the analytic answer of the synthetic session; a lap in progress is
not complete; shuffled, duplicated and lap-renumbered input gives the clean input's summaries (or
flags the laps involved); statistics agree with a plain pandas groupby.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aero_assets.f1.laps import Telemetry, put_in_order, summarise_laps
from tests.f1_data import SECTORS, L, exact_lap_time, session_table


def summarise(table, finished=()):
    out, rep = summarise_laps(Telemetry.from_table(table), L, SECTORS, set(finished))
    return out.to_pandas(), rep


def test_lap_and_sector_times_match_the_analytic_answer():
    s, _ = summarise(session_table(laps=3))
    full = s[s["complete"]]
    assert list(full["lap"]) == [1, 2, 3]
    assert np.allclose(full["lap_time_s"], exact_lap_time(), atol=0.002)
    assert np.allclose(full["sector1_s"], exact_lap_time(0, SECTORS[0]), atol=0.002)
    assert np.allclose(full["sector2_s"], exact_lap_time(*SECTORS), atol=0.002)
    assert np.allclose(full["sector3_s"], exact_lap_time(SECTORS[1], L), atol=0.002)
    assert np.allclose(full["sector1_s"] + full["sector2_s"] + full["sector3_s"], full["lap_time_s"])
    assert np.allclose(full["distance_m"], L, rtol=1e-4)
    assert (full["flags"] == "").all()


def test_the_lap_in_progress_is_not_complete_until_the_session_finishes_at_the_line():
    s, _ = summarise(session_table(laps=2, extra_m=1000))
    assert list(s["complete"]) == [True, True, False]
    assert "short_of_line" in s["flags"].iloc[-1]
    s, _ = summarise(session_table(laps=2, extra_m=1000), finished={"s1"})
    assert not s["complete"].iloc[-1], "a finished session's lap that never reached the line stays incomplete"
    s, _ = summarise(session_table(laps=2, extra_m=L - 1), finished={"s1"})
    assert s["complete"].all()


def test_shuffled_and_duplicated_packets_give_the_clean_summaries():
    clean = session_table(laps=2)
    rng = np.random.default_rng(1)
    dup = rng.choice(clean.num_rows, 500, replace=False)
    messy = pa.concat_tables([clean, clean.take(pa.array(dup))])
    messy = messy.take(pa.array(rng.permutation(messy.num_rows)))
    a, _ = summarise(clean)
    b, rep = summarise(messy)
    assert rep.duplicates_dropped == 500 and rep.out_of_order > 0
    pd.testing.assert_frame_equal(a, b)


def test_a_lap_counter_that_goes_back_flags_the_laps_and_keeps_each_laps_rows_together():
    t = session_table(laps=3).to_pandas()
    lap2 = np.flatnonzero(t["lap"] == 2)
    t.loc[lap2[100:200], "lap"] = 1  # a glitch: 1 s of lap 2 reported as lap 1
    s, rep = summarise(pa.Table.from_pandas(t, preserve_index=False))
    assert rep.lap_counter_back == 1
    assert list(s["lap"]) == [1, 2, 3, 4], "one row per lap, not one per run of rows"
    assert s.set_index("lap").loc[[1, 2], "lap_counter_back"].all()
    assert not s.set_index("lap").loc[3, "lap_counter_back"]


def test_a_lap_counter_jump_and_a_gap_are_flagged_not_dropped():
    t = session_table(laps=3).to_pandas()
    t.loc[t["lap"] >= 3, "lap"] += 2  # laps 3, 4 renumbered 5, 6
    drop = np.flatnonzero(t["lap"] == 2)[3000:3010]  # 100 ms missing in lap 2
    t = t.drop(index=drop)
    s, rep = summarise(pa.Table.from_pandas(t, preserve_index=False))
    by = s.set_index("lap")
    assert rep.lap_counter_jumps == 1 and by.loc[5, "lap_counter_jump"]
    assert by.loc[2, "has_gap"] and by.loc[2, "max_gap_ms"] == pytest.approx(110, abs=1)
    assert by.loc[2, "complete"], "a lap with a gap is summarised and flagged"
    assert np.isclose(by.loc[2, "lap_time_s"], exact_lap_time(), atol=0.002)


def test_statistics_agree_with_a_pandas_groupby():
    t = pa.concat_tables([session_table("a", laps=2), session_table("b", laps=2, t0_ns=1_790_000_500_000_000_000)])
    s, _ = summarise(t)
    df = t.to_pandas()
    g = df.groupby(["session_id", "lap"])
    ref = pd.DataFrame({
        "samples": g.size(),
        "max_speed_kph": g["speed_kph"].max(),
        "avg_speed_kph": g["speed_kph"].mean(),
        "throttle_pct": g["throttle"].mean() * 100,
        "brake_pct": g["brake"].apply(lambda b: (b > 0.05).mean() * 100),
        "peak_lat_g": g["g_lat"].apply(lambda x: x.abs().max()),
        "peak_braking_g": -g["g_long"].min(),
        "gear_changes": g["gear"].apply(lambda x: int((x.diff().fillna(0) != 0).sum())),
    })
    got = s.set_index(["session_id", "lap"])[ref.columns]
    pd.testing.assert_frame_equal(got.astype(float), ref.astype(float), rtol=1e-5, check_names=False)


def test_interleaved_sessions_are_separated_before_summarising():
    a, b = session_table("a", laps=1, extra_m=100), session_table("b", laps=1, extra_m=100)
    inter = pa.concat_tables([a.slice(0, 5000), b.slice(0, 5000), a.slice(5000), b.slice(5000)])
    _, rep = put_in_order(Telemetry.from_table(inter))
    assert rep.sorted_by == "session, time"
    s, _ = summarise(inter)
    assert list(s["session_id"]) == ["a", "a", "b", "b"]
    assert np.allclose(s[s["complete"]]["lap_time_s"], exact_lap_time(), atol=0.002)


def test_no_rows_give_an_empty_table_with_the_schema():
    s, _ = summarise(session_table().slice(0, 0))
    assert len(s) == 0 and "lap_time_s" in s.columns


def test_a_parquet_file_streamed_by_row_group_gives_the_whole_table_summaries(tmp_path):
    import pyarrow.parquet as pq

    from aero_assets.f1.laps import summarise_parquet

    t = pa.concat_tables([session_table("a", laps=3), session_table("b", laps=2, t0_ns=1_790_000_500_000_000_000)])
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=7_777)  # cuts fall inside laps, and one between sessions
    streamed, rep = summarise_parquet(path, L, SECTORS)
    assert rep.sorted_by.startswith("as stored")
    whole, _ = summarise_laps(Telemetry.from_table(t), L, SECTORS)
    pd.testing.assert_frame_equal(streamed.to_pandas(), whole.to_pandas(), rtol=1e-9)  # only summation order differs

    # a file out of order is not streamed: it is repaired whole, and gives the same answer
    shuffled = t.take(pa.array(np.random.default_rng(0).permutation(t.num_rows)))
    pq.write_table(shuffled, path, row_group_size=7_777)
    repaired, rep = summarise_parquet(path, L, SECTORS)
    assert rep.out_of_order > 0
    pd.testing.assert_frame_equal(repaired.to_pandas(), whole.to_pandas(), rtol=1e-9)
