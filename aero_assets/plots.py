"""Small PNG plots embedded in asset metadata as Markdown data URIs.

Kept small (~20 KB: few points, low dpi) because they live in Dagster's event log.
matplotlib is imported inside the function so loading the Definitions stays fast.
"""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, x.size // max_points)
    return x[::step], y[::step]


def png_markdown(fig) -> dg.MetadataValue:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")


def time_series_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> dg.MetadataValue:
    """One panel per series (x in seconds), sharing the time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    fig, axes = plt.subplots(n, 1, figsize=(6.4, 1.3 * n + 0.6), sharex=True, squeeze=False)
    for ax, (name, (x, y)) in zip(axes[:, 0], series.items(), strict=False):
        xs, ys = downsample(x, y)
        ax.plot(xs, ys, lw=0.7)
        ax.set_ylabel(name, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time since run start [s]", fontsize=7)
    axes[0, 0].set_title(title, fontsize=8)
    return png_markdown(fig)
