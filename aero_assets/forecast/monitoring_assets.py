"""Dagster wiring of the champion's life in service: `forecast/predictions` and `forecast/drift_report` + `drift`.

The seed's /predict and /eval loop without a hand-run feeder: after every landing the weather sensor
asks for both, per station. Predictions are recomputed from the release on (the champion is a pure
function of its inputs, so the record is exact and reprocessable), joined with the actuals that have
arrived; the drift report runs the pure `monitor.monitor_station` over them, and its `drift` check
fails when the verdict is "drifted", which is what `drift_retrain_sensor` acts on.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from aero_assets.forecast.assets import iso_utc, load_model, released_champion, station_dir
from aero_assets.forecast.baselines import metrics
from aero_assets.forecast.champion import next_horizon, one_step_forecasts
from aero_assets.forecast.dataset import NS_PER_HOUR, hourly, station_series
from aero_assets.forecast.drift import DriftThresholds
from aero_assets.forecast.monitor import StationDrift, detector_curves, monitor_station
from aero_assets.forecast.settings import ForecastSettings
from aero_assets.keys import (
    CHAMPION_MODEL,
    DRIFT_CHECK,
    DRIFT_REPORT,
    FORECAST,
    PREDICTIONS,
    WEATHER_OBSERVATIONS,
    forecast_stations,
)
from aero_assets.plots import png_markdown
from resources import LakeResource, ModelStoreResource, write_parquet_atomic
from resources.lake import write_bytes_atomic

PREDICTION_COLUMNS = ["target_ts", "forecast", "actual", "error"]
PLOT_DAYS = 14


def station_hourly(lake: LakeResource, station: str) -> pd.Series:
    from aero_assets.forecast.observations import read_observations

    frame = hourly(read_observations(lake.path, station=station))
    return station_series(frame, station) if not frame.empty else pd.Series(dtype=float)


def read_predictions(lake: LakeResource, station: str) -> pd.DataFrame:
    path = station_dir(lake, PREDICTIONS, station) / "predictions.parquet"
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PREDICTION_COLUMNS})
    return pd.read_parquet(path)


def _skip(context, key: dg.AssetKey, station: str, reason: str) -> None:
    context.log.warning(reason)
    context.log_event(dg.AssetObservation(asset_key=key, partition=station, metadata={"skipped": reason}))


def _predictions_plot(station: str, preds: pd.DataFrame, marks: dict[str, int | None]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recent = preds[preds["target_ts"] >= preds["target_ts"].max() - PLOT_DAYS * 24 * NS_PER_HOUR]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    when = pd.to_datetime(recent["target_ts"])
    ax.plot(when, recent["actual"], color="black", lw=1.2, label="actual")
    ax.plot(when, recent["forecast"], lw=1.0, alpha=0.85, label="champion, one hour ahead")
    for label, ts in marks.items():
        if ts is not None and ts >= recent["target_ts"].min():
            ax.axvline(pd.Timestamp(int(ts)), color="red" if "alarm" in label else "orange", ls="--", lw=1,
                       label=label)
    ax.set_ylabel("°C")
    ax.set_title(f"{station}: forecasts since release (last {PLOT_DAYS} days)")
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    fig.autofmt_xdate()
    return png_markdown(fig)


def _drift_plot(station: str, drift: StationDrift):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True)
    top.plot(pd.to_datetime(drift.innovation_ts), drift.innovations, lw=0.8, color="tab:blue")
    top.axhline(0, color="grey", lw=0.6)
    top.set_ylabel("innovation °C")
    top.set_title(f"{station}: value minus the same hour of the previous "
                  f"{drift.report['thresholds']['season_days']} days, since release")
    for name, (ts, statistic, threshold) in detector_curves(drift).items():
        line = bottom.plot(pd.to_datetime(ts), statistic / threshold, lw=1.0, label=name)[0]
        line.set_alpha(0.6 if "champion" in name else 1.0)
    bottom.axhline(1.0, color="red", lw=0.8, ls=":", label="alarm threshold")
    bottom.set_ylabel("statistic / threshold")
    for ax in (top, bottom):
        if drift.onset_ts is not None:
            ax.axvline(pd.Timestamp(drift.onset_ts), color="orange", ls="--", lw=1)
        if drift.alarm_ts is not None:
            ax.axvline(pd.Timestamp(drift.alarm_ts), color="red", ls="--", lw=1)
    bottom.legend(loc="upper left", fontsize=8, ncols=2)
    fig.autofmt_xdate()
    return png_markdown(fig)


def build_monitor_assets(settings: ForecastSettings) -> list:
    defaults = DriftThresholds()

    class DriftConfig(dg.Config):
        """Drift verdict thresholds (defaults calibrated with `python -m aero_assets.forecast.calibration`)."""

        cusum_k: float = defaults.cusum_k
        cusum_lambda: float = defaults.cusum_lambda
        season_days: int = defaults.season_days
        psi: float = defaults.psi
        recent_window_h: int = settings.recent_window_h

        def problems(self) -> list[str]:
            """Values the detectors cannot work with: season_days 0 divides by zero, a negative one makes the
            innovations the raw temperatures (drift on every warm station), a zero threshold alarms at once."""
            return [f"{name} must be {rule}, not {value!r}" for name, value, ok, rule in [
                ("season_days", self.season_days, self.season_days >= 1, ">= 1"),
                ("cusum_k", self.cusum_k, self.cusum_k >= 0, ">= 0"),
                ("cusum_lambda", self.cusum_lambda, self.cusum_lambda > 0, "> 0"),
                ("psi", self.psi, self.psi > 0, "> 0"),
                ("recent_window_h", self.recent_window_h, self.recent_window_h >= 1, ">= 1")] if not ok]

    @dg.asset(key=PREDICTIONS, group_name=FORECAST, partitions_def=forecast_stations,
              deps=[CHAMPION_MODEL, WEATHER_OBSERVATIONS], output_required=False, kinds={"parquet"},
              description="The champion's one-hour-ahead forecast of every hour since its release and of the next "
                          "one, joined with the actuals landed so far; errors stored (the seed's /predict + /eval).")
    def predictions(context: dg.AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource):
        station = context.partition_key
        champion = released_champion(lake, station)
        if champion is None:
            return _skip(context, PREDICTIONS, station, f"station {station} has no released champion yet: nothing "
                                                        "to forecast with (the training chain releases one)")
        try:
            loaded = load_model(model_store, champion["kind"], station, version=champion["version"])
        except LookupError as exc:  # deleted from the store, or it and every older version damaged: say which
            return _skip(context, PREDICTIONS, station, f"the champion of {station}, {champion['kind']} "
                                                        f"{champion['version']}, cannot be loaded ({exc}); no "
                                                        "forecasts until a retrain releases a new one")
        for version, why in loaded.skipped:
            context.log.warning(f"{champion['kind']} {version} of {station} could not be loaded ({why}); "
                                f"forecasting with {loaded.version} instead")
        lookback, horizon = int(loaded.metadata.get("lookback", 24)), int(loaded.metadata.get("horizon", 1))
        series = station_hourly(lake, station)
        preds = one_step_forecasts(loaded.value.predict, series, int(champion["data_last_ts"]), lookback, horizon)
        ahead = next_horizon(loaded.value.predict, series, lookback, horizon)
        folder = station_dir(lake, PREDICTIONS, station)
        table = pa.table({"target_ts": pa.array(preds["target_ts"].to_numpy(np.int64)),
                          **{c: pa.array(preds[c].to_numpy(float)) for c in PREDICTION_COLUMNS[1:]},
                          "model": pa.array([champion["kind"]] * len(preds), pa.string()),
                          "version": pa.array([loaded.version] * len(preds), pa.string())})
        write_parquet_atomic(table, folder / "predictions.parquet")
        write_bytes_atomic(folder / "next_horizon.json", json.dumps(
            {"station": station, "model": champion["kind"], "version": loaded.version,
             "forecasts": [{"target": iso_utc(t), "forecast_c": round(float(v), 3)}
                           for t, v in zip(ahead["target_ts"], ahead["forecast"], strict=True)]}).encode())
        scored = preds.dropna(subset=["error"])
        score = metrics(scored["actual"].to_numpy(), scored["forecast"].to_numpy())
        upcoming = preds[preds["actual"].isna()].tail(1)
        return dg.MaterializeResult(metadata={
            "station": station, "champion": champion["kind"], "version": loaded.version,
            "released_after": iso_utc(champion["data_last_ts"]), "forecasts": len(preds), "scored": int(score["n"]),
            "rmse_since_release": float(score["rmse"]), "mae_since_release": float(score["mae"]),
            "val_rmse_at_release": float(champion.get("val_rmse") or float("nan")),
            "next_forecast_ts": iso_utc(upcoming["target_ts"].iloc[0]) if len(upcoming) else "",
            "next_forecast_c": float(upcoming["forecast"].iloc[0]) if len(upcoming) else float("nan"),
            "next_horizon": dg.MetadataValue.json(
                [{"target": iso_utc(t), "forecast_c": round(float(v), 3)}
                 for t, v in zip(ahead["target_ts"], ahead["forecast"], strict=True)]),
            "dagster/row_count": len(preds),
            "plot": _predictions_plot(station, preds, {}) if len(preds) else dg.MetadataValue.text("no forecasts")})

    @dg.asset(key=DRIFT_REPORT, group_name=FORECAST, partitions_def=forecast_stations, deps=[PREDICTIONS],
              kinds={"json"},
              check_specs=[dg.AssetCheckSpec(
                  DRIFT_CHECK, asset=DRIFT_REPORT,
                  description="Fails when the weather left the regime the champion was trained on: a CUSUM on "
                              "seasonal innovations since the release crossed its threshold. drift_retrain_sensor "
                              "retrains the station when it fails.")],
              description="Input drift (PSI and KS of recent temperatures against the champion's training window), "
                          "error drift (CUSUM on seasonal innovations, the verdict) and champion degradation "
                          "(Page-Hinkley on its errors in validation RMSEs), with a plot marking where drift began.")
    def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, lake: LakeResource):
        station = context.partition_key
        if config.problems():
            raise dg.Failure(description="drift_report config: " + "; ".join(config.problems()))
        champion = released_champion(lake, station)
        if champion is None:  # predictions skipped too, so this step is normally not reached
            raise dg.Failure(description=f"station {station} has no released champion to monitor")
        thresholds = DriftThresholds(cusum_k=config.cusum_k, cusum_lambda=config.cusum_lambda,
                                     season_days=config.season_days, psi=config.psi)
        series = station_hourly(lake, station)
        first, release = int(champion["data_first_ts"]), int(champion["data_last_ts"])
        reference = series[(series.index >= first) & (series.index <= release)].to_numpy(dtype=float)
        preds = read_predictions(lake, station)
        drift = monitor_station(series, reference, preds, release, champion.get("val_rmse"),
                                thresholds=thresholds, recent_window_h=config.recent_window_h)
        summary = {**drift.summary(), "station": station, "champion": champion["kind"],
                   "version": champion["version"], "thresholds": drift.report["thresholds"]}
        folder = station_dir(lake, DRIFT_REPORT, station)
        write_bytes_atomic(folder / "drift_report.json", json.dumps(summary).encode())
        verdict = ("drifted: " + "; ".join(drift.report["reasons"])) if drift.drifted else "no drift"
        (context.log.warning if drift.drifted else context.log.info)(f"{station}: {verdict}")
        yield dg.MaterializeResult(metadata={
            "station": station, "verdict": verdict, "drifted": drift.drifted,
            "onset": iso_utc(drift.onset_ts), "alarm": iso_utc(drift.alarm_ts),
            "delay_h": (drift.alarm_ts - drift.onset_ts) / NS_PER_HOUR if drift.alarm_ts is not None else float("nan"),
            "hours_since_release": round(drift.hours_since_release, 1), "last_observation": iso_utc(drift.last_ts),
            "psi": float(drift.report["psi"]), "ks": float(drift.report["ks"]), "ks_p": float(drift.report["ks_p"]),
            "input_drift": dg.MetadataValue.json(drift.report["input_reasons"]),
            "champion_degradation": dg.MetadataValue.json(drift.report["degradation_reasons"]),
            "champion": f"{champion['kind']} {champion['version']}",
            "plot": _drift_plot(station, drift) if drift.innovations.size else dg.MetadataValue.text(
                "fewer hours since the release than the innovations need")})
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK, asset_key=DRIFT_REPORT, passed=not drift.drifted,
            severity=dg.AssetCheckSeverity.ERROR,
            description=verdict,
            metadata={"summary": dg.MetadataValue.json(summary), "onset": iso_utc(drift.onset_ts),
                      "alarm": iso_utc(drift.alarm_ts), "station": station})

    return [predictions, drift_report]


__all__ = ["build_monitor_assets", "read_predictions", "station_hourly"]
