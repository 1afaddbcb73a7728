"""Dagster wiring of the forecast domain, per station: training set, GRU and Prophet, evaluation, gated champion.

Numbers come from pure modules (`dataset`, `gru`, `prophet_forecaster`, `champion`, `drift`); these
bodies read the lake and the model store, call them, write files, log to MLflow and attach metadata
and plots. Stations are dynamic partitions, added by the weather sensor when a station first lands.
A station with too little history materializes nothing (the reason is logged and observed) and the
rest of its chain is skipped rather than failed.
"""

import io
import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from aero_assets.forecast.champion import evaluation_table, release_decision
from aero_assets.forecast.dataset import NS_PER_HOUR, TrainingSet, build_training_set, gaps, hourly, station_series
from aero_assets.forecast.settings import ForecastSettings
from aero_assets.keys import (
    CHAMPION_MODEL,
    FORECAST,
    GRU_MODEL,
    MODEL_EVALUATION,
    PROPHET_MODEL,
    TRAINING_SET,
    WEATHER_OBSERVATIONS,
    forecast_stations,
)
from aero_assets.plots import png_markdown
from resources import LakeResource, ModelStoreResource, write_parquet_atomic
from resources.lake import write_bytes_atomic

MODEL_NAMES = {"gru": "gru", "prophet": "prophet"}
FINITE_CHECK = "metrics_finite"
BEATS_CHECK = "beats_baselines"
CHAMPION_CHECK = "beats_champion"


def iso_utc(ns: int | None) -> str:
    """ISO-8601 UTC of epoch ns ('' for None): the timestamps metadata, tags and reports show."""
    return "" if ns is None else pd.Timestamp(int(ns), tz="UTC").isoformat()


def station_dir(lake: LakeResource, key: dg.AssetKey, station: str) -> Path:
    return lake.partition_dir(key, station=station)


def model_name(kind: str, station: str) -> str:
    """The model store name of one station's model of one kind (`gru-<station>`)."""
    return f"{MODEL_NAMES[kind]}-{station}"


def load_training_set(lake: LakeResource, station: str) -> tuple[TrainingSet, dict]:
    folder = station_dir(lake, TRAINING_SET, station)
    with np.load(folder / "training_set.npz") as arrays:
        training_set = TrainingSet.from_arrays(arrays)
    return training_set, json.loads((folder / "training_set.json").read_text())


CHAMPION_FIELDS = ("kind", "version", "data_first_ts", "data_last_ts")  # what serving and monitoring read


def read_release_state(lake: LakeResource, station: str) -> dict:
    """released.json ({current, history}), or an empty state when it is missing or damaged.

    Writes are atomic, but a file copied in by hand, a full disk or a bad restore can still leave
    garbage; the weather sensor reads this for every station it touches and the gate rewrites it,
    so a damaged file must read as "no champion" (the next release repairs it), never raise.
    """
    path = station_dir(lake, CHAMPION_MODEL, station) / "released.json"
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 (UnicodeDecodeError), not JSON
        return {"current": None, "history": []}
    if not isinstance(state, dict):
        return {"current": None, "history": []}
    current = state.get("current")
    usable = isinstance(current, dict) and all(current.get(f) is not None for f in CHAMPION_FIELDS)
    history = state.get("history")
    return {"current": current if usable else None,
            "history": [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []}


def _config_time(value: str, field: str) -> pd.Timestamp:
    """A run config time, or a Failure naming the field (pandas alone says only "could not convert string")."""
    try:
        when = pd.Timestamp(value)
    except (ValueError, TypeError):
        when = None
    if when is None or pd.isna(when):
        raise dg.Failure(description=f"training_set config `{field}` must be an ISO time such as "
                                     f"2026-05-01T00:00:00Z, not {value!r}")
    return when


def released_champion(lake: LakeResource, station: str) -> dict | None:
    """The champion in service for a station ({kind, version, ...}), or None before the first release
    (or when released.json is damaged: see `read_release_state`)."""
    return read_release_state(lake, station)["current"]


def _forecast_plot(title: str, target_ts: np.ndarray, actual: np.ndarray, forecasts: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    when = pd.to_datetime(target_ts)
    ax.plot(when, actual, color="black", lw=1.2, label="actual")
    for name, values in forecasts.items():
        ax.plot(when, values, lw=1.0, alpha=0.85, label=name)
    ax.set_ylabel("°C")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    fig.autofmt_xdate()
    return png_markdown(fig)


def model_store_home(model_store: ModelStoreResource) -> Path:
    """`$AERO_HOME` (the model store is `$AERO_HOME/models`): where the local MLflow store lives."""
    return Path(model_store.root).absolute().parent


def build_training_assets(settings: ForecastSettings) -> list:
    class TrainingSetConfig(dg.Config):
        """Window shape and history span of one station's training set (defaults from `AERO_FORECAST_*`)."""

        lookback: int = settings.lookback_h
        horizon: int = settings.horizon_h
        start: str = ""  # ISO time: train only on history from here (a drift retrain sets it near the onset)
        max_history_days: float = settings.max_history_days
        min_history_h: int = settings.min_history_h

    class GRUTrainConfig(dg.Config):
        epochs: int = settings.gru_epochs
        hidden: int = 32
        seed: int = 0
        # start from the station's newest GRU and keep its scaler (a drift retrain sets this): a few days of a
        # new regime are enough to adapt a network that learned the station's daily cycle from a long history
        fine_tune: bool = False

    class ChampionConfig(dg.Config):
        margin: float = settings.release_margin

    @dg.asset(
        key=TRAINING_SET, group_name=FORECAST, partitions_def=forecast_stations, deps=[WEATHER_OBSERVATIONS],
        output_required=False, kinds={"numpy"},
        description="One station's hourly series cut into (lookback → horizon) windows, split by time into "
                    "train/validation/test with no window crossing a boundary; the scaler is fitted on train only "
                    "and stored with the set.")
    def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeResource):
        from aero_assets.forecast.observations import read_observations

        station = context.partition_key
        start_limit = _config_time(config.start, "start") if config.start else None  # before any data is read
        readings = read_observations(lake.path, station=station)
        frame = hourly(readings)
        series = station_series(frame, station) if not frame.empty else pd.Series(dtype=float)
        if len(series):
            end_ns = int(series.index[-1])
            start_ns = end_ns - int(config.max_history_days * 24) * NS_PER_HOUR
            if start_limit is not None:
                start_ns = max(start_ns, int(start_limit.value))  # .value is UTC ns, tz or not
            series = series[series.index >= start_ns]
        observed = int(series.notna().sum())
        if observed < config.min_history_h:
            reason = (f"station {station} has {observed} observed hours in the window, fewer than the "
                      f"{config.min_history_h} a training set needs (min_history_h); nothing trained")
            context.log.warning(reason)
            context.log_event(dg.AssetObservation(asset_key=TRAINING_SET, partition=station,
                                                  metadata={"skipped": reason, "observed_hours": observed}))
            return
        last_landing = context.instance.get_latest_materialization_event(WEATHER_OBSERVATIONS)
        offsets = {}
        if last_landing is not None and last_landing.asset_materialization is not None:
            landing_meta = last_landing.asset_materialization.metadata
            offsets = {k: v.value for k, v in landing_meta.items() if "offset" in k}
        t0 = time.perf_counter()
        ts = build_training_set(series, lookback=config.lookback, horizon=config.horizon)
        folder = station_dir(lake, TRAINING_SET, station)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **ts.to_arrays())
        write_bytes_atomic(folder / "training_set.npz", buffer.getvalue())
        holes = gaps(frame, station=station)
        meta = {"station": station, "first_ts": int(series.index[0]), "last_ts": int(series.index[-1]),
                "hours": len(series), "observed_hours": observed, "gaps": holes[:50], "n_gaps": len(holes),
                "duplicates_resolved": int(len(readings) - readings.drop_duplicates(["station", "ts"]).shape[0]),
                "counts": ts.counts(), "mean": ts.mean, "std": ts.std, "boundaries_ns": list(ts.boundaries_ns),
                "start_config": config.start, "offsets": offsets}
        write_bytes_atomic(folder / "training_set.json", json.dumps(meta).encode())
        counts = ts.counts()
        yield dg.MaterializeResult(metadata={
            "station": station, "window": f"{iso_utc(meta['first_ts'])} → {iso_utc(meta['last_ts'])}",
            "hours": len(series), "observed_hours": observed, "gaps_over_3h": len(holes),
            "duplicates_resolved": meta["duplicates_resolved"],
            **{f"windows_{k}": v for k, v in counts.items()},
            "validation_from": iso_utc(ts.boundaries_ns[0]), "test_from": iso_utc(ts.boundaries_ns[1]),
            "scaler_mean_c": round(ts.mean, 3), "scaler_std_c": round(ts.std, 3),
            "lookback": ts.lookback, "horizon": ts.horizon, "seconds": round(time.perf_counter() - t0, 3),
            "dagster/row_count": len(ts.split)})

    def _train(context, kind: str, lake: LakeResource, model_store: ModelStoreResource, fit, params: dict):
        from aero_assets.forecast.baselines import metrics
        from aero_assets.forecast.tracking import log_training_run

        station = context.partition_key
        ts, ts_meta = load_training_set(lake, station)
        t0 = time.perf_counter()
        try:
            model = fit(ts)
        except ValueError as exc:  # too few windows for this model: not a candidate this time, said plainly
            reason = f"{kind} not trained for {station}: {exc}"
            context.log.warning(reason)
            return dg.MaterializeResult(metadata={"station": station, "trained": False, "skipped": reason})
        train_seconds = time.perf_counter() - t0
        scores = {}
        forecasts = {}
        for part in ("validation", "test"):
            X_raw, y_raw, target_ts = ts.raw(part)
            y_hat = model.predict(X_raw, target_ts) if len(X_raw) else np.empty((0, ts.horizon))
            forecasts[part] = (target_ts, y_raw, y_hat)
            scores[part] = metrics(y_raw, y_hat)
        metric_values = {"val_rmse": scores["validation"]["rmse"], "val_mae": scores["validation"]["mae"],
                         "test_rmse": scores["test"]["rmse"], "test_mae": scores["test"]["mae"],
                         "train_seconds": train_seconds}
        record = {"kind": kind, "station": station, "params": params, "metrics": metric_values,
                  "data_window": {"first_ts": ts_meta["first_ts"], "last_ts": ts_meta["last_ts"]},
                  "offsets": ts_meta.get("offsets", {}), "lookback": ts.lookback, "horizon": ts.horizon,
                  "run_id": context.run.run_id}
        path = model_store.save(model_name(kind, station), model.save, metadata=record)
        tracked = log_training_run(tracking_uri=None, home=model_store_home(model_store),
                                   experiment=f"aero-forecast-{station}", run_name=f"{kind}-{path.name}",
                                   params={**params, "lookback": ts.lookback, "horizon": ts.horizon},
                                   metrics=metric_values,
                                   tags={"station": station, "model": kind, "version": path.name,
                                         "dagster_run": context.run.run_id},
                                   artifact_dir=path)
        if not tracked.logged:
            context.log.warning(tracked.warning or "training run not logged to MLflow")
        target_ts, y_raw, y_hat = forecasts["test"]
        plot = (_forecast_plot(f"{kind} vs actual, test part ({station})", target_ts[:, 0], y_raw[:, 0],
                               {kind: y_hat[:, 0]}) if len(target_ts) else "")
        return dg.MaterializeResult(metadata={
            "station": station, "trained": True, "version": path.name, "path": str(path),
            "test_rmse": float(metric_values["test_rmse"]), "test_mae": float(metric_values["test_mae"]),
            "val_rmse": float(metric_values["val_rmse"]), "train_seconds": round(train_seconds, 2),
            "mlflow": (f"logged run {tracked.run_id} to {tracked.uri}" if tracked.logged else
                       f"not logged: {tracked.warning}"),
            "forecast_vs_actual": plot if plot else dg.MetadataValue.text("no test windows"),
            "params": dg.MetadataValue.json(params)})

    @dg.asset(key=GRU_MODEL, group_name=FORECAST, partitions_def=forecast_stations, deps=[TRAINING_SET],
              kinds={"pytorch"},
              description="A torch GRU trained on the station's train part, early-stopped on validation, "
                          "versioned in the model store (weights, scaler, config, metrics, data window) and logged "
                          "to MLflow.")
    def gru_model(context: dg.AssetExecutionContext, config: GRUTrainConfig, lake: LakeResource,
                  model_store: ModelStoreResource):
        from aero_assets.forecast.gru import GRUConfig, train_gru

        gru_config = GRUConfig(epochs=config.epochs, hidden=config.hidden, seed=config.seed)
        params = {"epochs": config.epochs, "hidden": config.hidden, "seed": config.seed, "fine_tune_from": ""}
        init = None
        if config.fine_tune:
            try:
                loaded = load_model(model_store, "gru", context.partition_key)
                init = loaded.value.trained
                params["fine_tune_from"] = loaded.version
            except LookupError as exc:
                context.log.warning(f"no GRU to fine-tune ({exc}); training from scratch")

        def fit(ts):
            start = init if init is not None and (init.lookback, init.horizon) == (ts.lookback, ts.horizon) else None
            return _GRUAdapter(train_gru(ts, gru_config, init=start))

        return _train(context, "gru", lake, model_store, fit, params)

    @dg.asset(key=PROPHET_MODEL, group_name=FORECAST, partitions_def=forecast_stations, deps=[TRAINING_SET],
              kinds={"prophet"},
              description="Prophet with daily and yearly seasonality on the train part (plus an AR(1) correction of "
                          "its residuals), versioned in the model store and logged to MLflow.")
    def prophet_model(context: dg.AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource):
        from aero_assets.forecast.prophet_forecaster import ProphetConfig, train_prophet

        prophet_config = ProphetConfig()
        return _train(context, "prophet", lake, model_store, lambda ts: train_prophet(ts, prophet_config),
                      {"model": "prophet+ar1"})

    @dg.asset(key=MODEL_EVALUATION, group_name=FORECAST, partitions_def=forecast_stations,
              deps=[GRU_MODEL, PROPHET_MODEL], kinds={"json"},
              description="GRU and Prophet on the test part against persistence and seasonal naive (same hour "
                          "yesterday): RMSE, MAE and skill scores, as a table and a plot.")
    def model_evaluation(context: dg.AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource):
        station = context.partition_key
        ts, ts_meta = load_training_set(lake, station)
        X_raw, y_raw, target_ts = ts.raw("test")
        window = {"first_ts": ts_meta["first_ts"], "last_ts": ts_meta["last_ts"]}
        candidates, versions, val_rmse, notes = {}, {}, {}, []
        for kind in MODEL_NAMES:
            try:
                loaded = load_model(model_store, kind, station)
            except LookupError as exc:
                notes.append(f"{kind}: {exc}")
                continue
            notes.extend(f"{kind} {v}: {why}" for v, why in loaded.skipped)
            if loaded.metadata.get("data_window") != window:  # not trained this time (skipped): not a candidate
                notes.append(f"{kind}: the newest loadable version ({loaded.version}) was trained on another window; "
                             "not a candidate")
                continue
            candidates[kind] = loaded.value.predict(X_raw, target_ts)
            versions[kind] = loaded.version
            val_rmse[kind] = (loaded.metadata.get("metrics") or {}).get("val_rmse")
        in_service, serving = None, released_champion(lake, station)
        if serving is not None and len(X_raw):
            try:
                incumbent = load_model(model_store, serving["kind"], station, version=serving["version"])
                shape = (incumbent.metadata.get("lookback"), incumbent.metadata.get("horizon"))
                if shape == (ts.lookback, ts.horizon):
                    in_service = incumbent.value.predict(X_raw, target_ts)
                else:  # the window shape was reconfigured: the champion cannot forecast these windows, so it has
                    # no score on them (beats_champion passes) rather than failing every retrain on its input shape
                    notes.append(f"champion in service ({serving['kind']} {incumbent.version}) takes lookback "
                                 f"{shape[0]} -> horizon {shape[1]}, not {ts.lookback} -> {ts.horizon}: not scored")
                    in_service = np.full((len(X_raw), ts.horizon), np.nan)
                versions["in_service"] = f"{serving['kind']} {incumbent.version}"
            except LookupError as exc:
                notes.append(f"champion in service: {exc}")
        for note in notes:
            context.log.warning(note)
        table = evaluation_table(ts, candidates, in_service=in_service)
        folder = station_dir(lake, MODEL_EVALUATION, station)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / "evaluation.json", json.dumps(
            {"station": station, "versions": versions, "val_rmse": val_rmse, "notes": notes,
             "table": json.loads(table.reset_index().to_json(orient="records"))}).encode())
        lines = {k: v[:, 0] for k, v in candidates.items()}
        if in_service is not None:
            lines["in service"] = in_service[:, 0]
        plot = _forecast_plot(f"test part, {station}", target_ts[:, 0], y_raw[:, 0], lines) if len(target_ts) else ""
        return dg.MaterializeResult(metadata={
            "station": station, "table": dg.MetadataValue.md(table.round(4).to_markdown()),
            "versions": dg.MetadataValue.json(versions), "notes": dg.MetadataValue.json(notes),
            **{f"{name}_rmse": float(table.loc[name, "rmse"]) for name in table.index},
            "plot": plot if plot else dg.MetadataValue.text("no test windows")})

    @dg.asset(
        key=CHAMPION_MODEL, group_name=FORECAST, partitions_def=forecast_stations, deps=[MODEL_EVALUATION],
        kinds={"json"},
        check_specs=[
            dg.AssetCheckSpec(FINITE_CHECK, asset=CHAMPION_MODEL, blocking=True,
                              description="The candidate's test RMSE and MAE are finite numbers."),
            dg.AssetCheckSpec(BEATS_CHECK, asset=CHAMPION_MODEL, blocking=True,
                              description="The candidate beats persistence and seasonal naive on the test part by "
                                          "the configured margin."),
            dg.AssetCheckSpec(CHAMPION_CHECK, asset=CHAMPION_MODEL, blocking=True,
                              description="The candidate beats the champion in service on the same test windows "
                                          "(passes when there is none)."),
        ],
        description="The model in service for the station: the best evaluated model, released only when its "
                    "blocking checks pass; otherwise the previous champion stays in service and the metadata says why.")
    def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig, lake: LakeResource):
        station = context.partition_key
        evaluation = json.loads((station_dir(lake, MODEL_EVALUATION, station) / "evaluation.json").read_text())
        table = pd.DataFrame(evaluation["table"]).set_index("model")
        decision = release_decision(table, margin=config.margin)
        folder = station_dir(lake, CHAMPION_MODEL, station)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "released.json"
        state = read_release_state(lake, station)
        if path.exists() and state["current"] is None:
            context.log.warning(f"{path} is damaged or holds no usable champion; treated as no champion in service")
        previous = state.get("current")
        ts_meta = json.loads((station_dir(lake, TRAINING_SET, station) / "training_set.json").read_text())
        if decision.released:
            kind = decision.champion
            current = {"kind": kind, "version": evaluation["versions"][kind], "station": station,
                       "released_at": pd.Timestamp.now(tz="UTC").isoformat(), "run_id": context.run.run_id,
                       "test_rmse": float(table.loc[kind, "rmse"]),
                       "val_rmse": evaluation.get("val_rmse", {}).get(kind),
                       "data_last_ts": ts_meta["last_ts"], "data_first_ts": ts_meta["first_ts"],
                       "trigger": context.run.tags.get("aero/trigger", "manual"),
                       "drift_reason": context.run.tags.get("aero/drift_reason", "")}
            state = {"current": current, "history": [*state.get("history", []), current][-50:]}
            write_bytes_atomic(path, json.dumps(state).encode())
            status = f"released {kind} {current['version']}"
        else:
            status = ("kept " + (f"{previous['kind']} {previous['version']}" if previous else "no champion (none yet)")
                      + f" in service: {decision.reason}")
            context.log.warning(status)
        in_service = state.get("current") or {}
        yield dg.MaterializeResult(metadata={
            "station": station, "status": status, "released": decision.released,
            "champion": in_service.get("kind", ""), "version": in_service.get("version", ""),
            "candidate": str(table[table["kind"] == "model"]["rmse"].idxmin()) if (table["kind"] == "model").any()
            else "", "test_rmse": float(in_service.get("test_rmse", float("nan"))),
            "table": dg.MetadataValue.md(table.round(4).to_markdown())})
        for name, (passed, why) in decision.checks.items():
            yield dg.AssetCheckResult(check_name=name, passed=passed, asset_key=CHAMPION_MODEL,
                                      metadata={"why": why, "kept_in_service": "" if decision.released else status})

    return [training_set, gru_model, prophet_model, model_evaluation, champion_model]


class _GRUAdapter:
    """A trained GRU behind the (X_raw, target_ts) call every forecaster answers; saving delegates."""

    def __init__(self, trained):
        self.trained = trained

    def predict(self, X_raw: np.ndarray, target_ts: np.ndarray | None = None) -> np.ndarray:
        return self.trained.predict(X_raw)

    def save(self, folder: Path) -> None:
        self.trained.save(folder)


def load_model(model_store: ModelStoreResource, kind: str, station: str, version: str | None = None):
    """The newest loadable version of a station's model (falling back past corrupted ones), adapted to predict()."""
    if kind == "gru":
        from aero_assets.forecast.gru import TrainedGRU

        def loader(folder):
            return _GRUAdapter(TrainedGRU.load(folder))
    else:
        from aero_assets.forecast.prophet_forecaster import TrainedProphet

        loader = TrainedProphet.load
    if not model_store.versions(model_name(kind, station)):
        raise LookupError(f"no {kind} model in the store for {station}")
    return model_store.load(model_name(kind, station), loader, version=version)


__all__ = ["build_training_assets", "load_model", "load_training_set", "released_champion", "write_parquet_atomic"]
