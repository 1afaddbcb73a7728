"""`aero bench forecast`: training time and skill of both forecasters, and the drift loop's quality.

Each figure next to its baseline in the same run:
- GRU training on one year of hourly data (the issue's budget: 60 s on 2 cores) and its test RMSE,
  with Prophet's, next to persistence and seasonal naive on the same windows;
- the champion's whole life on simulated stations (`forecast.scenario`, the pipeline's own pure
  functions and default settings): a champion trained on 60 days, then four weeks monitored. On the
  heatwave stations: hours from the onset to the drift alarm and the retrains the sensor's policy
  asks for; on the calm stations: false alarms (the target is none). For each released drift retrain,
  its RMSE and the pre-drift champion's on the same post-retrain heatwave hours.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm


def bench_forecast(seeds: int = 6, gru_days: float = 365.0) -> dict:
    from aero_assets.forecast.gru import bench_gru_training
    from aero_assets.forecast.prophet_forecaster import bench_prophet_training
    from aero_assets.forecast.scenario import run_scenario

    bar = tqdm(total=2 + 2 * seeds, desc="bench forecast", unit="step")
    bar.set_postfix_str(f"GRU on {gru_days:g} days")
    gru = bench_gru_training(days=gru_days, seed=0)
    bar.update()
    bar.set_postfix_str(f"Prophet on {gru_days:g} days")
    prophet = bench_prophet_training(days=gru_days, seed=0)
    bar.update()
    waves, calms = [], []
    for seed in range(seeds):
        for mode, out in (("heatwave", waves), ("calm", calms)):
            bar.set_postfix_str(f"{mode} station, seed {seed}")
            out.append(run_scenario(mode, seed))
            bar.update()
    bar.close()

    delays = np.array([w.delay_h for w in waves])
    detected = np.isfinite(delays)
    gains = [(w.seed, w.old_rmse_after_retrain, w.new_rmse_after_retrain) for w in waves
             if np.isfinite(w.old_rmse_after_retrain) and np.isfinite(w.new_rmse_after_retrain)]
    rel_gains = [1.0 - new / old for _, old, new in gains]
    first_tables = [w.first_table for w in waves + calms if w.first_table is not None]

    def median(values) -> float:
        return round(float(np.median(values)), 3) if len(values) else float("nan")

    champion_rmse = [float(t[t["kind"] == "model"]["rmse"].min()) for t in first_tables]
    persistence_rmse = [float(t.loc["persistence", "rmse"]) for t in first_tables]
    seasonal_rmse = [float(t.loc["seasonal_naive", "rmse"]) for t in first_tables]
    return {
        "gru_train_seconds": gru["gru_train_seconds"],
        "gru_days": gru_days,
        "gru_epochs_run": gru["epochs_run"],
        "gru_rmse": round(gru["gru_rmse"], 4),
        "prophet_rmse": round(prophet["prophet_rmse"], 4),
        "prophet_fit_seconds": prophet["prophet_fit_seconds"],
        "persistence_rmse": round(gru["persistence_rmse"], 4),
        "seasonal_naive_rmse": round(gru["seasonal_naive_rmse"], 4),
        "scenario_champion_rmse_median": median(champion_rmse),
        "scenario_persistence_rmse_median": median(persistence_rmse),
        "scenario_seasonal_naive_rmse_median": median(seasonal_rmse),
        "heatwave_stations": len(waves),
        "drift_delay_hours": median(delays[detected]),
        "drift_delay_hours_max": round(float(delays[detected].max()), 1) if detected.any() else float("nan"),
        "drift_detected": int(detected.sum()),
        "drift_detected_within_24h": int((delays[detected] <= 24).sum()),
        "heatwave_false_alarms_before_onset": int(sum(w.false_alarm for w in waves)),
        "calm_stations": len(calms),
        "calm_false_alarms": int(sum(c.alarm_ts is not None for c in calms)),
        "calm_retrains": int(sum(len(c.retrain_ts) for c in calms)),
        "drift_retrains_per_heatwave": [len(w.retrain_ts) for w in waves],
        "retrains_released": len(gains),
        "retrain_rmse_gain": median(rel_gains),
        "retrain_rmse_pairs": [{"seed": s, "pre_drift_champion": round(o, 3), "retrained": round(n, 3)}
                               for s, o, n in gains],
    }
