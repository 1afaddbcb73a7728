"""Contract of the F1 physics core (`aero_assets.f1.track`, `aero_assets.f1.car`).

Pins: the Silverstone layout (5,891 m, closed clockwise centreline, corners in lap order, three
sectors, vectorised lookups right at boundaries) and the realism of the simulated telemetry against
public F1 figures (lap 84-100 s, vmax 300-345 km/h, 3.5-6 g lateral, 4-6 g braking, 55-80 % of the
lap at full throttle, 1.5-2 kg of fuel per lap), plus the sampling contract of `simulate_lap`
(100 Hz time base consistent with the distance, lap-to-lap noise that is seeded, pit-lane limit on
the out-lap, gear/rpm ranges, fuel monotone). Pure NumPy, no broker or Dagster: the file runs in ~1 s.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from aero_assets.f1.car import CarParams, DriverNoise, realism_figures, simulate_lap, speed_profile
from aero_assets.f1.track import CORNER_ORDER, segment_table, silverstone


@pytest.fixture(scope="module")
def track():
    return silverstone()


@pytest.fixture(scope="module")
def params() -> CarParams:
    return CarParams()


@pytest.fixture(scope="module")
def stint(track, params):
    """Ten consecutive flying laps from 40 kg of fuel, each starting at the previous one's end speed."""
    rng = np.random.default_rng(7)
    fuel, speed, laps = 40.0, None, []
    for _ in range(10):
        lap = simulate_lap(track, params, fuel_start_kg=fuel, rng=rng, start_speed_ms=speed)
        laps.append(lap)
        fuel, speed = lap.fuel_end_kg, lap.end_speed_ms
    return laps


# --- track -----------------------------------------------------------------------------------------


def test_track_length_is_5891_m_on_a_1_m_grid(track):
    assert abs(segment_table()["length_m"].sum() - 5891.0) < 0.5
    assert track.length_m == 5891.0
    assert len(track.s) == 5891 and np.all(np.diff(track.s) == 1.0) and track.s[0] == 0.0


def test_centreline_closes_and_heading_is_continuous(track):
    x0, y0 = track.xy(0.0)
    x1, y1 = track.xy(track.length_m)
    assert math.hypot(float(x1 - x0), float(y1 - y0)) < 1.0
    # The last grid point is 1 m before the line: a 1 m step, not a jump.
    assert abs(math.hypot(track.x_m[0] - track.x_m[-1], track.y_m[0] - track.y_m[-1]) - 1.0) < 0.05
    heading_end = track.heading_rad[-1] + track.curvature[-1] * 1.0
    assert abs(heading_end - (track.heading_rad[0] - 2 * math.pi)) < 1e-9  # clockwise: -2 pi in total
    assert np.max(np.abs(np.diff(track.heading_rad))) < 1.0 / 25.0  # no step larger than the tightest corner
    assert np.max(np.abs(np.diff(track.curvature))) < 0.01  # smoothed transitions, no curvature steps


def test_corner_names_appear_in_lap_order(track):
    names = [c.name for c in track.corners]
    positions = [names.index(n) for n in CORNER_ORDER]
    assert positions == sorted(positions)
    assert names[0].startswith("Hamilton Straight") and names[-1].startswith("Hamilton Straight")
    starts = np.array([c.start_m for c in track.corners])
    assert starts[0] == 0.0 and np.all(np.diff(starts) > 0) and track.corners[-1].end_m == pytest.approx(5891.0)


def test_realistic_radii_slow_and_fast_corners(track):
    radius = {c.name: c.radius_m for c in track.corners}
    for slow in ("Village", "The Loop", "Brooklands", "Luffield", "Vale", "Club"):
        assert radius[slow] <= 60
    for fast in ("Abbey", "Copse", "Maggotts", "Becketts", "Chapel", "Stowe"):
        assert radius[fast] >= 100
    lengths = {c.name: c.end_m - c.start_m for c in track.corners}
    assert 700 <= lengths["Wellington Straight"] <= 850 and 700 <= lengths["Hangar Straight"] <= 850


def test_sectors_partition_the_lap_into_three(track):
    s1, s2 = track.sectors_m
    assert 0 < s1 < s2 < track.length_m
    sec = track.sector_of(track.s)
    assert sec.dtype == np.int8 and set(np.unique(sec)) == {1, 2, 3}
    assert np.all(np.diff(sec) >= 0)  # contiguous, in order
    boundaries = np.array([0.0, s1 - 1e-9, s1, s2 - 1e-9, s2, track.length_m - 1e-6, track.length_m])
    assert track.sector_of(boundaries).tolist() == [1, 1, 2, 2, 3, 3, 1]


def test_segment_of_is_vectorised_and_right_at_boundaries(track):
    starts = np.array([c.start_m for c in track.corners])
    idx = np.arange(len(starts))
    assert track.segment_of(starts).tolist() == idx.tolist()
    assert track.segment_of(starts[1:] - 1e-6).tolist() == idx[:-1].tolist()
    assert track.segment_of(np.array([track.length_m, -1.0])).tolist() == [0, len(starts) - 1]
    seg = track.segment_of(track.s)
    assert seg.shape == track.s.shape and np.all(np.diff(seg) >= 0)


def test_xy_wraps_modulo_the_length(track):
    d = np.array([10.5, 2000.25])
    x, y = track.xy(d)
    xw, yw = track.xy(d + track.length_m)
    np.testing.assert_allclose(x, xw)
    np.testing.assert_allclose(y, yw)


def test_pit_straight_and_pit_lane_wrap_over_the_line(track):
    a, b = track.pit_straight_m
    assert a > b  # wraps
    assert track.pit_lane.entry_m > track.sectors_m[1] and track.pit_lane.exit_m < track.sectors_m[0]
    assert track.pit_lane.speed_limit_kph == 80.0
    assert track.in_pit_lane(np.array([5700.0, 0.0, 349.0, 351.0, 3000.0])).tolist() == [True, True, True, False, False]


# --- car: profile and realism ----------------------------------------------------------------------


def test_speed_profile_is_periodic_and_below_corner_limit(track, params):
    prof = speed_profile(track, params, 40.0)
    assert np.all(prof.v_ms <= prof.v_limit_ms + 1e-9)
    assert prof.v_ms.shape == track.s.shape
    assert np.all((prof.throttle >= 0) & (prof.throttle <= 1) & (prof.brake >= 0) & (prof.brake <= 1))
    assert not np.any((prof.throttle > 0.05) & (prof.brake > 0.05))  # never both pedals
    np.testing.assert_allclose(prof.a_lat_ms2, prof.v_ms**2 * track.curvature)


def test_heavier_car_and_less_grip_are_slower(track, params):
    base = speed_profile(track, params, 40.0).lap_time_s
    heavy = speed_profile(track, params, 100.0).lap_time_s
    assert 0.01 * 60 < heavy - base < 0.06 * 60  # ~0.03 s/kg fuel effect
    assert speed_profile(track, params, 40.0, grip_scale=0.98).lap_time_s > base
    assert speed_profile(track, params, 40.0, power_scale=0.95).lap_time_s > base


def test_flying_laps_are_realistic(stint, track):
    times = np.array([lap.lap_time_s for lap in stint])
    assert np.all((times > 84) & (times < 100))
    for lap in stint:
        assert 300 <= lap["speed_kph"].max() <= 345
        assert 3.5 <= np.abs(lap["g_lat"]).max() <= 6.0
        assert 4.0 <= -lap["g_long"].min() <= 6.0
        assert 0.55 <= np.mean(lap["throttle"] >= 0.98) <= 0.80  # uniform time base: share of samples = of time
        assert 1.5 <= lap["fuel_kg"][0] - lap.fuel_end_kg <= 2.0


def test_realism_figures_report_the_targets():
    fig = realism_figures(laps=3, seed=1)
    assert set(fig) >= {"lap_time_s", "vmax_kph", "peak_lat_g", "peak_braking_g", "full_throttle_share",
                        "fuel_per_lap_kg"}
    assert 84 < fig["lap_time_s"] < 100 and 1.5 < fig["fuel_per_lap_kg"] < 2.0


# --- car: sampling contract ------------------------------------------------------------------------


def test_samples_are_100_hz_and_speed_integrates_to_the_length(stint, track):
    lap = stint[0]
    n = len(lap["t_s"])
    assert all(len(col) == n for col in lap.values())
    np.testing.assert_allclose(np.diff(lap["t_s"]), 0.01, atol=1e-9)
    assert lap["t_s"][0] == 0.0 and lap["t_s"][-1] < lap.lap_time_s <= lap["t_s"][-1] + 0.01
    assert lap["distance_m"][0] == 0.0 and np.all(np.diff(lap["distance_m"]) > 0)
    assert lap["distance_m"][-1] < track.length_m
    travelled = np.sum(lap["speed_kph"] / 3.6) * 0.01
    assert abs(travelled - track.length_m) / track.length_m < 0.005
    x, y = track.xy(lap["distance_m"])
    np.testing.assert_allclose(lap["x_m"], x)
    np.testing.assert_allclose(lap["y_m"], y)


def test_lap_time_is_the_time_from_line_to_line(track, params):
    lap = simulate_lap(track, params, fuel_start_kg=40.0, rng=np.random.default_rng(0), noise=DriverNoise.none())
    # Extrapolate from the last sample to the line at the last sample's speed.
    to_line = (track.length_m - lap["distance_m"][-1]) / (lap["speed_kph"][-1] / 3.6)
    assert lap.lap_time_s == pytest.approx(lap["t_s"][-1] + to_line, abs=2e-3)
    assert lap.lap_time_s == pytest.approx(speed_profile(track, params, 40.0).lap_time_s, abs=0.05)


def test_consecutive_laps_differ_but_are_reproducible(stint, track, params):
    times = np.array([lap.lap_time_s for lap in stint])
    assert 0.05 < times.std() < 0.6
    rng = np.random.default_rng(7)
    again = simulate_lap(track, params, fuel_start_kg=40.0, rng=rng)
    assert again.lap_time_s == stint[0].lap_time_s
    np.testing.assert_array_equal(again["g_lat"], stint[0]["g_lat"])


def test_consecutive_laps_are_continuous_in_speed(stint):
    for prev, nxt in itertools.pairwise(stint):
        assert abs(nxt["speed_kph"][0] - prev.end_speed_ms * 3.6) < 2.0  # sensor noise only


def test_out_lap_respects_the_pit_limit_then_accelerates(track, params):
    lap = simulate_lap(track, params, fuel_start_kg=40.0, rng=np.random.default_rng(3), pit_exit=True,
                       noise=DriverNoise.none())
    in_pit = lap["distance_m"] < track.pit_lane.exit_m
    assert in_pit.any() and (~in_pit).any()
    assert lap["speed_kph"][in_pit].max() <= 80.0 + 1e-6
    assert lap["speed_kph"].max() > 300
    flying = simulate_lap(track, params, fuel_start_kg=40.0, rng=np.random.default_rng(3), noise=DriverNoise.none())
    assert lap.lap_time_s > flying.lap_time_s + 1.0
    # The pit-lane cap is behind the car at the end of the lap: it crosses the line at flying speed, no phantom
    # braking for the next lap's pit lane.
    assert lap.end_speed_ms == pytest.approx(flying.end_speed_ms, rel=0.01)
    assert -lap["g_long"].min() <= 6.0


def test_gear_and_rpm_within_limits(stint, params):
    for lap in stint[:3]:
        moving = lap["speed_kph"] > 1.0
        assert lap["gear"].min() >= 1 and lap["gear"].max() == 8
        assert np.all((lap["gear"][moving] >= 1) & (lap["gear"][moving] <= 8))
        assert np.all((lap["rpm"] >= params.idle_rpm) & (lap["rpm"] <= params.rev_limit_rpm))
        assert lap["rpm"].max() > 11_000  # upshifts near the shift point


def test_fuel_decreases_monotonically_over_the_stint(stint):
    fuel = np.concatenate([lap["fuel_kg"] for lap in stint])
    assert np.all(np.diff(fuel) < 0)
    assert stint[0]["fuel_kg"][0] == 40.0
