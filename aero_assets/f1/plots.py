"""Pictures of a session for asset metadata: track map by speed, speed trace with delta time, g-g diagram.

Small PNGs (see `aero_assets.plots`), matplotlib imported inside each function so loading the
Definitions stays fast. Inputs are the rows of one lap each (`Telemetry.take`-d arrays as a dict).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aero_assets.plots import png_markdown


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def delta_time(lap: dict[str, np.ndarray], ref: dict[str, np.ndarray], grid_m: float = 5.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """(distance, time of `lap` minus time of `ref` at that distance), positive = `lap` is behind."""
    hi = min(float(lap["distance_m"].max()), float(ref["distance_m"].max()))
    d = np.arange(0.0, hi, grid_m)

    def t_at(x):
        t = (x["ts"] - x["ts"][0]) / 1e9
        dist = np.maximum.accumulate(x["distance_m"].astype(np.float64))  # interp needs a rising x
        return np.interp(d, dist, t)

    return d, t_at(lap) - t_at(ref)


def track_map(lap: dict[str, np.ndarray], title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    step = max(1, len(lap["x_m"]) // 1500)
    sc = ax.scatter(lap["x_m"][::step], lap["y_m"][::step], c=lap["speed_kph"][::step], s=3, cmap="plasma")
    fig.colorbar(sc, ax=ax, label="speed [km/h]", shrink=0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return png_markdown(fig)


def speed_trace(lap: dict[str, np.ndarray], ref: dict[str, np.ndarray] | None, title: str, lap_label: str,
                ref_label: str):
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 3.6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    step = max(1, len(lap["distance_m"]) // 2000)
    axes[0].plot(lap["distance_m"][::step], lap["speed_kph"][::step], lw=0.8, label=lap_label)
    if ref is not None:
        axes[0].plot(ref["distance_m"][::step], ref["speed_kph"][::step], lw=0.8, label=ref_label, alpha=0.8)
        d, dt = delta_time(lap, ref)
        axes[1].plot(d, dt, lw=0.8, color="C3")
        axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel(f"delta [s]\n(+ = behind {ref_label})" if ref is not None else "delta [s]", fontsize=7)
    axes[0].set_ylabel("speed [km/h]", fontsize=7)
    axes[1].set_xlabel("lap distance [m]", fontsize=7)
    axes[0].legend(fontsize=6)
    for ax in axes:
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=8)
    return png_markdown(fig)


def gg_diagram(g_lat: np.ndarray, g_long: np.ndarray, title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    step = max(1, len(g_lat) // 4000)
    ax.scatter(g_lat[::step], g_long[::step], s=1, alpha=0.4)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("lateral [g]", fontsize=7)
    ax.set_ylabel("longitudinal [g]", fontsize=7)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=8)
    return png_markdown(fig)


def sector_table_md(summaries: pd.DataFrame, limit: int = 30) -> str:
    """Markdown table of lap and sector times; the best of each column (out-laps aside) in bold."""
    if summaries.empty:
        return "No completed laps yet."
    cols = ["lap_time_s", "sector1_s", "sector2_s", "sector3_s"]
    flying = summaries[~summaries["out_lap"]] if "out_lap" in summaries else summaries
    best = {c: flying[c].min() for c in cols}
    rows = ["| lap | lap time | S1 | S2 | S3 | vmax km/h | fuel kg | flags |", "|---|---|---|---|---|---|---|---|"]

    def cell(r, c):
        v = r[c]
        if not np.isfinite(v):
            return "-"
        text = f"{int(v // 60)}:{v % 60:06.3f}" if c == "lap_time_s" else f"{v:.3f}"
        return f"**{text}**" if v == best[c] else text

    for _, r in summaries.tail(limit).iterrows():
        rows.append(f"| {int(r['lap'])} | " + " | ".join(cell(r, c) for c in cols)
                    + f" | {r['max_speed_kph']:.1f} | {r['fuel_used_kg']:.2f} | {r['flags'] or ''} |")
    return "\n".join(rows)
