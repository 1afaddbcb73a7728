"""Operator and attacker cases of the forecast monitoring loop that need no broker: damaged files, cursors, configs.

Each test pins a way the loop broke before it was hardened (see the commit that added it).
"""

import json
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from aero_assets.forecast.assets import build_training_assets, released_champion, station_dir
from aero_assets.forecast.monitoring_assets import build_monitor_assets
from aero_assets.forecast.settings import ForecastSettings
from aero_assets.keys import (
    CHAMPION_MODEL,
    FORECAST_MONITOR_CHAIN,
    MODEL_EVALUATION,
    PREDICTIONS,
    TRAINING_SET,
    forecast_stations,
)
from resources import LakeResource, ModelStoreResource
from sensors.drift_retrain import DriftCursor, build_routine_retrain_schedule, latest_failed_checks
from sensors.weather_observations import WeatherCursor

HOUR = 3_600_000_000_000
GOOD_CHAMPION = {"kind": "gru", "version": "v1", "station": "st", "data_first_ts": 0, "data_last_ts": 100 * HOUR,
                 "val_rmse": 1.0}


@pytest.fixture
def lake(tmp_path) -> LakeResource:
    return LakeResource(root=str(tmp_path / "lake"))


@pytest.fixture
def store(tmp_path) -> ModelStoreResource:
    return ModelStoreResource(root=str(tmp_path / "models"))


def _write_released(lake, station: str, raw: bytes) -> None:
    folder = station_dir(lake, CHAMPION_MODEL, station)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "released.json").write_bytes(raw)


@pytest.mark.parametrize("raw", [
    b'{"current": {"kind": "gru", "vers',  # half-written
    b"\xff\xfe\x00garbage",  # not text at all
    b"null",
    b"[]",
    b'{"current": "gru"}',
    b'{"current": {"kind": "gru"}}',  # no version, no release window
])
def test_a_damaged_released_json_means_no_champion_and_never_raises(lake, raw):
    """The weather sensor reads it for every touched station: one bad file must not stop landing for all."""
    _write_released(lake, "st", raw)
    assert released_champion(lake, "st") is None


def test_a_whole_released_json_is_read(lake):
    _write_released(lake, "st", json.dumps({"current": GOOD_CHAMPION, "history": [GOOD_CHAMPION]}).encode())
    assert released_champion(lake, "st") == GOOD_CHAMPION


def _evaluation_files(lake, station: str) -> None:
    rows = [{"model": "gru", "rmse": 0.5, "mae": 0.4, "n": 10, "kind": "model"},
            {"model": "persistence", "rmse": 1.0, "mae": 0.8, "n": 10, "kind": "baseline"},
            {"model": "seasonal_naive", "rmse": 2.0, "mae": 1.6, "n": 10, "kind": "baseline"}]
    for key, name, obj in [(MODEL_EVALUATION, "evaluation.json",
                            {"station": station, "versions": {"gru": "v2"}, "val_rmse": {"gru": 0.5}, "table": rows}),
                           (TRAINING_SET, "training_set.json", {"first_ts": 0, "last_ts": 200 * HOUR})]:
        folder = station_dir(lake, key, station)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(obj))


def test_the_champion_gate_releases_over_a_damaged_released_json(lake, store):
    """A corrupt champion file used to fail every retrain at the gate, so the station could never be served again."""
    _evaluation_files(lake, "st")
    _write_released(lake, "st", b'{"current": {"kind": "gr')
    defs = dg.Definitions(assets=build_training_assets(ForecastSettings()), resources={"lake": lake,
                                                                                        "model_store": store})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["st"])
        result = dg.materialize([defs.get_assets_def(CHAMPION_MODEL)], instance=instance, resources=defs.resources,
                                partition_key="st", raise_on_error=False)
    assert result.success
    assert released_champion(lake, "st")["version"] == "v2"


def _materialize_monitor(lake, store, keys=FORECAST_MONITOR_CHAIN, run_config=None):
    """The monitor assets of station "st" materialized in a fresh instance (raise_on_error off)."""
    defs = dg.Definitions(assets=build_monitor_assets(ForecastSettings()), resources={"lake": lake,
                                                                                       "model_store": store})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["st"])
        return dg.materialize([defs.get_assets_def(k) for k in keys], instance=instance, resources=defs.resources,
                              partition_key="st", raise_on_error=False, run_config=run_config or {})


def test_predictions_skip_with_a_reason_when_the_champion_model_is_gone(lake, store):
    """The champion's version deleted from the model store: the monitor run says so instead of failing."""
    _write_released(lake, "st", json.dumps({"current": GOOD_CHAMPION, "history": []}).encode())
    result = _materialize_monitor(lake, store)
    assert result.success
    observations = [e.event_specific_data.asset_observation for e in result.all_events
                    if e.event_type_value == "ASSET_OBSERVATION"]
    (skipped,) = [o for o in observations if o.asset_key == PREDICTIONS]
    reason = skipped.metadata["skipped"].value
    assert "v1" in reason and "gru" in reason


def test_a_training_start_that_is_not_a_time_fails_naming_the_field(lake, store):
    defs = dg.Definitions(assets=build_training_assets(ForecastSettings()), resources={"lake": lake,
                                                                                        "model_store": store})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["st"])
        result = dg.materialize([defs.get_assets_def(TRAINING_SET)], instance=instance, resources=defs.resources,
                                partition_key="st", raise_on_error=False,
                                run_config={"ops": {"forecast__training_set": {"config": {"start": "yesterday-ish"}}}})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error.message)
    assert "start" in message and "yesterday-ish" in message


@pytest.mark.parametrize("cls", [WeatherCursor, DriftCursor])
@pytest.mark.parametrize("raw", ['{"after_storage_id": 12', '{"after_storage_id": Infinity, "after_id": Infinity}',
                                 '{"after_id": 1e999, "after_storage_id": 1e999}', "null", "[1, 2]",
                                 '{"fresh_rows": {"a": Infinity}, "retrained_at": {"a": -Infinity}}',
                                 '{"onsets": {"a": [NaN]}, "fresh_rows": {"a": NaN}}'])
def test_a_corrupted_cursor_starts_over_instead_of_crashing_every_tick(cls, raw):
    assert cls.load(raw) == cls()


def _record(rec_id: int, status, station: str, run_id: str = "r", drifted: bool = True, last_ts: int | None = 500):
    summary = {"station": station, "drifted": drifted, "onset_ts": 100 * HOUR}
    if last_ts is not None:
        summary["last_ts"] = last_ts * HOUR
    planned = status == AssetCheckExecutionRecordStatus.PLANNED
    event = None if planned else SimpleNamespace(dagster_event=SimpleNamespace(
        event_specific_data=SimpleNamespace(metadata={"summary": dg.MetadataValue.json(summary)})))
    return SimpleNamespace(id=rec_id, status=status, event=event, partition=None, run_id=run_id)


class _FakeInstance:
    """The two instance calls `latest_failed_checks` makes, over a fixed history (newest first, as Dagster pages)."""

    def __init__(self, records, finished_runs=()):
        self.records = sorted(records, key=lambda r: -r.id)
        self.finished = set(finished_runs)
        self.event_log_storage = self

    def get_asset_check_execution_history(self, key, limit, cursor=None, status=None, partition_filter=None):
        return [r for r in self.records if cursor is None or r.id < cursor][:limit]

    def get_run_by_id(self, run_id):
        return SimpleNamespace(is_finished=run_id in self.finished)


FAILED, PLANNED = AssetCheckExecutionRecordStatus.FAILED, AssetCheckExecutionRecordStatus.PLANNED


def test_a_check_still_running_holds_the_cursor_so_its_verdict_is_not_skipped():
    """Execution ids are given when a check is planned: a later station finishing first must not jump the cursor
    past an earlier station's check still running (its verdict would never be read)."""
    instance = _FakeInstance([_record(10, PLANNED, "slow", run_id="running"), _record(11, FAILED, "fast")])
    newest, verdicts = latest_failed_checks(instance, 0)
    assert set(verdicts) == {"fast"} and newest < 10
    instance.records = [_record(11, FAILED, "fast"), _record(10, FAILED, "slow", run_id="running")]
    newest, verdicts = latest_failed_checks(instance, newest)
    assert set(verdicts) == {"fast", "slow"} and newest == 11


def test_a_planned_check_of_a_finished_run_does_not_hold_the_cursor_forever():
    instance = _FakeInstance([_record(10, PLANNED, "dead", run_id="crashed"), _record(11, FAILED, "fast")],
                             finished_runs={"crashed"})
    assert latest_failed_checks(instance, 0)[0] == 11


def test_every_check_since_the_cursor_is_read_not_only_the_newest_page():
    """More stations than one page of history between two ticks: the oldest of them were dropped."""
    records = [_record(i, FAILED, f"st-{i:04d}") for i in range(1, 1201)]
    newest, verdicts = latest_failed_checks(_FakeInstance(records), 0)
    assert newest == 1200 and len(verdicts) == 1200


def test_a_verdict_without_last_ts_is_ignored():
    null_ts = _record(4, FAILED, "null-ts")
    null_ts.event.dagster_event.event_specific_data.metadata["summary"] = dg.MetadataValue.json(
        {"station": "null-ts", "drifted": True, "last_ts": None})
    instance = _FakeInstance([null_ts, _record(5, FAILED, "no-ts", last_ts=None), _record(6, FAILED, "ok")])
    newest, verdicts = latest_failed_checks(instance, 0)
    assert newest == 6 and set(verdicts) == {"ok"}


def test_the_routine_retrain_skips_without_stations_and_asks_for_each_station_once(lake, store):
    schedule = build_routine_retrain_schedule()
    repo = dg.Definitions(assets=build_training_assets(ForecastSettings()), schedules=[schedule],
                          resources={"lake": lake, "model_store": store}).get_repository_def()
    when = pd.Timestamp("2026-05-04 04:00", tz="UTC").to_pydatetime()
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo) as ctx:
            assert isinstance(schedule.evaluate_tick(ctx).skip_message, str)
        instance.add_dynamic_partitions(forecast_stations.name, ["b", "a"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo) as ctx:
            requests = schedule.evaluate_tick(ctx).run_requests
    assert [r.partition_key for r in requests] == ["a", "b"]
    assert [r.run_key for r in requests] == ["routine/2026-05-04/a", "routine/2026-05-04/b"]


@pytest.mark.parametrize(("field", "value"), [("season_days", 0), ("season_days", -1), ("cusum_lambda", 0.0),
                                              ("cusum_k", -1.0), ("recent_window_h", 0), ("psi", 0.0)])
def test_a_drift_threshold_that_cannot_work_fails_naming_the_field(lake, store, field, value):
    """season_days 0 was a bare ZeroDivisionError; -1 made the innovations the raw temperatures (drift everywhere)."""
    from aero_assets.keys import DRIFT_REPORT

    _write_released(lake, "st", json.dumps({"current": GOOD_CHAMPION, "history": []}).encode())
    result = _materialize_monitor(lake, store, [DRIFT_REPORT],
                                  {"ops": {"forecast__drift_report": {"config": {field: value}}}})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert field in str(failure.event_specific_data.error.message)


def _monitor(lake, store, monkeypatch, series: pd.Series, release_ts: int, predict):
    """The monitor chain over `series` with a stand-in champion (`predict`), the lake and store left out."""
    import aero_assets.forecast.monitoring_assets as monitoring

    champion = {**GOOD_CHAMPION, "data_first_ts": int(series.index[0]) if len(series) else 0,
                "data_last_ts": release_ts}
    _write_released(lake, "st", json.dumps({"current": champion, "history": []}).encode())
    loaded = SimpleNamespace(value=SimpleNamespace(predict=predict), version="v1", skipped=[],
                             metadata={"lookback": 24})
    monkeypatch.setattr(monitoring, "station_hourly", lambda _lake, _station: series)
    monkeypatch.setattr(monitoring, "load_model", lambda *a, **k: loaded)
    result = _materialize_monitor(lake, store)
    failures = [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures
    return result, result.get_asset_check_evaluations()


def _hourly(values, start_h: int = 0) -> pd.Series:
    import numpy as np

    values = np.asarray(values, dtype=float)
    return pd.Series(values, index=(np.arange(values.size, dtype=np.int64) + start_h) * HOUR)


def _daily_cycle(hours: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    return 15 + 5 * np.sin(2 * np.pi * h / 24) + rng.normal(0, 0.5, hours)


def test_a_champion_with_no_hour_since_its_release_reports_no_drift(lake, store, monkeypatch):
    series = _hourly(_daily_cycle(24 * 10))
    result, (check,) = _monitor(lake, store, monkeypatch, series, int(series.index[-1]), lambda X, ts: X[:, -1:])
    assert check.passed
    meta = result.asset_materializations_for_node("forecast__drift_report")[0].metadata
    assert meta["hours_since_release"].value == 0.0


def test_gaps_after_the_release_and_a_diverged_champion_do_not_break_the_report(lake, store, monkeypatch):
    """A week-long gap, then hours; the champion forecasts NaN and inf: no crash, NaN kept out of the verdict."""
    import numpy as np

    values = _daily_cycle(24 * 20)
    values[24 * 12: 24 * 15] = np.nan  # three days without observations after the release

    def diverged(X, ts):
        out = X[:, -1:].copy()
        out[::3] = np.nan
        out[1::3] = np.inf
        return out

    series = _hourly(values)
    _, (check,) = _monitor(lake, store, monkeypatch, series, int(series.index[24 * 10]), diverged)
    assert check.passed
    summary = check.metadata["summary"].value
    assert json.dumps(summary, allow_nan=False)  # the report's JSON stays standard JSON
    report = json.loads((station_dir(lake, dg.AssetKey(["forecast", "drift_report"]), "st")
                         / "drift_report.json").read_text())
    assert report["drifted"] is False


def test_a_station_whose_observations_are_gone_skips_or_reports_without_crashing(lake, store, monkeypatch):
    _monitor(lake, store, monkeypatch, pd.Series(dtype=float), 100 * HOUR, lambda X, ts: X[:, -1:])


def test_a_retrain_with_another_lookback_is_evaluated_instead_of_failing_on_the_champions_shape(lake, store,
                                                                                              monkeypatch):
    """AERO_FORECAST_LOOKBACK_H changed: the champion in service (24 h inputs) cannot forecast 48 h windows.

    Its predict raised, so every retrain failed at the evaluation and the station kept the old champion forever.
    """
    import numpy as np

    import aero_assets.forecast.observations as observations
    from aero_assets.keys import GRU_MODEL

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable: logged as a warning only
    hours = 24 * 21
    readings = pd.DataFrame({"station": "st", "ts": np.arange(hours, dtype=np.int64) * HOUR,
                             "temperature_c": _daily_cycle(hours), "windspeed_ms": np.nan, "pressure_hpa": np.nan})
    monkeypatch.setattr(observations, "read_observations", lambda *a, **k: readings)
    defs = dg.Definitions(assets=build_training_assets(ForecastSettings(gru_epochs=1, min_history_h=72)),
                          resources={"lake": lake, "model_store": store})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["st"])

        def run(keys, lookback):
            result = dg.materialize([defs.get_assets_def(k) for k in keys], instance=instance,
                                    resources=defs.resources, partition_key="st", raise_on_error=False,
                                    run_config={"ops": {"forecast__training_set": {"config": {"lookback": lookback}}}})
            failures = [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            assert result.success, failures
            return result

        run([TRAINING_SET, GRU_MODEL], 24)
        (version,) = store.versions("gru-st")
        _write_released(lake, "st", json.dumps({"current": {**GOOD_CHAMPION, "version": version}}).encode())
        result = run([TRAINING_SET, GRU_MODEL, MODEL_EVALUATION], 48)
    notes = result.asset_materializations_for_node("forecast__model_evaluation")[0].metadata["notes"].value
    assert any("lookback" in n and version in n for n in notes)
    evaluation = json.loads((station_dir(lake, MODEL_EVALUATION, "st") / "evaluation.json").read_text())
    in_service = [row for row in evaluation["table"] if row["model"] == "in_service"]
    assert in_service and in_service[0]["rmse"] is None  # no score on these windows: beats_champion passes


def test_the_routine_retrain_leaves_out_a_station_whose_training_is_in_flight(lake, store):
    """Two training chains of one station at once share its training set and evaluation files and race on
    released.json; the sensors check for a run in flight, the weekly schedule did not."""
    schedule = build_routine_retrain_schedule()
    repo = dg.Definitions(assets=build_training_assets(ForecastSettings()), schedules=[schedule],
                          resources={"lake": lake, "model_store": store}).get_repository_def()
    when = pd.Timestamp("2026-05-04 04:00", tz="UTC").to_pydatetime()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["a", "b"])
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
                                       tags={"aero/station": "a", "aero/chain": "training", "aero/trigger": "drift"}))
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo) as ctx:
            requests = schedule.evaluate_tick(ctx).run_requests
    assert [r.partition_key for r in requests] == ["b"]


class _NoTopic:
    """The landing half of the weather sensor: the topic does not exist, so nothing to land."""

    def identity(self, topic):
        return None


def _weather_ticker(lake, instance):
    """tick(cursor, rows) -> the weather sensor's result after a landing of `rows` ({station: n}), without a broker."""
    from aero_assets.forecast.observations import build_observation_assets
    from aero_assets.keys import WEATHER_OBSERVATIONS
    from resources import Topics
    from sensors.weather_observations import build_weather_sensor

    sensor = build_weather_sensor(Topics().weather_observations)
    settings = ForecastSettings()
    defs = dg.Definitions(assets=[*build_observation_assets(Topics()), *build_training_assets(settings),
                                  *build_monitor_assets(settings)], sensors=[sensor],
                          resources={"kafka": _NoTopic(), "lake": lake,
                                     "model_store": ModelStoreResource(root=str(lake.path.parent / "models"))})

    def tick(cursor, rows):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            WEATHER_OBSERVATIONS, metadata={"rows_per_station": dg.MetadataValue.json(rows)}))
        with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                     definitions=defs, resources=defs.resources) as context:
            return sensor.evaluate_tick(context)

    return tick


def test_a_station_asked_for_once_is_not_asked_for_as_new_at_every_landing_past_ten_thousand_stations(lake):
    """`asked` was cut to the alphabetically last 10,000 names right after adding one: a station sorting before
    them was dropped at once, so it counted as new (no row threshold) and was trained after every landing."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["aa"])
        tick = _weather_ticker(lake, instance)
        first = tick(WeatherCursor(asked=[f"zz-{i:05d}" for i in range(10_000)]).dump(), {"aa": 1})
        assert [r.tags["aero/trigger"] for r in first.run_requests] == ["new-station"]
        second = tick(first.cursor, {"aa": 1})
    assert not second.run_requests, [r.tags for r in second.run_requests]
    assert "aa" in WeatherCursor.load(second.cursor).asked


def test_the_weather_sensor_survives_a_damaged_champion_file_and_cursor_and_retrains_that_station(lake):
    _write_released(lake, "aa", b"\xff\xfe not json")
    _write_released(lake, "bb", json.dumps({"current": GOOD_CHAMPION}).encode())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(forecast_stations.name, ["aa", "bb"])
        result = _weather_ticker(lake, instance)('{"after_storage_id": Infinity', {"aa": 30, "bb": 30})
    chains = {r.partition_key: r.tags["aero/chain"] for r in result.run_requests}
    assert chains == {"aa": "training", "bb": "monitor"}
