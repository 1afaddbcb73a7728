"""The rig core's contract: simulate -> land -> clean -> score -> KPIs, as pure functions on Arrow tables.

Pinned here: the detector finds what the simulator planted (precision and recall >= 0.9 over
seeds); robust z-scores are robust (two close spikes are both found, a spike does not flag its
neighbour, a drift is flagged once it crosses the absolute limit); cleaning never loses a row
(rows in = clean + quarantined on hostile tables) and keeps the first duplicate, naming it; the
KPIs equal a pandas groupby; and a day scored with the previous day's tail as context gets the
same z-scores as the two days scored together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aero_assets.rig.anomalies import Thresholds, score
from aero_assets.rig.cleaning import PhysicalBounds, clean
from aero_assets.rig.kpis import daily_kpis, kpis_by_day
from aero_assets.rig.schema import CLEAN_SCHEMA, LANDED_SCHEMA, TS_TYPE
from aero_assets.rig.scoring import precision_recall
from aero_assets.rig.simulate import landed_table, simulate_rigs

START = 1_767_225_600 * 10**9  # 2026-01-01T00:00Z
STEP = 360 * 10**9


def clean_table(temps: list[float] | np.ndarray, pressures=None, rig: str = "rig-01", start: int = START) -> pa.Table:
    """A clean table of one rig at the 6-minute cadence."""
    temps = np.asarray(temps, dtype=float)
    n = temps.size
    pressures = np.full(n, 1000.0) if pressures is None else np.asarray(pressures, dtype=float)
    ts = start + np.arange(n, dtype=np.int64) * STEP
    return pa.Table.from_arrays(
        [
            pa.array([rig] * n),
            pa.array(ts).cast(TS_TYPE),
            pa.array(temps),
            pa.array(pressures),
            pa.array(np.linspace(100.0, 100.0 + n * 0.1, n)),
            pa.array([f"t/{i}" for i in range(n)]),
            pa.array(np.datetime_as_string(ts.astype("datetime64[ns]"), unit="D").astype(object)),
        ],
        schema=CLEAN_SCHEMA,
    )


def flat(n: int, level: float = 60.0, seed: int = 0) -> np.ndarray:
    """Bounded, quantised noise around a level: what the detector assumes normal data looks like."""
    return np.round(level + np.random.default_rng(seed).uniform(-0.15, 0.15, n), 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detector_finds_planted_anomalies_with_precision_and_recall_of_at_least_0_9(seed: int) -> None:
    readings, truth = simulate_rigs(rigs=5, start_ns=START, hours=48, faults=True, seed=seed)
    clean_rows, quarantined = clean(landed_table(readings))
    result = precision_recall(score(clean_rows), truth)
    assert result["precision"] >= 0.9, result
    assert result["recall"] >= 0.9, result
    assert clean_rows.num_rows + quarantined.num_rows == len(readings)


def test_simulation_is_deterministic_with_a_seed_and_plants_every_kind_of_fault() -> None:
    a, ta = simulate_rigs(rigs=5, start_ns=START, hours=48, seed=9)
    b, tb = simulate_rigs(rigs=5, start_ns=START, hours=48, seed=9)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ta, tb)
    assert set(ta["kind"]) == {"null", "outlier", "duplicate", "drift", "impossible"}
    normal, _ = simulate_rigs(rigs=3, start_ns=START, hours=48, faults=False, seed=9)
    scored = score(clean(landed_table(normal))[0])
    assert not pc.any(scored["anomaly"]).as_py()
    assert pc.max(pc.abs(scored["temperature_zscore"])).as_py() < 2.0


def test_two_spikes_a_few_readings_apart_are_both_found() -> None:
    temps = flat(60)
    temps[30] += 9.0
    temps[33] += 12.0
    scored = score(clean_table(temps))
    assert np.flatnonzero(scored["anomaly"].to_numpy()).tolist() == [30, 33]
    assert scored["anomaly_reason"][30].as_py().startswith("temperature z=+")


def test_a_spike_does_not_inflate_the_scale_so_its_neighbour_is_not_flagged() -> None:
    temps = flat(60)
    temps[30] += 20.0
    temps[31] += 1.5  # a real but small step next to the spike: measured against the undisturbed scale
    z = score(clean_table(temps))["temperature_zscore"].to_numpy()
    assert z[30] > 10
    assert 1.0 < z[31] < z[30]
    assert np.all(np.abs(np.delete(z, [30, 31])) < 2.0)


def test_a_spike_at_the_first_reading_of_a_series_is_found() -> None:
    pressures = np.round(1000 + np.random.default_rng(3).uniform(-0.4, 0.4, 40), 1)
    pressures[0] += 80.0
    scored = score(clean_table(flat(40), pressures))
    assert np.flatnonzero(scored["anomaly"].to_numpy()).tolist() == [0]


def test_a_drifting_sensor_is_flagged_once_past_the_absolute_limit() -> None:
    temps = flat(200, level=70.0) + np.clip(np.arange(200) - 50, 0, None) * 0.3  # +3 degC/h from reading 50
    scored = score(clean_table(temps))
    over = temps > 80.0
    assert over.any()
    assert np.array_equal(scored["temperature_alert"].to_numpy(), over)
    assert "temperature > 80 °C" in scored["anomaly_reason"][int(np.argmax(over))].as_py()


def test_score_with_context_gives_a_days_first_rows_the_z_of_both_days_scored_together() -> None:
    readings, _ = simulate_rigs(rigs=3, start_ns=START, hours=48, seed=4)
    both, _ = clean(landed_table(readings))
    day1, day2 = both.filter(pc.equal(both["day"], "2026-01-01")), both.filter(pc.equal(both["day"], "2026-01-02"))
    per_rig = [day1.filter(pc.equal(day1["rig_id"], r)) for r in ("rig-01", "rig-02", "rig-03")]
    tail = pa.concat_tables([t.slice(t.num_rows - 20) for t in per_rig])  # the last 20 readings of each rig
    together = score(both)
    together = together.filter(pc.equal(together["day"], "2026-01-02"))
    alone = score(day2, context=tail)
    assert alone.num_rows == day2.num_rows
    assert alone["origin"].equals(together["origin"])
    np.testing.assert_allclose(alone["temperature_zscore"].to_numpy(), together["temperature_zscore"].to_numpy())
    np.testing.assert_allclose(alone["pressure_zscore"].to_numpy(), together["pressure_zscore"].to_numpy())
    without = score(day2)["temperature_zscore"].to_numpy()
    assert not np.allclose(without, together["temperature_zscore"].to_numpy())  # the context does matter


def _hostile_table(rng: np.random.Generator, n: int) -> pa.Table:
    """Random landed rows: nulls anywhere (sometimes a whole column), NaN/inf/huge values, resent keys."""

    def maybe_null(values: list, p: float) -> list:
        if rng.random() < 0.15:
            return [None] * n
        return [None if rng.random() < p else v for v in values]

    rigs = [rng.choice(["rig-01", "rig-02", "", "RIG-9"]) for _ in range(n)]
    ts = [int(START + rng.integers(0, 6) * STEP) for _ in range(n)]
    specials = [np.nan, np.inf, -np.inf, 1e300, -1e300, -300.0, 0.0, 50_000.0]

    def values(lo: float, hi: float) -> list:
        return [float(rng.choice(specials)) if rng.random() < 0.2 else float(rng.uniform(lo, hi)) for _ in range(n)]

    problems = ["" if rng.random() < 0.8 else "temperature_c 'abc' is not a number" for _ in range(n)]
    return pa.Table.from_arrays(
        [
            pa.array(maybe_null(rigs, 0.1), pa.string()),
            pa.array(maybe_null(ts, 0.1), pa.int64()).cast(TS_TYPE),
            pa.array(maybe_null(values(-100, 400), 0.1), pa.float64()),
            pa.array(maybe_null(values(-10, 4000), 0.1), pa.float64()),
            pa.array(maybe_null(values(-1, 2e6), 0.1), pa.float64()),
            pa.array(problems, pa.string()),
            pa.array([f"inbox/rig/a.csv:{i}" for i in range(n)], pa.string()),
            pa.array(["2026-01-01"] * n, pa.string()),
        ],
        schema=LANDED_SCHEMA,
    )


def test_cleaning_keeps_every_row_clean_or_quarantined_with_a_reason_on_hostile_tables() -> None:
    rng = np.random.default_rng(11)
    for i in range(60):
        n = 0 if i % 10 == 0 else int(rng.integers(1, 80))
        table = _hostile_table(rng, n)
        good, bad = clean(table)
        assert good.num_rows + bad.num_rows == n
        assert sorted(good["origin"].to_pylist() + bad["origin"].to_pylist()) == sorted(table["origin"].to_pylist())
        assert all(bad["reason"].to_pylist()), bad["reason"].to_pylist()
        assert sum(col.null_count for col in good.columns) == 0
        assert good.schema == CLEAN_SCHEMA
        if good.num_rows:  # what is clean is within bounds, unique per (rig_id, ts), sorted
            df = good.to_pandas()
            assert not df.duplicated(["rig_id", "ts"]).any()
            assert df["temperature_c"].between(-60, 300).all()
            assert df.equals(df.sort_values(["rig_id", "ts"], kind="stable"))


def test_cleaning_reasons_name_the_field_and_value_and_the_first_check_wins() -> None:
    rows = [
        ("rig-01", START, 1.0, 1000.0, 5.0, "ts 'yesterday' is not a timestamp", "o/0"),
        (None, START, 1.0, 1000.0, 5.0, "", "o/1"),
        ("rig-01", START, None, 1000.0, 5.0, "", "o/2"),
        ("rig-01", START, -300.0, 50_000.0, 5.0, "", "o/3"),
        ("rig-01", START, 1.0, 1000.0, 5.0, "", "o/4"),
    ]
    cols = list(zip(*rows, strict=True))
    table = pa.Table.from_arrays(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.int64()).cast(TS_TYPE),
            pa.array(cols[2], pa.float64()),
            pa.array(cols[3], pa.float64()),
            pa.array(cols[4], pa.float64()),
            pa.array(cols[5]),
            pa.array(cols[6]),
            pa.array(["2026-01-01"] * 5),
        ],
        schema=LANDED_SCHEMA,
    )
    good, bad = clean(table, PhysicalBounds())
    assert good["origin"].to_pylist() == ["o/4"]
    assert bad["reason"].to_pylist() == [
        "unparseable: ts 'yesterday' is not a timestamp",
        "rig_id is missing",
        "temperature_c is null",
        "physically impossible: temperature_c -300 °C is outside -60..300 °C; "
        "pressure_hpa 50000 hPa is outside 0..3000 hPa",
    ]


def test_duplicates_keep_the_first_in_landing_order_and_the_reason_names_its_origin() -> None:
    readings, truth = simulate_rigs(rigs=4, start_ns=START, hours=24, seed=5)
    table = landed_table(readings)
    good, bad = clean(table)
    dups = bad.filter(pc.starts_with(bad["reason"], "duplicate of "))
    expected = truth[truth["kind"] == "duplicate"]
    assert dups.num_rows == len(expected) > 0
    first = readings.drop_duplicates(["rig_id", "ts"], keep="first").set_index(["rig_id", "ts"])["origin_seq"]
    for rig, ts, reason, origin in zip(
        dups["rig_id"].to_pylist(),
        pc.cast(dups["ts"], pa.int64()).to_pylist(),
        dups["reason"].to_pylist(),
        dups["origin"].to_pylist(),
        strict=True,
    ):  # a loop over the few duplicates of a test, not a data path
        first_seq = int(first.loc[(rig, ts)])
        assert reason == f"duplicate of rig.readings/0/{first_seq}"
        assert int(origin.rsplit("/", 1)[1]) > first_seq
    kept = set(good["origin"].to_pylist())
    assert {f"rig.readings/0/{s}" for s in first.to_numpy()} >= kept


def test_a_resent_reading_with_other_values_keeps_the_first_landed_values() -> None:
    base = landed_table(simulate_rigs(rigs=1, start_ns=START, hours=1, faults=False, seed=1)[0])
    resend = base.slice(2, 1)
    resend = resend.set_column(2, "temperature_c", pa.array([99.0])).set_column(
        6, LANDED_SCHEMA.field("origin"), pa.array(["late/1"])
    )
    earlier = base.slice(0, 1).set_column(6, LANDED_SCHEMA.field("origin"), pa.array(["early/0"]))
    table = pa.concat_tables([base.slice(0, 5), resend, base.slice(5)])
    table = pa.concat_tables([earlier, table])  # an exact copy of reading 0 landed before it
    good, bad = clean(table)
    assert good.num_rows == base.num_rows
    assert 99.0 not in good["temperature_c"].to_pylist()
    assert bad["reason"].to_pylist() == ["duplicate of early/0", "duplicate of rig.readings/0/2"]
    assert bad["origin"].to_pylist() == ["rig.readings/0/0", "late/1"]


def test_kpis_match_a_pandas_groupby() -> None:
    readings, _ = simulate_rigs(rigs=4, start_ns=START, hours=48, seed=6)
    scored = score(clean(landed_table(readings))[0])
    kpis = daily_kpis(scored, "2026-01-02").to_pandas()
    df = scored.to_pandas()
    df = df[df["day"] == "2026-01-02"]
    df["alert"] = df["temperature_alert"] | df["pressure_alert"]
    expected = (
        df.groupby("rig_id")
        .agg(
            readings=("ts", "size"),
            avg_temperature_c=("temperature_c", "mean"),
            min_pressure_hpa=("pressure_hpa", "min"),
            max_pressure_hpa=("pressure_hpa", "max"),
            alert_count=("alert", "sum"),
            uptime_hours=("uptime_h", lambda u: u.max() - u.min()),
            first_ts=("ts", "min"),
            last_ts=("ts", "max"),
        )
        .reset_index()
    )
    assert (kpis["day"] == "2026-01-02").all()
    got = kpis.drop(columns="day")
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False, atol=1e-9)
    assert kpis_by_day(scored).num_rows == 4 * 2


def test_kpi_uptime_is_robust_to_a_counter_reset() -> None:
    table = clean_table(flat(10))
    uptime = pa.array([10.0, 10.1, 10.2, 10.3, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    table = table.set_column(table.schema.get_field_index("uptime_h"), "uptime_h", uptime)
    kpis = daily_kpis(score(table), "2026-01-01")
    assert kpis["uptime_hours"].to_pylist() == pytest.approx([0.8])


def test_thresholds_are_configurable() -> None:
    temps = flat(40)
    temps[20] = 75.0
    assert score(clean_table(temps))["temperature_alert"][20].as_py()
    assert not score(clean_table(temps), Thresholds(temperature_z=100.0))["anomaly"][20].as_py()


def test_the_fast_median_and_sort_equal_the_reference_ones():
    """The window-11 median equals scipy's median filter bit for bit (ties and odd lengths too), and the
    (rig, ts) order equals a stable lexsort, late resends and a ts range too wide for one key included."""
    from scipy.ndimage import median_filter

    from aero_assets.rig.cleaning import order_by_rig_ts
    from aero_assets.rig.kernels import median11

    rng = np.random.default_rng(5)
    for n in [*range(11, 40), 16_395, 16_396, 40_001]:
        for p in (rng.normal(size=n), rng.integers(0, 3, n).astype(float)):
            out = np.empty(n - 10)
            median11(p, out)
            assert np.array_equal(out, median_filter(p, size=11, mode="nearest")[5:-5])
    for spread in (10**6, 4 * 10**18):
        codes = rng.integers(-1, 6, 5000).astype(np.int32)
        ts = np.cumsum(rng.integers(0, 3, 5000)) + START
        ts[rng.integers(0, 5000, 300)] -= rng.integers(0, 50, 300)
        ts[::97] -= spread
        keep = rng.random(5000) > 0.1
        expected = np.lexsort((np.arange(5000), ts, codes))
        expected = expected[keep[expected]]
        order, c, t = order_by_rig_ts(codes, ts, keep)
        assert np.array_equal(order, expected) and np.array_equal(c, codes[order]) and np.array_equal(t, ts[order])


@pytest.mark.parametrize("window", [11, 7, 10, 15])
def test_the_robust_z_kernel_equals_the_scipy_reference_bit_for_bit(window: int) -> None:
    """Segments of every short length (1, 2, below the edge pad, around it) and long ones, ties
    (quantised values), spikes, on one thread and split over two: the same z as SciPy's filters."""
    from concurrent.futures import ThreadPoolExecutor

    from aero_assets.rig.anomalies import robust_z, robust_z_reference

    rng = np.random.default_rng(window)
    sizes = [*range(1, 25), 200, 3_001]
    x = np.concatenate([rng.normal(50, 3, s).round(rng.integers(0, 3)) for s in sizes])
    x[rng.integers(0, x.size, 40)] += 30.0
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    expected = robust_z_reference(x, bounds, window, 0.5)
    assert np.array_equal(robust_z(x, bounds, window, 0.5), expected)
    with ThreadPoolExecutor(2) as pool:
        assert np.array_equal(robust_z(x, bounds, window, 0.5, pool), expected)
    with_nan = x.copy()
    with_nan[5] = np.nan  # (NaN goes to the reference: the min/max network would order it differently)
    assert np.array_equal(robust_z(with_nan, bounds, window, 0.5), robust_z_reference(with_nan, bounds, window, 0.5),
                          equal_nan=True)
