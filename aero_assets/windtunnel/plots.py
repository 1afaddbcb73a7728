"""Wind-tunnel plots for asset metadata: QC flags on time series, Cp distribution, comparison deltas."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa

from aero_assets.plots import downsample, png_markdown


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def qc_flags_plot(panels: list[dict], title: str) -> dg.MetadataValue:
    """Each panel: name, t, v, status, flagged (bool mask), gaps [(a, b)] in seconds."""
    plt = _pyplot()
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 1, figsize=(6.4, 1.25 * n + 0.6), sharex=True, squeeze=False)
    colors = {"pass": "tab:blue", "warn": "tab:orange", "fail": "tab:red"}
    for ax, p in zip(axes[:, 0], panels, strict=False):
        t, v = downsample(p["t"], p["v"])
        ax.plot(t, v, lw=0.6, color=colors.get(p["status"], "tab:blue"))
        if p["flagged"].any():
            ax.plot(p["t"][p["flagged"]], p["v"][p["flagged"]], "x", color="black", ms=4, label="flagged")
        for a, b in p["gaps"]:
            ax.axvspan(a, b, color="grey", alpha=0.3)
        ax.set_ylabel(f"{p['name']}\n{p['status']}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time since run start [s]  (x: spikes / out of range, grey: gaps)", fontsize=7)
    axes[0, 0].set_title(title, fontsize=8)
    return png_markdown(fig)


def cp_plot(metrics: pa.Table, title: str) -> dg.MetadataValue:
    plt = _pyplot()
    rows = [r for r in metrics.to_pylist() if r["kind"] == "cp" and r["value"] is not None]
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for surface, style in (("suction", "o-"), ("pressure", "s-")):
        pts = sorted((r["x_c"], r["value"], r["std_error"] or 0.0) for r in rows if r["surface"] == surface)
        if pts:
            x, y, e = map(np.array, zip(*pts, strict=True))
            ax.errorbar(x, y, yerr=1.96 * e, fmt=style, ms=3, lw=1, capsize=2, label=f"{surface} side")
    ax.invert_yaxis()  # aerodynamicists' convention: suction up
    ax.set_xlabel("x/c", fontsize=8)
    ax.set_ylabel("Cp", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return png_markdown(fig)


def deltas_plot(comparison: pa.Table, title: str) -> dg.MetadataValue:
    plt = _pyplot()
    rows = [r for r in comparison.to_pylist() if r["kind"] == "coefficient" and r["delta_pct"] is not None]
    fig, ax = plt.subplots(figsize=(5.2, 0.28 * max(3, len(rows)) + 0.8))
    names = [r["metric"] for r in rows]
    vals = [r["delta_pct"] for r in rows]
    colors = ["tab:red" if r["significant"] else "tab:grey" for r in rows]
    ax.barh(names, vals, color=colors)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("delta vs baseline [%]  (red: significant, Welch p < 0.05)", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    return png_markdown(fig)
