"""Channel catalog (seed 000) and the physics of the simulator that QC and metrics rely on."""

import numpy as np
import pyarrow.compute as pc
import pytest

from aero_assets.simulators.windtunnel import (
    A_REF,
    FAULT_KINDS,
    RunConfig,
    coefficients,
    simulate_run,
)
from aero_assets.windtunnel.catalog import load_catalog

T0 = 1_767_225_600 * 10**9


def test_catalog_has_72_channels_in_six_categories_at_38800_samples_per_second():
    cat = load_catalog()
    assert len(cat.channels) == 72
    assert cat.samples_per_second == 38_800
    sizes = cat.frame.groupby("category").size().to_dict()
    assert sizes == {"force_balance": 6, "component_loads": 8, "pressure_taps": 44, "velocity_flow": 6,
                     "environment": 4, "position": 4}
    assert {cat.rate(c) for c in cat.in_category("force_balance")} == {1000}
    assert {cat.rate(c) for c in cat.in_category("pressure_taps")} == {500}
    assert (cat.frame["min"] < cat.frame["max"]).all()
    assert cat.frame["unit"].notna().all()


def _channel(run, name):
    t = run.table.filter(pc.equal(run.table["channel"], name))
    return (t["ts"].cast("int64").to_numpy() - run.started_ns) / 1e9, t["value"].to_numpy()


def test_a_clean_run_has_every_channel_at_its_nominal_rate():
    run = simulate_run("r", duration_s=2.0, started_ns=T0, seed=1)
    assert run.sample_count == 2 * 38_800
    assert run.faults == []
    counts = dict(zip(*np.unique(run.table["channel"].to_numpy(zero_copy_only=False), return_counts=True),
                      strict=True))
    cat = load_catalog()
    assert all(counts[c] == 2 * cat.rate(c) for c in cat.channels)
    ts = run.table["ts"].cast("int64").to_numpy()
    assert (np.diff(ts) >= 0).all(), "samples are published in time order"


def test_forces_follow_dynamic_pressure_and_setup():
    cfg = RunConfig(wind_speed_ms=50.0)
    run = simulate_run("r", duration_s=6.0, started_ns=T0, config=cfg, seed=2)
    t, fz = _channel(run, "FB_FZ")
    _, q = _channel(run, "FLOW_Q")
    steady = (t > 2.5) & (t < 3.5)
    c = coefficients(cfg)
    expected = -q[steady].mean() * A_REF * c["cl"]
    assert fz[steady].mean() == pytest.approx(expected, rel=0.03)
    assert q[steady].mean() == pytest.approx(0.5 * 1.2 * 50**2, rel=0.05)  # rho ~ 1.2 at 21 C
    # lower front ride height -> more downforce
    low, high = RunConfig(ride_height_front_mm=20), RunConfig(ride_height_front_mm=40)
    assert coefficients(low)["cl"] > coefficients(high)["cl"]


def test_pressure_taps_show_a_suction_peak_near_the_leading_edge():
    run = simulate_run("r", duration_s=6.0, started_ns=T0, seed=3)
    means = {}
    for ch in ("PT_01", "PT_11", "PT_22", "PT_23"):
        t, v = _channel(run, ch)
        means[ch] = v[(t > 2.5) & (t < 3.5)].mean()
    assert means["PT_01"] < means["PT_11"] < 0, "suction strongest at the leading edge"
    assert means["PT_23"] > 0, "pressure side is above free-stream static"


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_injected_and_recorded_as_ground_truth(kind):
    run = simulate_run("r", duration_s=10.0, started_ns=T0, fault_rate=1.0, seed=4, fault_kinds=(kind,))
    assert len(run.faults) == 72 and {f.kind for f in run.faults} == {kind}
    gt = run.ground_truth()
    assert gt["faults"][0]["channel"] in load_catalog().channels
    clean = simulate_run("r", duration_s=10.0, started_ns=T0, seed=4)
    if kind == "dropout":
        assert run.sample_count < clean.sample_count
    else:
        assert run.sample_count == clean.sample_count
    if kind == "out_of_range":
        f = run.faults[0]
        row = load_catalog().frame.loc[f.channel]
        _, v = _channel(run, f.channel)
        assert (v > row["max"]).any()


@pytest.mark.parametrize("kind", ["drift_rezero", "drift_hold"])
def test_a_partial_drift_is_re_zeroed_or_holds_its_offset_and_is_recorded(kind):
    """The faulty run is the clean run of the same seed plus the drift (signals are drawn before faults)."""
    clean = simulate_run("r", duration_s=10.0, started_ns=T0, seed=4)
    run = simulate_run("r", duration_s=10.0, started_ns=T0, fault_rate=1.0, seed=4, fault_kinds=(kind,))
    assert {f["kind"] for f in run.ground_truth()["faults"]} == {kind}
    for f in run.faults[:5]:
        t, v = _channel(run, f.channel)
        _, v0 = _channel(clean, f.channel)
        offset = v - v0
        assert 2.0 <= f.start_s <= 3.5 and f.magnitude > 0
        assert np.all(offset[t < f.start_s] == 0)
        if kind == "drift_rezero":  # the ramp ends by 70 % of the run, then the sensor reads true again
            assert f.start_s + 1.5 <= f.end_s <= 7.0
            assert offset[t < f.end_s].max() == pytest.approx(f.magnitude, rel=0.01)
            assert np.all(offset[t >= f.end_s] == 0)
        else:  # the offset reached by 70 % of the run is kept to the end (end_s: the data is wrong to the end)
            assert f.end_s == 10.0
            assert np.allclose(offset[t >= 7.0], f.magnitude)
        assert np.all(np.diff(offset[t < (f.end_s if kind == "drift_rezero" else 7.0)]) >= -1e-9 * f.magnitude)


def test_simulation_is_reproducible_for_a_seed():
    a = simulate_run("r", duration_s=1.0, started_ns=T0, fault_rate=0.3, seed=9)
    b = simulate_run("r", duration_s=1.0, started_ns=T0, fault_rate=0.3, seed=9)
    assert a.table.equals(b.table) and a.faults == b.faults
