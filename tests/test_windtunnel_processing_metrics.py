"""Processing (despike, gaps, filter, common time base), metrics with uncertainty, and run comparison."""

import numpy as np
import pyarrow as pa
import pytest

from aero_assets.simulators.windtunnel import RunConfig, coefficients, simulate_run
from aero_assets.windtunnel.catalog import load_catalog
from aero_assets.windtunnel.metrics import compare_runs, compute_metrics
from aero_assets.windtunnel.processing import GAP, INTERPOLATED, OK, ProcessedRun, ProcessingConfig, process_run
from aero_assets.windtunnel.series import series_from_table

CAT = load_catalog()


def _proc(run, **cfg):
    s = series_from_table(run.table.sort_by([("channel", "ascending"), ("ts", "ascending")]))
    return process_run(s, CAT, ProcessingConfig(**cfg))


def _metrics(run, **cfg):
    return compute_metrics(run.run_id, _proc(run, **cfg), CAT)


def test_all_channels_share_one_time_base_at_the_target_rate():
    p = _proc(simulate_run("r", duration_s=3, started_ns=0, seed=1))
    assert p.values.shape == (72, 300)
    assert (p.flags == OK).all() and np.isfinite(p.values).all()
    assert p.t_s[1] == pytest.approx(0.01)


def test_the_table_round_trips():
    p = _proc(simulate_run("r", duration_s=2, started_ns=123_000_000_000, seed=1))
    back = ProcessedRun.from_table(p.table())
    assert back.channels == p.channels and back.start_ns == p.start_ns and back.rate_hz == 100
    assert np.array_equal(back.flags, p.flags) and np.allclose(back.values, p.values, equal_nan=True)


def test_spikes_are_removed_and_steady_values_kept():
    run = simulate_run("r", duration_s=10, started_ns=0, fault_rate=1.0, seed=2, fault_kinds=("spike",))
    clean = simulate_run("r", duration_s=10, started_ns=0, seed=2)
    p, pc_ = _proc(run), _proc(clean)
    assert sum(p.dropped.values()) >= 3 * 72 - 10
    for ch in ("FB_FZ", "PT_01", "FLOW_V"):
        i = p.channels.index(ch)
        span = CAT.frame.at[ch, "max"] - CAT.frame.at[ch, "min"]
        # no spike (>= 25% of span) survives: the processed signal stays close to a clean run's
        assert np.nanmax(np.abs(p.values[i] - pc_.values[i])) < 0.05 * span


def test_short_gaps_are_interpolated_and_long_gaps_stay_gaps():
    t = simulate_run("r", duration_s=4, started_ns=0, seed=3).table
    ch = t["channel"].to_numpy(zero_copy_only=False)
    ts = t["ts"].cast(pa.int64()).to_numpy()
    short = (ch == "FB_FX") & (ts >= 1_000_000_000) & (ts < 1_020_000_000)  # 20 ms
    long = (ch == "FB_FZ") & (ts >= 2_000_000_000) & (ts < 2_500_000_000)  # 500 ms
    run = type("R", (), {"table": t.filter(pa.array(~(short | long)))})
    p = _proc(run, max_interp_gap_s=0.05)
    fx, fz = p.channels.index("FB_FX"), p.channels.index("FB_FZ")
    assert (p.flags[fx] == INTERPOLATED).sum() >= 1 and not (p.flags[fx] == GAP).any()
    assert np.isfinite(p.values[fx]).all()
    gap = p.flags[fz] == GAP
    assert 45 <= gap.sum() <= 52 and np.isnan(p.values[fz][gap]).all()


def test_metrics_recover_the_simulated_coefficients_within_their_confidence_interval():
    cfg = RunConfig(wind_speed_ms=50, ride_height_front_mm=25, ride_height_rear_mm=80, yaw_deg=1.5)
    table, summary = _metrics(simulate_run("r", duration_s=20, started_ns=0, config=cfg, seed=4))
    rows = {r["name"]: r for r in table.to_pylist() if r["kind"] == "coefficient"}
    truth = coefficients(cfg)
    for name, key in (("CL", "cl"), ("CD", "cd"), ("aero_balance_front", "balance")):
        r = rows[name]
        assert r["ci95_low"] < r["value"] < r["ci95_high"]
        assert r["value"] == pytest.approx(truth[key], rel=0.01)
        assert r["std_error"] > 0 and r["n_blocks"] == 10
    assert rows["L_over_D"]["value"] == pytest.approx(truth["cl"] / truth["cd"], rel=0.01)
    assert rows["cp_min"]["value"] < -2
    assert summary["steady_window"].startswith("FLOW_V")
    assert {r["name"] for r in table.to_pylist() if r["kind"] == "channel"} == set(CAT.channels)
    assert sum(r["kind"] == "cp" for r in table.to_pylist()) == 44


def test_comparison_finds_a_setup_change_significant_and_a_baseline_compares_to_itself():
    base, _ = _metrics(simulate_run("base", duration_s=10, started_ns=0, seed=5))
    lower, _ = _metrics(simulate_run("var", duration_s=10, started_ns=0, seed=6,
                                     config=RunConfig(ride_height_front_mm=20)))
    comp = {r["metric"]: r for r in compare_runs(lower, base).to_pylist()}
    assert comp["CL"]["significant"] and comp["CL"]["delta"] > 0, "lower front ride height: more downforce"
    assert comp["aero_balance_front"]["delta"] > 0, "and more of it at the front"
    assert comp["CL"]["p_value"] < 1e-3
    ident = compare_runs(base, base).to_pylist()
    assert all(r["is_baseline"] and r["delta"] == 0 and not r["significant"] for r in ident)


def test_a_run_too_short_for_a_steady_hold_yields_no_metrics_and_says_why():
    table, summary = _metrics(simulate_run("r", duration_s=0.1, started_ns=0, seed=1))
    assert table.num_rows == 0 and "too short" in summary["error"]


def test_percent_deltas_are_not_reported_against_a_near_zero_baseline():
    base, _ = _metrics(simulate_run("base", duration_s=6, started_ns=0, seed=5))  # zero yaw: CY ~ 0
    yawed, _ = _metrics(simulate_run("var", duration_s=6, started_ns=0, seed=6, config=RunConfig(yaw_deg=3.0)))
    cy = next(r for r in compare_runs(yawed, base).to_pylist() if r["metric"] == "CY")
    assert cy["delta_pct"] is None and cy["delta"] > 0 and cy["significant"]


def test_a_tap_without_data_does_not_blank_the_cp_summary():
    run = simulate_run("r", duration_s=6, started_ns=0, seed=8)
    p = _proc(run)
    p.values[p.channels.index("PT_01")] = np.nan
    table, _ = compute_metrics("r", p, CAT)
    rows = {r["name"]: r for r in table.to_pylist() if r["kind"] == "coefficient"}
    assert rows["cp_min"]["value"] is not None and rows["cp_min"]["value"] < -1
    assert rows["cl_section"]["value"] is not None
