"""Aerodynamic metrics of a processed run, with uncertainty from the steady hold.

Coefficients use the balance and flow channels: CL = -Fz/(q A) (downforce positive), CD = Fx/(q A),
L/D = CL/CD, CY, pitch and yaw moment coefficients over q A wheelbase, aero balance = front share
of the component downforce; Cp per tap = p/q, with the suction peak and the sectional lift
coefficient integrated over the chord. Per-channel statistics cover every channel.

Uncertainty: the steady hold is cut into `n_blocks` equal blocks; each metric is computed per
block, and its standard error is the spread of the block values / sqrt(n). Blocks longer than the
flow's correlation time make the block values close to independent. The block values are kept,
so run comparisons can test differences (Welch's t-test) without re-reading the runs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from aero_assets.windtunnel.catalog import A_REF, WHEELBASE, Catalog
from aero_assets.windtunnel.processing import ProcessedRun
from aero_assets.windtunnel.series import steady_window

PCT_FLOOR = 1e-3  # |baseline| below which a percent delta is not reported
FRONT = ("CL_FW_L", "CL_FW_R", "CL_FLOOR_F")
REAR = ("CL_RW_L", "CL_RW_R", "CL_FLOOR_R", "CL_DIFF", "CL_BEAM")
SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("name", pa.string()), ("unit", pa.string()),
    ("value", pa.float64()), ("std_error", pa.float64()), ("ci95_low", pa.float64()), ("ci95_high", pa.float64()),
    ("n_blocks", pa.int32()), ("blocks", pa.list_(pa.float64())),
    ("std", pa.float64()), ("min", pa.float64()), ("max", pa.float64()), ("p05", pa.float64()), ("p95", pa.float64()),
    ("x_c", pa.float64()), ("surface", pa.string()),
])


def _nan_blocks(values: np.ndarray, n_blocks: int) -> np.ndarray:
    """(channels, time) -> (channels, n_blocks) block means, ignoring NaN (gaps)."""
    n = values.shape[1] // n_blocks * n_blocks
    with warnings.catch_warnings():  # all-NaN blocks (a channel in a long gap) give NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values[:, :n].reshape(values.shape[0], n_blocks, -1), axis=2)


def _row(run_id, kind, name, unit, blocks, **extra) -> dict:
    from scipy import stats  # scipy.stats costs 0.7 s to import: not at Definitions load

    b = np.asarray(blocks, dtype=np.float64)
    ok = np.isfinite(b)
    n = int(ok.sum())
    value = float(b[ok].mean()) if n else None
    se = float(b[ok].std(ddof=1) / np.sqrt(n)) if n > 1 else None
    half = float(stats.t.ppf(0.975, n - 1) * se) if se is not None else None
    return {
        "run_id": run_id, "kind": kind, "name": name, "unit": unit, "value": value, "std_error": se,
        "ci95_low": None if half is None else value - half, "ci95_high": None if half is None else value + half,
        "n_blocks": n, "blocks": [float(x) for x in b], **extra,
    }


def compute_metrics(run_id: str, proc: ProcessedRun, catalog: Catalog, n_blocks: int = 10) -> tuple[pa.Table, dict]:
    """Metrics table (SCHEMA) and a summary (steady window, headline values) for metadata."""
    fr = catalog.frame
    series = proc.as_series()
    lo, hi = (float(fr.at["FLOW_V", "min"]), float(fr.at["FLOW_V", "max"])) if "FLOW_V" in fr.index else (None, None)
    a, b, how = steady_window(series, lo, hi)
    i0, i1 = int(np.ceil(a * proc.rate_hz)), int(np.floor(b * proc.rate_hz))
    window = proc.values[:, i0:i1]
    n_blocks = max(2, min(n_blocks, window.shape[1] // 10)) if window.shape[1] >= 20 else 0
    idx = {c: i for i, c in enumerate(proc.channels)}
    rows: list[dict] = []
    if n_blocks == 0:
        return pa.Table.from_pylist([], schema=SCHEMA), {"steady_window_s": [a, b], "steady_window": how,
                                                          "error": "steady hold too short for metrics"}
    blocks = _nan_blocks(window, n_blocks)

    def ch(name: str) -> np.ndarray:
        return blocks[idx[name]] if name in idx else np.full(n_blocks, np.nan)

    with np.errstate(divide="ignore", invalid="ignore"):
        qa = ch("FLOW_Q") * A_REF
        front = sum(ch(c) for c in FRONT)
        rear = sum(ch(c) for c in REAR)
        coeffs = {
            "CL": (-ch("FB_FZ") / qa, "-"),
            "CD": (ch("FB_FX") / qa, "-"),
            "L_over_D": (-ch("FB_FZ") / ch("FB_FX"), "-"),
            "CY": (ch("FB_FY") / qa, "-"),
            "CMy_pitch": (ch("FB_MY") / (qa * WHEELBASE), "-"),
            "CMz_yaw": (ch("FB_MZ") / (qa * WHEELBASE), "-"),
            "aero_balance_front": (front / (front + rear), "fraction"),
            "q": (ch("FLOW_Q"), "Pa"),
            "velocity": (ch("FLOW_V"), "m/s"),
            "air_density": (ch("ENV_RHO"), "kg/m^3"),
        }
        taps = fr[fr["category"] == "pressure_taps"].sort_values(["surface", "x_c"])
        cp = {t: ch(t) / ch("FLOW_Q") for t in taps.index}
    for name, (vals, unit) in coeffs.items():
        rows.append(_row(run_id, "coefficient", name, unit, vals))
    if len(taps):
        suction = taps[taps["surface"] == "suction"]
        pressure = taps[taps["surface"] == "pressure"]
        cps = np.vstack([cp[t] for t in suction.index]) if len(suction) else np.full((1, n_blocks), np.nan)
        cpp = np.vstack([cp[t] for t in pressure.index]) if len(pressure) else np.full((1, n_blocks), np.nan)
        with warnings.catch_warnings():  # a tap with no data (all NaN) must not blank the summary
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append(_row(run_id, "coefficient", "cp_min", "-", np.nanmin(cps, axis=0)))
        if len(suction) and len(pressure) and np.array_equal(suction["x_c"].to_numpy(), pressure["x_c"].to_numpy()):
            ok = np.isfinite(cps).all(axis=1) & np.isfinite(cpp).all(axis=1)  # chord stations with both taps
            if ok.sum() >= 3:
                cl_sec = np.trapezoid((cpp - cps)[ok], suction["x_c"].to_numpy()[ok], axis=0)
                rows.append(_row(run_id, "coefficient", "cl_section", "-", cl_sec))
        for t, row in taps.iterrows():
            rows.append(_row(run_id, "cp", t, "-", cp[t], x_c=float(row["x_c"]), surface=str(row["surface"])))
    with warnings.catch_warnings():  # all-NaN blocks (a channel in a long gap) give NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        std, vmin, vmax = np.nanstd(window, axis=1), np.nanmin(window, axis=1), np.nanmax(window, axis=1)
        p05, p95 = np.nanpercentile(window, [5, 95], axis=1)
    for name, i in idx.items():
        unit = str(fr.at[name, "unit"]) if name in fr.index else ""
        rows.append(_row(run_id, "channel", name, unit, blocks[i], std=float(std[i]), min=float(vmin[i]),
                         max=float(vmax[i]), p05=float(p05[i]), p95=float(p95[i])))
    table = pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA)
    table = table.set_column(table.schema.get_field_index("value"), "value",
                             pa.array(table["value"].to_numpy(zero_copy_only=False), from_pandas=True))
    headline = {r["name"]: r["value"] for r in rows if r["kind"] == "coefficient"}
    return table, {"steady_window_s": [round(a, 3), round(b, 3)], "steady_window": how, "n_blocks": n_blocks,
                   "headline": headline}


def compare_runs(variant: pa.Table, baseline: pa.Table, alpha: float = 0.05) -> pa.Table:
    """Deltas of coefficients and tap Cp, variant minus baseline, with Welch's t-test on block values."""
    from scipy import stats

    keep = ("coefficient", "cp")

    def by_name(t: pa.Table) -> dict[tuple[str, str], dict]:
        return {(r["kind"], r["name"]): r for r in t.to_pylist() if r["kind"] in keep}

    v, b = by_name(variant), by_name(baseline)
    names = [k for k in v if k in b]
    rows = []
    v_id = variant["run_id"][0].as_py() if variant.num_rows else None
    is_baseline = v_id is not None and baseline.num_rows > 0 and v_id == baseline["run_id"][0].as_py()
    for kind, name in names:
        rv, rb = v[(kind, name)], b[(kind, name)]
        xv = np.asarray(rv["blocks"], float)
        xb = np.asarray(rb["blocks"], float)
        xv, xb = xv[np.isfinite(xv)], xb[np.isfinite(xb)]
        if is_baseline or xv.size < 2 or xb.size < 2:
            t_stat, p = (0.0, 1.0) if is_baseline else (None, None)
        else:
            res = stats.ttest_ind(xv, xb, equal_var=False)
            t_stat, p = float(res.statistic), float(res.pvalue)
            if not np.isfinite(p):  # identical constant blocks
                t_stat, p = 0.0, 1.0
        val_v, val_b = rv["value"], rb["value"]
        delta = None if val_v is None or val_b is None else val_v - val_b
        rows.append({
            "run_id": rv["run_id"], "baseline_run_id": rb["run_id"], "is_baseline": is_baseline,
            "kind": kind, "metric": name, "baseline": val_b, "variant": val_v, "delta": delta,
            # a percentage of a near-zero baseline (side force at zero yaw) says nothing: leave it empty
            "delta_pct": None if delta is None or abs(val_b) < PCT_FLOOR else 100.0 * delta / abs(val_b),
            "t_stat": t_stat, "p_value": p, "significant": bool(p is not None and p < alpha and not is_baseline),
        })
    return pa.Table.from_pylist(rows, schema=COMPARISON_SCHEMA)


COMPARISON_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("baseline_run_id", pa.string()), ("is_baseline", pa.bool_()), ("kind", pa.string()),
    ("metric", pa.string()), ("baseline", pa.float64()), ("variant", pa.float64()), ("delta", pa.float64()),
    ("delta_pct", pa.float64()), ("t_stat", pa.float64()), ("p_value", pa.float64()), ("significant", pa.bool_()),
])
