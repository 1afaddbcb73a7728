"""`aero bench qc` and `aero bench windtunnel`.

qc: QC against the simulator's injected ground truth over many seeds and fault rates, scored at
the (channel, fault kind) level.

windtunnel: QC + processing + metrics of one 60 s, 72-channel run (2.33 M samples), read from a
Parquet file as the assets do, pinned to one CPU core. The baseline is a plain pandas version of
the same QC (groupby per channel, Series operations), timed in the same process on the same data;
its detections are compared with Aero's so the speed-up is for the same answers.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from aero_assets.simulators.windtunnel import random_config, simulate_run
from aero_assets.windtunnel.catalog import Catalog, load_catalog
from aero_assets.windtunnel.metrics import compute_metrics
from aero_assets.windtunnel.processing import process_run
from aero_assets.windtunnel.qc import (
    DRIFT_BLOCKS,
    DRIFT_MIN_RAMP,
    QCThresholds,
    expected_kind,
    run_qc,
    score,
    shape_drift,
)
from aero_assets.windtunnel.series import read_series, series_from_table, steady_window
from resources.lake import write_parquet_atomic


def _sorted(table):
    return table.sort_by([("channel", "ascending"), ("ts", "ascending")])


def bench_qc(runs: int = 40, duration_s: float = 10.0, fault_rates: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)) -> dict:
    catalog = load_catalog()
    detected, truth = set(), set()
    per_kind_fn, per_kind_fp = Counter(), Counter()
    for i in tqdm(range(runs), desc="qc bench", unit="run", file=sys.stderr):
        rate = fault_rates[i % len(fault_rates)]
        rng = np.random.default_rng(i)
        run = simulate_run(f"bench-{i}", duration_s=duration_s, started_ns=0, config=random_config(rng),
                           fault_rate=rate, seed=1000 + i)
        qc = run_qc(series_from_table(_sorted(run.table)), catalog)
        d = {(i, c, k) for c, k in qc.detected_faults()}
        t = {(i, f.channel, expected_kind(f.kind)) for f in run.faults}
        per_kind_fp.update(k for _, _, k in d - t)  # QC's kind
        per_kind_fn.update(f.kind for f in run.faults if (i, f.channel, expected_kind(f.kind)) not in d)  # simulator's
        detected |= d
        truth |= t
    s = score(detected, truth)
    return {"precision": round(s["precision"], 4), "recall": round(s["recall"], 4), "runs": runs,
            "faults": len(truth), "false_positives": dict(per_kind_fp), "false_negatives": dict(per_kind_fn),
            "duration_s": duration_s, "fault_rates": list(fault_rates)}


def _pandas_shape_drift(y: pd.Series) -> float:
    """The block-shape drift statistic of qc.drift_scores, with pandas doing the per-sample work."""
    n = len(y)
    k = min(DRIFT_BLOCKS, n // 4)
    if k < 2 * DRIFT_MIN_RAMP + 4:
        return 0.0
    y = (y - y.mean()).iloc[: n - n % k]
    block = pd.Series(np.arange(len(y)) // (n // k), index=y.index)
    med = y.groupby(block).median()
    within = 1.4826 * (y - block.map(med)).abs().median()
    return shape_drift(med.to_numpy(), float(within))  # the fit over 32 medians is not per-sample work


def pandas_qc(df: pd.DataFrame, catalog: Catalog, th: QCThresholds, window: tuple[float, float]) -> dict:
    """The same QC written the plain pandas way: one groupby, Series operations per channel."""
    out = {}
    start = df["ts"].min()
    span = (df["ts"].max() - start).total_seconds()
    for ch, g in df.groupby("channel", sort=True):
        x = g["value"].reset_index(drop=True)
        t = (g["ts"] - start).dt.total_seconds().reset_index(drop=True)
        rate = float(catalog.frame.at[ch, "rate_hz"])
        period = 1 / rate
        expected = int(np.floor(span * rate + 1e-6)) + 1
        dt = t.diff()
        gaps = int((dt > th.gap_factor * period).sum())
        missing = max(0.0, 1 - len(x) / expected)
        stat = (x - (x.shift(1) + x.shift(-1)) / 2).abs()
        med = stat.median()
        mad = 1.4826 * (stat - med).abs().median()
        isolated = (x.shift(-1) - x.shift(1)).abs() < stat
        lo, hi = catalog.frame.at[ch, "min"], catalog.frame.at[ch, "max"]
        outside = (x < lo) | (x > hi)
        spikes = ((stat - med) / max(mad, 1e-12) > th.spike_z) & isolated & ~(outside.shift(1, fill_value=False)
                                                                            & outside.shift(-1, fill_value=False))
        same = x.diff().eq(0)
        run_id = (~same).cumsum()
        run_len = same.groupby(run_id).transform("sum") + 1  # length of the equal-value run of each sample
        flat = int(run_len.max()) if len(run_len) else 1
        flat_min = max(th.flat_min_samples, th.flat_min_seconds * rate)
        stuck = flat >= flat_min
        oor = outside & ~spikes
        sel = (t >= window[0]) & (t <= window[1]) & ~spikes & ~oor & np.isfinite(x)
        if stuck:
            sel &= run_len < flat_min
        drift = False
        if sel.sum() > 20:
            slope, icpt = np.polyfit(t[sel], x[sel], 1)
            resid = x[sel] - (slope * t[sel] + icpt)
            linear = abs(slope) * (window[1] - window[0]) / resid.std(ddof=2)
            linear_limit, shape_limit = th.drift_limits(window[1] - window[0])
            drift = linear > linear_limit or _pandas_shape_drift(x[sel].reset_index(drop=True)) > shape_limit
        out[ch] = {
            "spike": bool(spikes.sum() > 0),
            "dropout": bool(missing > th.missing_fail_fraction and gaps > 0),
            "flatline": bool(stuck),
            "out_of_range": bool(oor.sum() >= th.out_of_range_min_samples),
            "drift": bool(drift),
        }
    return out


def _pin_one_core() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import pyarrow as pa

        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
        return "pinned to one core"
    except (AttributeError, OSError):  # not Linux
        return "not pinned"


def bench_windtunnel(duration_s: float = 60.0, repeats: int = 3, fault_rate: float = 0.05) -> dict:
    pinned = _pin_one_core()
    catalog = load_catalog()
    run = simulate_run("bench-60s", duration_s=duration_s, started_ns=0, fault_rate=fault_rate, seed=42)
    th = QCThresholds()
    with tempfile.TemporaryDirectory(prefix="aero-bench-") as tmp:
        path = Path(tmp) / "raw.parquet"
        write_parquet_atomic(_sorted(run.table), path)
        stages = {"read": [], "qc": [], "processing": [], "metrics": []}
        bar = tqdm(total=repeats * 2, desc="windtunnel bench", unit="pass", file=sys.stderr)
        for _ in range(repeats):
            t0 = time.perf_counter()
            series = read_series(path)
            t1 = time.perf_counter()
            qc = run_qc(series, catalog, th)
            t2 = time.perf_counter()
            proc = process_run(series, catalog)
            t3 = time.perf_counter()
            compute_metrics(run.run_id, proc, catalog)
            t4 = time.perf_counter()
            for k, a, b in (("read", t0, t1), ("qc", t1, t2), ("processing", t2, t3), ("metrics", t3, t4)):
                stages[k].append(b - a)
            bar.update()
        base_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            df = pd.read_parquet(path)
            a, b, _ = steady_window(series, -2.0, 80.0)
            base = pandas_qc(df, catalog, th, (a, b))
            base_times.append(time.perf_counter() - t0)
            bar.update()
        bar.close()
    best = {k: min(v) for k, v in stages.items()}
    aero_s = sum(best.values())
    ours = {(c, k) for c, k in qc.detected_faults()}
    theirs = {(c, k) for c, flags in base.items() for k, hit in flags.items() if hit}
    return {
        "realtime_factor": round(duration_s / aero_s, 1),
        "baseline_realtime_factor": round(duration_s / min(base_times), 1),
        "samples": run.sample_count,
        "seconds": round(aero_s, 3),
        "stage_seconds": {k: round(v, 4) for k, v in best.items()},
        "baseline_qc_seconds": round(min(base_times), 3),
        "qc_speedup_vs_baseline": round(min(base_times) / (best["read"] + best["qc"]), 1),
        "baseline_agrees": ours == theirs,
        "faults_injected": len(run.faults),
        "cpu": pinned,
    }
