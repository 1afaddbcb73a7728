"""Measure the Page-Hinkley detector on simulated stations: false alarms when calm, delay after a heatwave.

Pure and deterministic (seeded simulations, no files), so the numbers behind the
`DriftThresholds` defaults can be re-measured at any time::

    python -m aero_assets.forecast.calibration --seeds 10
    python -m aero_assets.forecast.calibration --seeds 10 --delta 0.5 --lambda 30

The error stream is the seasonal-naive forecaster's (value - same hour yesterday), a fair proxy for
a model's residuals: a model that is better in calm weather only makes a level jump stand out more.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
import pandas as pd

from aero_assets.forecast.baselines import seasonal_naive_errors
from aero_assets.forecast.dataset import NS_PER_HOUR, hourly, station_series
from aero_assets.forecast.drift import DriftThresholds, page_hinkley
from aero_assets.forecast.simulate import simulate_station

CALIBRATION_START_NS = pd.Timestamp("2026-03-01").value  # spring: the seasonal trend is at its steepest


def run_detector(readings: pd.DataFrame, station: str, thresholds: DriftThresholds) -> int | None:
    """Timestamp (ns) of the first Page-Hinkley alarm on |seasonal-naive errors| of a station, or None."""
    errors = seasonal_naive_errors(station_series(hourly(readings), station)).dropna()
    alarm = page_hinkley(np.abs(errors.to_numpy()), thresholds.ph_delta, thresholds.ph_lambda)
    return None if alarm is None else int(errors.index[alarm])


def measure_page_hinkley(
    seeds: Iterable[int] = (0, 1, 2),
    thresholds: DriftThresholds | None = None,
    *,
    calm_days: float = 60.0,
    heatwave_days: float = 30.0,
    start_ns: int = CALIBRATION_START_NS,
) -> pd.DataFrame:
    """One row per (mode, seed): alarm time, onset, delay in hours, and whether the alarm was false.

    A calm station's alarm is always false; a heatwave station's alarm before the onset is false
    (delay_h stays NaN then). `detected` means an alarm at or after the onset.
    """
    t = thresholds or DriftThresholds()
    rows = []
    for seed in seeds:  # a loop over simulated stations, not samples
        calm, _ = simulate_station("calm", start_ns, calm_days, mode="calm", seed=seed)
        alarm = run_detector(calm, "calm", t)
        rows.append(
            {
                "mode": "calm",
                "seed": seed,
                "alarm_ns": alarm,
                "onset_ns": None,
                "delay_h": np.nan,
                "false_alarm": alarm is not None,
                "detected": False,
            }
        )
        wave, truth = simulate_station("wave", start_ns, heatwave_days, mode="heatwave", seed=seed)
        alarm = run_detector(wave, "wave", t)
        onset = truth["heatwave_start_ns"]
        after = alarm is not None and alarm >= onset
        rows.append(
            {
                "mode": "heatwave",
                "seed": seed,
                "alarm_ns": alarm,
                "onset_ns": onset,
                "delay_h": (alarm - onset) / NS_PER_HOUR if after else np.nan,
                "false_alarm": alarm is not None and not after,
                "detected": after,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Print the per-seed table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--delta", type=float, default=DriftThresholds.ph_delta)
    parser.add_argument("--lambda", dest="lam", type=float, default=DriftThresholds.ph_lambda)
    args = parser.parse_args(argv)
    t = DriftThresholds(ph_delta=args.delta, ph_lambda=args.lam)
    table = measure_page_hinkley(range(args.seeds), t)
    print(table[["mode", "seed", "delay_h", "false_alarm", "detected"]].to_string(index=False))
    wave = table[table["mode"] == "heatwave"]
    print(
        f"delta={t.ph_delta} lambda={t.ph_lambda}: false alarms {int(table['false_alarm'].sum())}/{len(table)} runs "
        f"(calm {int(table.loc[table['mode'] == 'calm', 'false_alarm'].sum())}/{args.seeds}), "
        f"heatwaves detected {int(wave['detected'].sum())}/{args.seeds} "
        f"(within 24 h: {int((wave['delay_h'] <= 24).sum())}/{args.seeds}), "
        f"delay h min/median/max {wave['delay_h'].min():.1f}/{wave['delay_h'].median():.1f}/{wave['delay_h'].max():.1f}"
    )


if __name__ == "__main__":
    main()
