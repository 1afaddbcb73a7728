"""Hostile review of the compiled rig kernels (`aero_assets/rig/kernels.py`) through their callers.

Each test compares `clean`, `score`, `kpis_by_day` (or `order_by_rig_ts`) with a plain reference
written here (Python / NumPy / SciPy, the old semantics) on inputs an attacker or an operator can
produce: one key repeated, everything late, int64 extremes, nulls, thousands of tiny rigs, non-ASCII
rig ids, NaN/inf, multi-chunk tables, and concurrent calls from several threads.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aero_assets.rig.anomalies import _segments, robust_z, robust_z_reference, score
from aero_assets.rig.cleaning import PhysicalBounds, clean, order_by_rig_ts
from aero_assets.rig.kpis import kpis_by_day
from aero_assets.rig.schema import CLEAN_SCHEMA, LANDED_SCHEMA, SIGNALS, TS_TYPE

S = 1_767_225_600 * 10**9  # 2026-01-01T00:00Z
STEP = 360 * 10**9
I64 = np.iinfo(np.int64)


def _day(t):
    return "1970-01-01" if t is None else str(np.datetime64(int(t), "ns").astype("datetime64[D]"))


def landed(rigs, ts, temps=None, days=None, origins=None, problems=None) -> pa.Table:
    n = len(rigs)
    cols = [
        pa.array(rigs, pa.string()),
        pa.array(ts, pa.int64()).cast(TS_TYPE),
        pa.array([50.0] * n if temps is None else temps, pa.float64()),
        pa.array([1000.0] * n, pa.float64()),
        pa.array([10.0] * n, pa.float64()),
        pa.array([""] * n if problems is None else problems, pa.string()),
        pa.array([f"o/{i}" for i in range(n)] if origins is None else origins, pa.string()),
        pa.array([_day(t) for t in ts] if days is None else days, pa.string()),
    ]
    return pa.Table.from_arrays(cols, schema=LANDED_SCHEMA)


def reference_clean(t: pa.Table, b: PhysicalBounds) -> tuple[list[int], dict[int, str]]:
    """(clean rows in (rig_id str, ts) order, {quarantined row: 'duplicate of <origin>' or the other kind})."""
    rows, ts = t.to_pylist(), pc.cast(t["ts"], pa.int64()).to_pylist()
    first, kept, bad = {}, [], {}
    for i, r in enumerate(rows):
        missing = not r["rig_id"] or ts[i] is None or any(r[x] is None for x in SIGNALS)
        if r["problems"] or missing or not all(getattr(b, x)[0] <= r[x] <= getattr(b, x)[1] for x in SIGNALS):
            bad[i] = "other"
        elif (r["rig_id"], ts[i]) in first:
            bad[i] = f"duplicate of {rows[first[r['rig_id'], ts[i]]]['origin'] or '<unknown origin>'}"
        else:
            first[r["rig_id"], ts[i]] = i
            kept.append(i)
    return sorted(kept, key=lambda i: (rows[i]["rig_id"], ts[i])), bad


def assert_clean_matches_reference(t: pa.Table, bounds: PhysicalBounds | None = None) -> None:
    good, bad = clean(t, bounds)
    kept, why = reference_clean(t, bounds or PhysicalBounds())
    assert good.num_rows + bad.num_rows == t.num_rows
    for name in CLEAN_SCHEMA.names:
        assert good[name].to_pylist() == t[name].take(pa.array(kept, pa.int64())).to_pylist(), name
    assert bad["origin"].to_pylist() == t["origin"].take(pa.array(sorted(why), pa.int64())).to_pylist()
    for i, reason in zip(sorted(why), bad["reason"].to_pylist(), strict=True):
        assert reason and reason != "?"
        assert reason == why[i] if why[i] != "other" else not reason.startswith("duplicate"), (i, reason, why[i])
    good.validate(full=True)
    bad.validate(full=True)


def _hostile_tables() -> dict[str, pa.Table]:
    rng = np.random.default_rng(5)
    n = 12_000
    tiny_rigs = [f"rig-{i:05d}" for i in rng.integers(0, 10_000, n)]
    return {
        "every_row_the_same_key": landed(["r"] * 50, [S] * 50),
        "all_rows_late": landed(["b", "a"] * 100, [S + 10**9 * (200 - i) for i in range(200)]),
        "ts_at_int64_extremes": landed(
            ["r", "s", "r", "s", "r", "r"],
            [I64.max, I64.min, I64.min, I64.max, I64.min + 1, -1],
            days=["2262-04-11", "1677-09-21", "1677-09-21", "2262-04-11", "1677-09-21", "1969-12-31"],
        ),
        "null_ts_and_rig": landed(["r", None, "", "r", "r"], [None, S, S, S, S]),
        "ten_thousand_tiny_rigs": landed(tiny_rigs, [S + int(k) * 10**9 for k in rng.integers(0, 3, n)]),
        "single_row": landed(["r"], [S]),
        "non_ascii_rig_ids": landed(["é", "z", "Z", "ä", "日本", "a", "\U0001f600", "ﬀ", "e\u0301", "é"], [S] * 10),
        "nan_and_inf": landed(["r"] * 5, [S, S, S + 1, S + 2, S + 2], temps=[np.nan, 5.0, np.inf, -np.inf, 6.0]),
        "day_not_the_utc_date": landed(["r"] * 3, [S + 2, S + 1, S], days=["2026-01-01", "2025-12-31", "2026-01-01"]),
        "day_of_other_lengths": landed(
            ["r"] * 4, [S + 3, S, S + 1, S + 2], days=["2026-01-01", "2026-1-1", "", "x" * 11]
        ),
        "a_broken_first_copy_and_a_valid_resend": landed(["r"] * 3, [S, S, S], temps=[900.0, 5.0, 6.0]),
    }


@pytest.mark.parametrize("name", list(_hostile_tables()))
def test_clean_equals_the_reference_and_a_multi_chunk_table_gives_the_same_result(name: str) -> None:
    t = _hostile_tables()[name]
    assert_clean_matches_reference(t)
    n = t.num_rows
    chunked = pa.concat_tables([t.slice(0, n // 3), t.slice(n // 3, 0), t.slice(n // 3, n // 3), t.slice(2 * (n // 3))])
    (g1, q1), (g2, q2) = clean(t), clean(chunked)
    assert g1.to_pandas().equals(g2.to_pandas()) and q1.to_pandas().equals(q2.to_pandas())
    assert_clean_matches_reference(t.slice(min(1, n - 1)))  # a slice: non-zero offsets in every buffer


def test_clean_fuzz_with_nulls_late_rows_duplicates_and_bad_days_equals_the_reference() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 90))
        rigs = [None if rng.random() < 0.05 else ["a", "b", "ä", "B", ""][k] for k in rng.integers(0, 5, n)]
        ts = [None if rng.random() < 0.05 else S + int(k) * 3600 * 10**9 for k in rng.integers(0, 8, n)]
        temps = [None if rng.random() < 0.05 else float(v) for v in rng.choice([50.0, 60.0, np.nan, 400.0], n)]
        days = [_day(x) if rng.random() < 0.95 else "2030-01-01" for x in ts]
        problems = ["" if rng.random() < 0.9 else "bad" for _ in range(n)]
        assert_clean_matches_reference(landed(rigs, ts, temps, days, problems=problems))


def test_a_duplicate_of_a_row_landed_without_origin_still_says_duplicate() -> None:
    """The old code named the first copy '<unknown origin>'; the kernel version said only '?'."""
    _, bad = clean(landed(["r", "r"], [S, S], origins=[None, "o/1"]))
    assert bad["reason"].to_pylist() == ["duplicate of <unknown origin>"]


def test_order_by_rig_ts_is_the_stable_lexsort_for_late_rows_ties_and_int64_extremes() -> None:
    rng = np.random.default_rng(7)
    for it in range(200):
        n = int(rng.integers(1, 2000))
        codes = rng.integers(0, int(rng.integers(1, 20)), n).astype(np.int32)
        ts = np.sort(rng.integers(0, 1000, n))
        ts[rng.random(n) < (0.02, 0.11, 0.6)[it % 3]] -= 50  # few late rows (merge) / many (sort whole)
        if it % 4 == 0:
            ts = rng.choice([I64.min, I64.max, 0, -1, I64.min + 1, I64.max - 1], n)
        keep = rng.random(n) < 0.9
        idx = np.flatnonzero(keep)
        expected = idx[np.lexsort((idx, ts[idx], codes[idx]))]
        order, c, t = order_by_rig_ts(codes, ts.astype(np.int64), keep)
        assert (
            np.array_equal(order, expected) and np.array_equal(c, codes[expected]) and np.array_equal(t, ts[expected])
        )


def _clean_table(rigs, ts, temps) -> pa.Table:
    n = len(rigs)
    temps = np.asarray(temps, dtype=float)
    return pa.Table.from_arrays(
        [
            pa.array(rigs),
            pa.array(ts, pa.int64()).cast(TS_TYPE),
            pa.array(temps),
            pa.array(temps + 950.0),
            pa.array(np.arange(n, dtype=float)),
            pa.array([f"o/{i}" for i in range(n)]),
            pa.array([_day(x) for x in ts]),
        ],
        schema=CLEAN_SCHEMA,
    )


def _reference_z(t: pa.Table, window: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    df = t.to_pandas().assign(_ts=pc.cast(t["ts"], pa.int64()).to_numpy())
    df = df.sort_values(["rig_id", "_ts"], kind="stable")
    bounds = _segments(df["rig_id"].map({r: i for i, r in enumerate(sorted(set(df["rig_id"])))}).to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zt = robust_z_reference(df["temperature_c"].to_numpy(), bounds, window, 0.5)
        zp = robust_z_reference(df["pressure_hpa"].to_numpy(), bounds, window, 1.5)
    return df["origin"].tolist(), zt, zp


@pytest.mark.parametrize("window", [2, 3, 4, 10, 11, 12, 21])
def test_score_of_unsorted_rigs_of_1_to_20_readings_equals_the_scipy_reference(window: int) -> None:
    rng = np.random.default_rng(window)
    for it in range(12):
        lens = rng.integers(1, 21, rng.integers(1, 6))
        rigs = [f"r{r}" for r, m in enumerate(lens) for _ in range(m)]
        ts = [S + k * STEP for m in lens for k in range(m)]
        kinds = (  # constant (MAD 0), noise, ties (NaN is left out: SciPy's own NaN medians are not reproducible)
            lambda m: [50.0] * m,
            lambda m: np.round(50 + rng.normal(0, 1, m), 1),
            lambda m: rng.integers(0, 3, m) * 1.0,
        )
        temps = np.concatenate([kinds[it % 3](m) for m in lens])
        perm = rng.permutation(len(rigs)) if it % 2 else np.arange(len(rigs))
        t = _clean_table([rigs[i] for i in perm], [ts[i] for i in perm], temps[perm])
        out = score(t, window=window)
        origin, zt, zp = _reference_z(t, window)
        assert out["origin"].to_pylist() == origin
        assert np.array_equal(out["temperature_zscore"].to_numpy(), zt)
        assert np.array_equal(out["pressure_zscore"].to_numpy(), zp)


@pytest.mark.parametrize(
    "x", [[52.0, np.inf, 51.0], [50.0] * 12 + [-np.inf] + [50.0] * 5, [2.0, 0, 0, 1, -np.inf, -np.inf, 0, 2]]
)
def test_robust_z_with_infinite_readings_equals_the_scipy_reference(x: list[float]) -> None:
    """x - median is inf - inf = NaN inside the kernel even when x holds no NaN: it must fall back too."""
    x = np.asarray(x, dtype=float)
    bounds = np.array([0, x.size])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for window in (3, 11):
            assert np.array_equal(
                robust_z(x, bounds, window, 0.5), robust_z_reference(x, bounds, window, 0.5), equal_nan=True
            )


def test_score_with_shuffled_multi_chunk_context_equals_both_days_scored_together() -> None:
    rng = np.random.default_rng(2)
    temps = np.round(50 + rng.normal(0, 1, 80), 1)
    full = _clean_table(["a"] * 40 + ["b"] * 40, [S + k * STEP for k in range(40)] * 2, temps)
    cut = pc.greater_equal(pc.cast(full["ts"], pa.int64()), S + 20 * STEP)
    day2, ctx = full.filter(cut), full.filter(pc.invert(cut))
    whole = score(full).filter(cut)
    day2 = pa.concat_tables([day2.slice(0, 7), day2.slice(7)]).take(pa.array(rng.permutation(day2.num_rows)))
    part = score(day2, context=ctx.take(pa.array(rng.permutation(ctx.num_rows))))
    assert part["origin"].to_pylist() == whole["origin"].to_pylist()
    assert np.array_equal(part["temperature_zscore"].to_numpy(), whole["temperature_zscore"].to_numpy())


def test_kpis_of_a_multi_chunk_table_with_resets_and_single_row_runs_equal_a_groupby() -> None:
    rng = np.random.default_rng(4)
    rigs, ts, ups = [], [], []
    for r, m in enumerate([1, 3, 70, 40]):
        rigs += [f"r{r}"] * m
        ts += [S - 30 * STEP + k * STEP * 8 for k in range(m)]  # a rig over several days
        u = np.cumsum(rng.uniform(0, 0.1, m))
        ups += list(np.where(np.arange(m) >= m // 2, u - u[m // 2], u) if m > 3 else u)  # a counter reset
    t = _clean_table(rigs, ts, np.round(50 + rng.normal(0, 3, len(rigs)), 1)).set_column(4, "uptime_h", pa.array(ups))
    scored = score(t)
    n = scored.num_rows
    chunked = pa.concat_tables([scored.slice(0, 1), scored.slice(1, n // 2), scored.slice(n // 2 + 1)])
    got = kpis_by_day(chunked)
    assert got.to_pandas().equals(kpis_by_day(scored).to_pandas())
    df = scored.to_pandas()
    df["alert"] = df["temperature_alert"] | df["pressure_alert"]
    rows = []
    for (rig, day), g in df.groupby(["rig_id", "day"], sort=True):
        step = np.diff(g["uptime_h"].to_numpy())
        rows.append(
            (
                day,
                rig,
                len(g),
                g["temperature_c"].mean(),
                g["pressure_hpa"].min(),
                g["pressure_hpa"].max(),
                int(g["alert"].sum()),
                step[step > 0].sum(),
                g["ts"].min(),
                g["ts"].max(),
            )
        )
    exp = got.to_pandas()
    assert len(rows) == len(exp)
    for row, (_, e) in zip(rows, exp.iterrows(), strict=True):
        assert (row[:3], row[4:7], row[8:]) == (tuple(e.iloc[:3]), tuple(e.iloc[4:7]), tuple(e.iloc[8:]))
        assert row[3] == pytest.approx(e.iloc[3], rel=1e-14) and row[7] == pytest.approx(e.iloc[7], rel=1e-12)


def test_clean_and_score_on_four_threads_equal_sequential_calls() -> None:
    rng = np.random.default_rng(3)
    tables = []
    for _ in range(4):
        n = 3000
        ts = [S + int(k) * STEP for k in rng.integers(0, 600, n)]
        tables.append(
            landed([f"rig-{k}" for k in rng.integers(0, 6, n)], ts, list(np.round(50 + rng.normal(0, 2, n), 1)))
        )

    def job(t: pa.Table):
        good, bad = clean(t)
        return good, bad, score(good.take(pa.array(np.arange(good.num_rows)[::-1])))  # (reversed: score re-sorts)

    sequential = [[x.to_pandas() for x in job(t)] for t in tables]
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(job, tables * 2))
        for want, got in zip(sequential * 2, concurrent, strict=True):
            assert all(w.equals(g.to_pandas()) for w, g in zip(want, got, strict=True))
