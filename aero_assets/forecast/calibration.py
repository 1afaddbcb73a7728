"""Measure the drift verdict on simulated stations: false alarms when calm, delay after a heatwave.

Pure and deterministic (seeded simulations, no files, no models: the verdict's CUSUM runs on
seasonal innovations, which do not depend on the champion), so the numbers behind the
`DriftThresholds` defaults can be re-measured at any time::

    python -m aero_assets.forecast.calibration --seeds 30
    python -m aero_assets.forecast.calibration --seeds 30 --k 3.0 --lambda 50

Each seed is one calm and one heatwave station with four weeks of history (the reference the
detector starts from, as after a release) and four weeks monitored; the heatwave starts five days
into them. Seeds start 13 days apart, so the season differs from one to the next.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
import pandas as pd

from aero_assets.forecast.baselines import seasonal_innovations
from aero_assets.forecast.dataset import NS_PER_HOUR, hourly, station_series
from aero_assets.forecast.drift import DriftThresholds, cusum
from aero_assets.forecast.simulate import simulate_station

NS_PER_DAY = 24 * NS_PER_HOUR
CALIBRATION_START_NS = pd.Timestamp("2026-01-01").value


def first_alarm_ns(series: pd.Series, release_ns: int, thresholds: DriftThresholds) -> int | None:
    """Timestamp (ns) of the verdict's first alarm on a station's hourly series after `release_ns`, or None."""
    innovations = seasonal_innovations(series, days=thresholds.season_days)
    innovations = innovations[innovations.index > release_ns].dropna()
    alarm, _, _ = cusum(innovations.to_numpy(), thresholds.cusum_k, thresholds.cusum_lambda)
    return None if alarm is None else int(innovations.index[alarm])


def measure_drift_detector(seeds: Iterable[int] = (0, 1, 2), thresholds: DriftThresholds | None = None, *,
                           history_days: float = 28.0, monitor_days: float = 28.0,
                           onset_after_days: float = 5.0) -> pd.DataFrame:
    """One row per (mode, seed): alarm time, onset, delay in hours, and whether the alarm was false."""
    t = thresholds or DriftThresholds()
    rows = []
    for seed in seeds:  # a loop over simulated stations, not samples
        start = CALIBRATION_START_NS + seed * 13 * NS_PER_DAY
        release = start + round(history_days * NS_PER_DAY) - NS_PER_HOUR
        for mode in ("calm", "heatwave"):
            onset = release + NS_PER_HOUR + round(onset_after_days * NS_PER_DAY) if mode == "heatwave" else None
            readings, _ = simulate_station(mode, start, history_days + monitor_days, mode=mode,
                                           heatwave_start_ns=onset, seed=seed)
            alarm = first_alarm_ns(station_series(hourly(readings), mode), release, t)
            after = onset is not None and alarm is not None and alarm >= onset
            rows.append({"mode": mode, "seed": seed, "alarm_ns": alarm, "onset_ns": onset,
                         "delay_h": (alarm - onset) / NS_PER_HOUR if after else np.nan,
                         "false_alarm": alarm is not None and not after, "detected": after})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Print the per-seed table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--k", type=float, default=DriftThresholds.cusum_k, help="CUSUM allowance, degC")
    parser.add_argument("--lambda", dest="lam", type=float, default=DriftThresholds.cusum_lambda,
                        help="CUSUM threshold, degC*h")
    args = parser.parse_args(argv)
    t = DriftThresholds(cusum_k=args.k, cusum_lambda=args.lam)
    table = measure_drift_detector(range(args.seeds), t)
    print(table[["mode", "seed", "delay_h", "false_alarm", "detected"]].to_string(index=False))
    wave = table[table["mode"] == "heatwave"]
    calm_alarms = int(table.loc[table["mode"] == "calm", "false_alarm"].sum())
    delays = wave["delay_h"]
    print(f"k={t.cusum_k} lambda={t.cusum_lambda}: false alarms {int(table['false_alarm'].sum())}/{len(table)} runs "
          f"(calm {calm_alarms}/{args.seeds}), heatwaves detected {int(wave['detected'].sum())}/{args.seeds} "
          f"(within 24 h: {int((delays <= 24).sum())}/{args.seeds}), "
          f"delay h min/median/max {delays.min():.1f}/{delays.median():.1f}/{delays.max():.1f}")

if __name__ == "__main__":
    main()
