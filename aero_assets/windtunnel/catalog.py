"""The wind-tunnel channel catalog (72 channels, seed 000), loaded from `channels.csv`.

The catalog is data so that an instrumentation change is a reviewed CSV edit, not a code change;
QC reads nominal rates and plausible ranges from it, the simulator reads the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import pandas as pd

# The tunnel model's geometry: the simulator builds forces with it, the metrics normalise by it.
A_REF = 1.0  # m^2, reference area
WHEELBASE = 1.8  # m, at model scale

CATEGORIES = ("force_balance", "component_loads", "pressure_taps", "velocity_flow", "environment", "position")


@dataclass(frozen=True)
class Catalog:
    frame: pd.DataFrame  # one row per channel, indexed by channel name

    @property
    def channels(self) -> list[str]:
        return list(self.frame.index)

    @property
    def samples_per_second(self) -> int:
        return int(self.frame["rate_hz"].sum())

    def rate(self, channel: str) -> int:
        return int(self.frame.at[channel, "rate_hz"])

    def in_category(self, category: str) -> list[str]:
        return list(self.frame.index[self.frame["category"] == category])


@cache
def load_catalog() -> Catalog:
    with files("aero_assets.windtunnel").joinpath("channels.csv").open() as fh:
        df = pd.read_csv(fh, dtype={"channel": str, "category": str, "unit": str, "surface": str})
    problems = []
    if df["channel"].duplicated().any():
        problems.append(f"duplicate channels: {sorted(df.loc[df['channel'].duplicated(), 'channel'])}")
    if not set(df["category"]) <= set(CATEGORIES):
        problems.append(f"unknown categories: {sorted(set(df['category']) - set(CATEGORIES))}")
    if (df["min"] >= df["max"]).any():
        problems.append(f"min >= max for {sorted(df.loc[df['min'] >= df['max'], 'channel'])}")
    if (df["rate_hz"] <= 0).any():
        problems.append("rate_hz must be positive")
    if problems:
        raise ValueError("aero_assets/windtunnel/channels.csv is invalid: " + "; ".join(problems))
    return Catalog(df.set_index("channel"))
