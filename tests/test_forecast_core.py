"""Pure NumPy/pandas core of the forecast domain: simulator, hourly dataset, baselines, drift.

No Dagster, Kafka, torch or files: every test runs on seeded simulated stations, so each statistic
checked here (the daily cycle, the heatwave shift, detection delays) is measured on generated
data against the simulator's ground truth.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from aero_assets.forecast.baselines import (
    evaluate_baselines,
    metrics,
    persistence,
    seasonal_innovations,
    seasonal_naive,
    skill,
)
from aero_assets.forecast.calibration import measure_drift_detector
from aero_assets.forecast.dataset import (
    NS_PER_HOUR,
    TrainingSet,
    build_training_set,
    gaps,
    hourly,
    station_series,
)
from aero_assets.forecast.drift import (
    cusum,
    cusum_statistics,
    drift_report,
    ks,
    page_hinkley,
    page_hinkley_statistic,
    psi,
)
from aero_assets.forecast.simulate import READING_COLUMNS, simulate_station

JULY = pd.Timestamp("2026-07-01").value
SEEDS = (0, 1, 2)


def _series(values: np.ndarray, start_ns: int = JULY) -> pd.Series:
    return pd.Series(values, index=start_ns + np.arange(len(values), dtype=np.int64) * NS_PER_HOUR)


# --- simulator -----------------------------------------------------------------------------------


def test_simulator_is_deterministic_and_speaks_the_wire_columns():
    a, truth_a = simulate_station("KSEA", JULY, 3, seed=7)
    b, truth_b = simulate_station("KSEA", JULY, 3, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert truth_a == truth_b
    assert list(a.columns) == list(READING_COLUMNS)
    assert len(a) == 72 and a["ts"].dtype == np.int64 and np.all(np.diff(a["ts"]) == NS_PER_HOUR)
    assert (a["windspeed_ms"] >= 0).all() and a["pressure_hpa"].between(960, 1060).all()
    assert truth_a["mode"] == "calm" and truth_a["heatwave_start_ns"] is None and truth_a["shift_c"] == 0.0


def test_heatwave_station_is_temperature_only_with_nulls_on_the_wire():
    wave, truth = simulate_station("HW1", JULY, 20, mode="heatwave", seed=1)
    assert wave["windspeed_ms"].isna().all() and wave["pressure_hpa"].isna().all()
    assert wave["temperature_c"].notna().all()
    assert 6 <= truth["shift_c"] <= 10 and 1.5 <= truth["variance_factor"] <= 2
    assert JULY < truth["heatwave_start_ns"] < truth["heatwave_end_ns"]


def test_calm_station_has_a_daily_cycle_warmest_in_the_afternoon():
    readings, truth = simulate_station("KSEA", JULY, 60, seed=3)
    hour = (readings["ts"] // NS_PER_HOUR) % 24
    by_hour = readings.groupby(hour)["temperature_c"].mean()
    assert 13 <= by_hour.idxmax() <= 17 and 1 <= by_hour.idxmin() <= 5
    amplitude = (by_hour.max() - by_hour.min()) / 2
    assert amplitude == pytest.approx(truth["daily_amplitude_c"], rel=0.25)


def test_heatwave_shifts_the_level_and_grows_the_variance_after_the_onset():
    ratios_num, ratios_den = [], []
    for seed in range(8):
        wave, truth = simulate_station("HW", JULY, 30, mode="heatwave", seed=seed)
        calm, _ = simulate_station("HW", JULY, 30, mode="calm", seed=seed)  # same seed = same base weather
        ts = wave["ts"].to_numpy()
        t = wave["temperature_c"].to_numpy()
        plateau = (ts >= truth["heatwave_start_ns"] + truth["ramp_h"] * NS_PER_HOUR) & (ts < truth["heatwave_end_ns"])
        assert (t - calm["temperature_c"].to_numpy())[plateau].mean() == pytest.approx(truth["shift_c"], abs=1.0)
        assert t[plateau].mean() - t[ts < truth["heatwave_start_ns"]].mean() > 4.0
        # Same-hour-yesterday differences cancel the daily cycle; their variance tracks the noise variance.
        d24 = t[24:] - t[:-24]
        ratios_num.append(d24[plateau[24:] & plateau[:-24]])
        ratios_den.append(d24[ts[24:] < truth["heatwave_start_ns"]])
    ratio = np.concatenate(ratios_num).var() / np.concatenate(ratios_den).var()
    assert 1.2 < ratio < 2.6


# --- hourly dataset ------------------------------------------------------------------------------


def test_hourly_keeps_the_last_landed_duplicate_and_sorts_out_of_order_readings():
    readings, _ = simulate_station("S", JULY, 2, seed=0, interval_s=900)
    corrected = readings.iloc[[10]].assign(temperature_c=50.0)  # a re-delivery of reading 10, landing last
    landed = pd.concat([readings.sample(frac=1.0, random_state=1), corrected], ignore_index=True)
    out = hourly(landed)
    assert out["ts"].is_monotonic_increasing and (out["ts"] % NS_PER_HOUR == 0).all()
    assert len(out) == 48 and (out["n_readings"] == 4).all()
    expected = readings.assign(hour=readings["ts"] // NS_PER_HOUR * NS_PER_HOUR)
    expected.loc[10, "temperature_c"] = 50.0
    by_hand = expected.groupby("hour")["temperature_c"].mean().to_numpy()
    np.testing.assert_allclose(out["temperature_c"].to_numpy(), by_hand)
    assert gaps(out) == []


def test_hourly_interpolates_gaps_up_to_three_hours_and_reports_longer_ones():
    readings, _ = simulate_station("S", JULY, 5, seed=0)
    short = [20, 21, 22]  # 3 hours: interpolated
    long = list(range(50, 54))  # 4 hours: left NaN
    out = hourly(readings.drop(index=short + long))
    assert len(out) == 120
    assert out.loc[short, "interpolated"].all() and out.loc[short, "temperature_c"].notna().all()
    line = np.linspace(out.loc[19, "temperature_c"], out.loc[23, "temperature_c"], 5)[1:-1]
    np.testing.assert_allclose(out.loc[short, "temperature_c"], line)
    assert out.loc[long, "temperature_c"].isna().all() and not out.loc[long, "interpolated"].any()
    assert gaps(out) == [(JULY + 50 * NS_PER_HOUR, JULY + 54 * NS_PER_HOUR)]
    assert (out.loc[short + long, "n_readings"] == 0).all()


def test_hourly_handles_several_stations_and_gaps_wants_one_of_them():
    a, _ = simulate_station("A", JULY, 2, seed=0)
    b, _ = simulate_station("B", JULY + 5 * NS_PER_HOUR, 1, mode="heatwave", seed=1)
    out = hourly(pd.concat([b, a.drop(index=range(10, 16))]))
    assert out.groupby("station").size().to_dict() == {"A": 48, "B": 24}
    assert gaps(out, station="A") == [(JULY + 10 * NS_PER_HOUR, JULY + 16 * NS_PER_HOUR)]
    assert out.loc[out["station"] == "B", "windspeed_ms"].isna().all()
    with pytest.raises(ValueError, match="several stations"):
        gaps(out)


def test_hourly_grid_keeps_every_hour_of_a_span_longer_than_float64_can_count_in_ns():
    readings, _ = simulate_station("S", JULY, 200, seed=0)  # 200 days > 2**53 ns: np.arange would lose an hour
    out = hourly(readings.drop(index=[5]))
    assert len(out) == 200 * 24 and np.all(np.diff(out["ts"]) == NS_PER_HOUR)
    assert out.loc[5, "interpolated"]


# --- training set --------------------------------------------------------------------------------


@pytest.mark.parametrize(("lookback", "horizon"), [(24, 1), (48, 24)])
def test_windows_never_straddle_a_split_boundary(lookback, horizon):
    s = _series(np.arange(1000, dtype=float))  # value == position, so inputs reveal where they came from
    tset = build_training_set(s, lookback=lookback, horizon=horizon)
    b1, b2 = 700, 850
    ranges = {"train": (0, b1), "validation": (b1, b2), "test": (b2, 1000)}
    for name, (lo, hi) in ranges.items():
        X, y, target_ts = tset.raw(name)
        X, y = np.rint(X), np.rint(y)  # undo the float noise of scale/unscale: values are positions
        assert len(X) == (hi - lo) - lookback - horizon + 1
        assert X.min() >= lo and y.max() < hi  # inputs and targets all inside the part
        np.testing.assert_array_equal((target_ts - s.index[0]) // NS_PER_HOUR, y)
    assert tset.boundaries_ns == (s.index[b1], s.index[b2])
    assert tset.n_dropped_boundary == 2 * (lookback + horizon - 1) and tset.n_dropped_nan == 0
    train_targets = tset.part("train")[2]
    later_inputs = tset.raw("validation")[0]
    assert train_targets.max() < s.index[int(later_inputs.min())]  # no train target is seen later, or vice versa


def test_scaler_is_fitted_on_the_train_part_only():
    readings, _ = simulate_station("S", JULY, 40, seed=2)
    s = station_series(hourly(readings), "S")
    tset = build_training_set(s)
    n_train = int(len(s) * 0.7)
    assert tset.mean == pytest.approx(s.iloc[:n_train].mean())
    assert tset.std == pytest.approx(s.iloc[:n_train].std(ddof=0))
    tampered = s.copy()
    tampered.iloc[n_train:] += 100.0  # a heatwave after the train part must not move the scaler
    other = build_training_set(tampered)
    assert (other.mean, other.std) == (tset.mean, tset.std)
    X_train = tset.part("train")[0]
    assert abs(X_train.mean()) < 0.05 and tset.part("test")[1].shape[1] == 1


def test_windows_touching_a_long_gap_are_dropped_and_counted():
    values = np.arange(500, dtype=float)
    values[100:106] = np.nan
    tset = build_training_set(_series(values), lookback=24, horizon=1)
    # windows covering any of points 100..105: starts 76..105
    assert tset.n_dropped_nan == 30
    assert np.isfinite(tset.X).all() and np.isfinite(tset.y).all()
    assert sum(tset.counts()[k] for k in ("train", "validation", "test")) == 500 - 25 + 1 - 30 - 2 * 24


def test_training_set_round_trips_through_arrays_and_npz():
    tset = build_training_set(_series(np.sin(np.arange(400) / 5.0)), lookback=24, horizon=24)
    buffer = io.BytesIO()
    np.savez(buffer, **tset.to_arrays())
    buffer.seek(0)
    with np.load(buffer) as stored:
        back = TrainingSet.from_arrays(stored)
    for name, value in tset.to_arrays().items():
        np.testing.assert_array_equal(back.to_arrays()[name], value, err_msg=name)
    assert back.counts() == tset.counts()


# --- baselines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [1, 24])
def test_baseline_rmse_matches_a_by_hand_pandas_computation(horizon):
    readings, _ = simulate_station("S", JULY, 30, seed=4)
    s = station_series(hourly(readings), "S")
    tset = build_training_set(s, lookback=48, horizon=horizon)
    _, y, target_ts = tset.raw("test")
    result = evaluate_baselines(tset, "test")

    targets = pd.Series(y.ravel(), index=target_ts.ravel())
    np.testing.assert_allclose(targets.to_numpy(), s.reindex(targets.index).to_numpy())
    origin = np.repeat(target_ts[:, :1] - NS_PER_HOUR, horizon, axis=1).ravel()  # the last input of each window
    persisted = s.reindex(origin).to_numpy()
    yesterday = s.shift(24).reindex(targets.index).to_numpy()
    for name, guess in (("persistence", persisted), ("seasonal_naive", yesterday)):
        err = guess - targets.to_numpy()
        assert result[name]["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
        assert result[name]["mae"] == pytest.approx(np.mean(np.abs(err)))
        assert result[name]["n"] == targets.size


def test_baselines_forecast_the_last_input_and_the_same_hour_yesterday():
    X = np.arange(2 * 30, dtype=float).reshape(2, 30)
    np.testing.assert_array_equal(persistence(X, 3), [[29, 29, 29], [59, 59, 59]])
    np.testing.assert_array_equal(seasonal_naive(X, 2), [[6, 7], [36, 37]])
    with pytest.raises(ValueError):
        seasonal_naive(X[:, :10], 1)


def test_metrics_ignore_missing_pairs_and_skill_compares_to_a_baseline():
    m = metrics(np.array([1.0, 2.0, np.nan]), np.array([2.0, 4.0, 1.0]))
    assert m == {"rmse": pytest.approx(np.sqrt(2.5)), "mae": 1.5, "n": 2}
    assert skill(1.0, 2.0) == 0.5 and skill(2.0, 2.0) == 0.0 and skill(3.0, 2.0) == -0.5
    assert np.isnan(skill(1.0, 0.0))


# --- drift ---------------------------------------------------------------------------------------


def test_psi_and_ks_are_near_zero_on_the_same_distribution():
    rng = np.random.default_rng(0)
    readings, _ = simulate_station("S", JULY, 60, seed=5)
    temps = readings["temperature_c"].to_numpy()
    shuffled = rng.permutation(temps)  # two random halves of one station: exactly the same distribution
    assert psi(shuffled[:720], shuffled[720:]) < 0.03
    assert ks(shuffled[:720], shuffled[720:])[1] > 0.01
    a, b = rng.normal(size=5000), rng.normal(size=5000)
    assert psi(a, b) < 0.01 and ks(a, b)[0] < 0.05
    assert psi(a, a) == pytest.approx(0.0) and ks(a, a) == (0.0, 1.0)


def test_psi_and_ks_are_large_after_a_heatwave():
    for seed in SEEDS:
        wave, truth = simulate_station("HW", JULY, 30, mode="heatwave", seed=seed)
        ts, temps = wave["ts"].to_numpy(), wave["temperature_c"].to_numpy()
        before = temps[ts < truth["heatwave_start_ns"]]
        during = temps[(ts >= truth["heatwave_start_ns"]) & (ts < truth["heatwave_end_ns"])]
        assert psi(before, during) > 1.0
        statistic, p = ks(before, during)
        assert statistic > 0.4 and p < 1e-10


def test_page_hinkley_statistic_equals_the_sequential_definition():
    errors = np.abs(np.random.default_rng(1).normal(size=300))
    errors[200:] += 2.0
    m, m_min, expected = 0.0, 0.0, []
    for t, x in enumerate(errors):  # the textbook recursion, as a reference for the vectorised version
        mean = errors[: t + 1].mean()
        m += x - mean - 0.5
        m_min = min(m_min, m)
        expected.append(m - m_min)
    np.testing.assert_allclose(page_hinkley_statistic(errors, 0.5), expected, atol=1e-9)
    assert page_hinkley(errors, 0.5, 10.0) == int(np.flatnonzero(np.array(expected) > 10.0)[0])
    assert page_hinkley(errors[:200], 0.5, 1e6) is None


def test_cusum_statistics_equal_the_sequential_definition():
    x = np.random.default_rng(2).normal(size=300)
    x[150:] += 4.0
    x[40] = np.nan  # an hour without a value adds nothing
    up, down, s_up, s_down = [], [], 0.0, 0.0
    for v in x:  # the textbook recursion S_t = max(0, S_t-1 + x_t - k), as a reference
        if np.isfinite(v):
            s_up, s_down = max(0.0, s_up + v - 1.0), max(0.0, s_down - v - 1.0)
        up.append(s_up)
        down.append(s_down)
    got_up, got_down = cusum_statistics(x, 1.0)
    np.testing.assert_allclose(got_up, up, atol=1e-9)
    np.testing.assert_allclose(got_down, down, atol=1e-9)
    alarm, onset, side = cusum(x, 1.0, 20.0)
    assert side == "up" and alarm == int(np.flatnonzero(np.array(up) > 20.0)[0]) and 140 <= onset <= 151
    assert cusum(-x, 1.0, 20.0)[2] == "down"
    assert cusum(x[:140], 1.0, 1e6) == (None, None, "")


def test_the_verdict_never_alarms_on_calm_stations_and_flags_heatwaves_within_a_day():
    """Seeds 0-3 of the calibration: four weeks calm and a heatwave five days in (delays 17, 20, 13, 13 h)."""
    table = measure_drift_detector(range(4))
    waves = table[table["mode"] == "heatwave"]
    assert not table["false_alarm"].any()
    assert waves["detected"].all() and (waves["delay_h"] >= 0).all() and (waves["delay_h"] <= 24).all()


def test_drift_report_flags_a_heatwave_with_reasons():
    wave, truth = simulate_station("HW", JULY, 30, mode="heatwave", seed=0)
    s = station_series(hourly(wave), "HW")
    onset = truth["heatwave_start_ns"]
    innovations = seasonal_innovations(s).dropna()
    report = drift_report(s[s.index < onset].to_numpy(), s[s.index >= onset].iloc[:72].to_numpy(),
                          innovations.to_numpy())
    assert report["drifted"] and len(report["reasons"]) == 1 and len(report["input_reasons"]) == 2
    assert report["direction"] == "up" and "warmer" in report["reasons"][0]
    assert report["psi"] > 0.2 and report["ks_p"] < 0.01
    assert innovations.index[report["alarm_index"]] - onset <= 24 * NS_PER_HOUR
    # the change is placed before the alarm, close to the planted onset
    estimated = innovations.index[report["onset_index"]]
    assert estimated <= innovations.index[report["alarm_index"]]
    assert abs(estimated - onset) <= 12 * NS_PER_HOUR
    assert report["thresholds"]["psi"] == 0.2

    calm = drift_report(s[s.index < onset].to_numpy(), s[s.index < onset].to_numpy(),
                        innovations[innovations.index < onset].to_numpy())
    assert not calm["drifted"] and calm["reasons"] == [] and calm["alarm_index"] is None


def test_input_drift_alone_is_reported_but_does_not_decide_drifted():
    calm, _ = simulate_station("C", JULY, 60, mode="calm", seed=1)
    s = station_series(hourly(calm), "C").to_numpy()
    # two months apart the season has moved the temperatures: PSI/KS fire, the error detectors do not
    report = drift_report(s[:24 * 14], s[-24 * 3:], innovations=np.zeros(100), model_errors_z=np.full(100, 0.8))
    assert report["input_drifted"] and not report["drifted"]
    assert report["alarm_index"] is None and report["model_alarm_index"] is None


def test_champion_degradation_is_reported_with_its_onset_but_is_not_a_verdict():
    rng = np.random.default_rng(0)
    z = np.abs(rng.normal(0.0, 1.0, 400))
    z[250:] *= 1.6  # the variance of a heatwave, or a winter model in spring: |z| rises by ~0.5 for good
    report = drift_report(np.zeros(10), np.zeros(10), model_errors_z=z)
    assert not report["drifted"] and len(report["degradation_reasons"]) == 1
    assert 250 <= report["model_alarm_index"] <= 320
    assert 220 <= report["model_onset_index"] <= report["model_alarm_index"]
