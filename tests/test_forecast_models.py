"""GRU and Prophet forecasters, MLflow tracking and the model store's verified loading with fallback.

Tiny data (four weeks of one simulated hourly station, one or two epochs) so the whole file runs
in seconds; the one-year figures come from `bench_gru_training` / `bench_prophet_training`,
never from timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aero_assets.forecast.dataset import NS_PER_HOUR, TrainingSet, build_training_set
from aero_assets.forecast.gru import GRUConfig, TrainedGRU, train_gru
from aero_assets.forecast.model_files import ModelLoadError
from aero_assets.forecast.prophet_forecaster import ProphetConfig, TrainedProphet, train_prophet, train_series
from aero_assets.forecast.simulate import simulate_station
from aero_assets.forecast.tracking import default_tracking_uri, log_training_run, resolve_tracking_uri
from resources.model_store import ModelStoreError, ModelStoreResource

START_NS = 1_717_200_000 * 1_000_000_000  # 2024-06-01
TINY = GRUConfig(hidden=8, epochs=2, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def series():
    readings, _ = simulate_station("tiny", START_NS, 28, seed=3)
    return readings.set_index("ts")["temperature_c"]


@pytest.fixture(scope="module")
def training_set(series) -> TrainingSet:
    return build_training_set(series, lookback=24, horizon=1)


@pytest.fixture(scope="module")
def gru(training_set: TrainingSet) -> TrainedGRU:
    return train_gru(training_set, TINY)


@pytest.fixture(scope="module")
def prophet_h3(series) -> tuple[TrainingSet, TrainedProphet]:
    ts = build_training_set(series, lookback=24, horizon=3)
    return ts, train_prophet(ts, ProphetConfig())


def test_heavy_libraries_are_not_imported_by_the_modules():
    code = (
        "import sys, aero_assets.forecast.gru, aero_assets.forecast.prophet_forecaster, "
        "aero_assets.forecast.tracking, resources.model_store\n"
        "print([m for m in ('torch', 'prophet', 'cmdstanpy', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- GRU -------------------------------------------------------------------------------------


def test_gru_trains_predicts_in_degc_and_keeps_the_best_epoch(gru: TrainedGRU, training_set: TrainingSet):
    assert len(gru.history) == 2 and {"train_loss", "val_loss", "epoch"} <= set(gru.history[0])
    best = min(gru.history, key=lambda h: h["val_loss"])
    assert gru.best_epoch == best["epoch"]
    assert gru.validation_source == "validation" and gru.n_val == training_set.counts()["validation"]
    X, y, _ = training_set.raw("test")
    y_hat = gru.predict(X)
    assert y_hat.shape == y.shape and np.isfinite(y_hat).all()
    assert abs(np.mean(y_hat) - np.mean(y)) < 3.0  # degC, not scaled units


def test_gru_nan_rows_give_nan_forecasts(gru: TrainedGRU, training_set: TrainingSet):
    X = training_set.raw("test")[0][:5].copy()
    X[2, 7] = np.nan
    y_hat = gru.predict(X)
    assert np.isnan(y_hat[2]).all() and np.isfinite(np.delete(y_hat, 2, axis=0)).all()
    with pytest.raises(ValueError, match="shape"):
        gru.predict(X[:, :10])


def test_gru_is_deterministic_for_a_seed(gru: TrainedGRU, training_set: TrainingSet):
    again = train_gru(training_set, TINY)
    X = training_set.raw("test")[0]
    np.testing.assert_array_equal(again.predict(X), gru.predict(X))
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in gru.history]


def test_gru_without_validation_windows_uses_the_tail_of_train(series):
    no_val = build_training_set(series, lookback=24, horizon=1, splits=(0.85, 0.0, 0.15))
    model = train_gru(no_val, GRUConfig(hidden=4, epochs=1, seed=1))
    assert "10 %" in model.validation_source
    assert model.n_val == round(no_val.counts()["train"] * 0.1)


def test_gru_too_few_windows_is_a_clear_value_error(series):
    short = build_training_set(series.iloc[:40], lookback=24, horizon=1)
    with pytest.raises(ValueError, match="too few train windows"):
        train_gru(short, TINY)


def test_gru_stops_at_the_wall_clock_budget(training_set: TrainingSet):
    model = train_gru(training_set, GRUConfig(hidden=4, epochs=10, max_seconds=0.0))
    assert len(model.history) == 1 and model.stop_reason == "max_seconds" and model.stopped_early


def test_gru_save_load_round_trip_and_damaged_files(gru: TrainedGRU, training_set: TrainingSet, tmp_path: Path):
    gru.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"weights.pt", "gru.json"}
    loaded = TrainedGRU.load(tmp_path / "m")
    X = training_set.raw("test")[0]
    np.testing.assert_array_equal(loaded.predict(X), gru.predict(X))
    assert loaded.config == gru.config and loaded.best_epoch == gru.best_epoch

    weights = tmp_path / "m" / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"weights\.pt"):
        TrainedGRU.load(tmp_path / "m")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        TrainedGRU.load(tmp_path / "m")
    gru.save(tmp_path / "m")
    (tmp_path / "m" / "gru.json").write_text('{"config": {"hidden": 8')
    with pytest.raises(ModelLoadError, match=r"gru\.json"):
        TrainedGRU.load(tmp_path / "m")


# --- Prophet ---------------------------------------------------------------------------------


def test_train_series_rebuilds_the_hourly_train_series(series, training_set: TrainingSet):
    rebuilt = train_series(training_set)
    assert np.all(np.diff(rebuilt.index.to_numpy()) == NS_PER_HOUR)
    np.testing.assert_allclose(rebuilt.to_numpy(), series.loc[rebuilt.index].to_numpy(), atol=1e-9)
    assert rebuilt.index[-1] < training_set.boundaries_ns[0]


def test_prophet_forecast_is_prophet_plus_decaying_ar_correction(prophet_h3):
    ts_set, model = prophet_h3
    X, y, target_ts = ts_set.raw("test")
    y_hat = model.predict(X, target_ts)
    assert y_hat.shape == y.shape == (len(X), 3) and np.isfinite(y_hat).all()
    assert 0.5 < model.rho < 1.0
    base = model.prophet_at(target_ts)
    last = model.prophet_at(target_ts[:, :1] - NS_PER_HOUR)
    expected = base + model.rho ** np.arange(1, 4) * (X[:, -1:] - last)
    np.testing.assert_allclose(y_hat, expected)
    plain = TrainedProphet(**{**model.__dict__, "config": ProphetConfig(residual_ar=False)})
    np.testing.assert_allclose(plain.predict(X, target_ts), base)


def test_prophet_with_ar_beats_persistence_at_one_hour(series):
    ts_set = build_training_set(series, lookback=24, horizon=1)
    model = train_prophet(ts_set, ProphetConfig())
    X, y, target_ts = ts_set.raw("test")
    from aero_assets.forecast.baselines import evaluate_baselines, metrics

    assert metrics(y, model.predict(X, target_ts))["rmse"] < evaluate_baselines(ts_set)["persistence"]["rmse"]


def test_prophet_is_deterministic_and_round_trips(prophet_h3, tmp_path: Path):
    ts_set, model = prophet_h3
    X, _, target_ts = ts_set.raw("test")
    again = train_prophet(ts_set, ProphetConfig())
    np.testing.assert_array_equal(again.predict(X, target_ts), model.predict(X, target_ts))
    model.save(tmp_path / "p")
    loaded = TrainedProphet.load(tmp_path / "p")
    np.testing.assert_allclose(loaded.predict(X, target_ts), model.predict(X, target_ts))
    assert loaded.rho == model.rho and loaded.config == model.config

    path = tmp_path / "p" / "prophet.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(ModelLoadError, match=r"prophet\.json"):
        TrainedProphet.load(tmp_path / "p")


def test_prophet_too_little_data_is_a_value_error(series):
    short = build_training_set(series.iloc[:80], lookback=24, horizon=1, splits=(0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="too few train hours"):
        train_prophet(short)


# --- MLflow tracking -------------------------------------------------------------------------


def test_tracking_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert resolve_tracking_uri(None, tmp_path) == default_tracking_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://example.invalid:5000"
    assert resolve_tracking_uri("file:///x", tmp_path) == "file:///x"


def test_local_store_run_reads_back_with_params_metrics_and_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    uri = default_tracking_uri(tmp_path / "home")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the environment wins when tracking_uri is None
    artifacts = tmp_path / "model"
    artifacts.mkdir()
    (artifacts / "gru.json").write_text("{}")
    result = log_training_run(
        tracking_uri=None,
        experiment="aero-forecast",
        run_name="gru-test",
        params={"hidden": 8, "lookback": 24},
        metrics={"rmse": 0.52, "persistence_rmse": 0.75, "skipped": float("nan")},
        tags={"station": "tiny"},
        artifact_dir=artifacts,
        home=tmp_path / "elsewhere",
    )
    assert result.logged and result.uri == uri, result
    assert result.warning and "skipped" in result.warning

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("aero-forecast")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert run.data.params == {"hidden": "8", "lookback": "24"}
    assert run.data.metrics == {"rmse": 0.52, "persistence_rmse": 0.75}
    assert run.data.tags["station"] == "tiny" and run.data.tags["mlflow.runName"] == "gru-test"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["gru.json"]
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()  # next to the database, not ./mlruns


def test_unreachable_tracking_server_is_a_warning_not_an_error():
    result = log_training_run(
        tracking_uri="http://127.0.0.1:9",
        experiment="aero-forecast",
        run_name="gru-test",
        params={"a": 1},
        metrics={"rmse": 1.0},
        tags={},
        artifact_dir=None,
    )
    assert not result.logged and result.run_id is None
    assert result.warning and "not logged" in result.warning and "127.0.0.1:9" in result.warning


# --- model store -----------------------------------------------------------------------------


def _save_gru(store: ModelStoreResource, model: TrainedGRU, tag: str) -> str:
    return store.save("gru", model.save, metadata={"tag": tag}).name


def test_store_records_checksums_and_loads_the_newest(gru: TrainedGRU, tmp_path: Path):
    store = ModelStoreResource(root=str(tmp_path / "models"))
    first = _save_gru(store, gru, "first")
    second = _save_gru(store, gru, "second")
    assert store.versions("gru") == [first, second]
    meta = store.metadata("gru", second)
    assert meta["tag"] == "second" and set(meta["files"]) == {"weights.pt", "gru.json"}
    assert all(len(digest) == 64 for digest in meta["files"].values())
    loaded = store.load("gru", TrainedGRU.load)
    assert loaded.version == second and loaded.skipped == [] and isinstance(loaded.value, TrainedGRU)
    assert store.load("gru", TrainedGRU.load, version=first).version == first
    with pytest.raises(ModelStoreError, match="no version 'nope'"):
        store.load("gru", TrainedGRU.load, version="nope")


def test_store_falls_back_when_the_newest_weights_are_corrupted(gru: TrainedGRU, tmp_path: Path):
    store = ModelStoreResource(root=str(tmp_path / "models"))
    good = _save_gru(store, gru, "good")
    bad = _save_gru(store, gru, "bad")
    weights = store.model_dir("gru") / bad / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[100:120] = b"\x00" * 20  # overwrite bytes in place: same size, different content
    weights.write_bytes(bytes(data))

    loaded = store.load("gru", TrainedGRU.load)
    assert loaded.version == good
    ((skipped_version, reason),) = loaded.skipped
    assert skipped_version == bad and "checksum mismatch for weights.pt" in reason


def test_store_falls_back_when_the_loader_rejects_a_version(gru: TrainedGRU, tmp_path: Path):
    store = ModelStoreResource(root=str(tmp_path / "models"))
    good = _save_gru(store, gru, "good")

    def write_truncated(folder: Path) -> None:  # checksums match what was written, the file is still broken
        gru.save(folder)
        data = (folder / "weights.pt").read_bytes()
        (folder / "weights.pt").write_bytes(data[: len(data) // 3])

    bad = store.save("gru", write_truncated).name
    loaded = store.load("gru", TrainedGRU.load)
    assert loaded.version == good
    assert loaded.skipped[0][0] == bad and "loader failed" in loaded.skipped[0][1]


def test_store_names_every_version_tried_when_none_loads(gru: TrainedGRU, tmp_path: Path):
    store = ModelStoreResource(root=str(tmp_path / "models"))
    versions = [_save_gru(store, gru, str(i)) for i in range(2)]
    for version in versions:
        (store.model_dir("gru") / version / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelStoreError) as info:
        store.load("gru", TrainedGRU.load)
    assert all(v in str(info.value) for v in versions) and "tried 2" in str(info.value)
    with pytest.raises(ModelStoreError, match="no saved versions"):
        store.load("prophet", TrainedProphet.load)


def test_store_accepts_folders_saved_before_checksums(gru: TrainedGRU, tmp_path: Path):
    store = ModelStoreResource(root=str(tmp_path / "models"))
    version = _save_gru(store, gru, "legacy")
    meta_path = store.model_dir("gru") / version / "aero_model.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]
    meta_path.write_text(json.dumps(meta))
    assert store.verify("gru", version) is None
    assert store.load("gru", TrainedGRU.load).version == version
