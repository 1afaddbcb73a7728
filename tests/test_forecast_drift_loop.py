"""The champion's life under Dagster: landing -> sensor -> training -> release -> predictions -> drift -> retrain.

A calm and a heatwave station share a real broker. Their first three weeks land and train; the
next week (the heatwave starts one day into it) lands and is monitored. The heatwave station's
`drift` check fails, `drift_retrain_sensor` asks for a retrain on a window starting before the
onset, with the reason in the run's tags, and the retrain releases a new champion; the calm
station's check passes and nothing is asked for it.
"""

import dagster as dg
import pandas as pd
import pytest

from aero_assets.forecast.assets import build_training_assets, released_champion
from aero_assets.forecast.monitor import RetrainPolicy
from aero_assets.forecast.monitoring_assets import build_monitor_assets, read_predictions
from aero_assets.forecast.observations import build_observation_assets
from aero_assets.forecast.settings import ForecastSettings
from aero_assets.forecast.simulate import NS_PER_DAY, NS_PER_HOUR, simulate_station
from aero_assets.keys import (
    DRIFT_CHECK,
    DRIFT_REPORT,
    FORECAST_MONITOR_CHAIN,
    FORECAST_TRAINING_CHAIN,
    PREDICTIONS,
    WEATHER_OBSERVATIONS,
    forecast_stations,
)
from aero_assets.simulators.weather_publish import observation_messages
from resources import ModelStoreResource
from sensors.drift_retrain import DriftCursor, build_drift_retrain_sensor
from sensors.kafka_events import LandingPolicy
from sensors.weather_observations import WeatherCursor, build_weather_sensor

pytestmark = pytest.mark.broker

START = pd.Timestamp("2026-05-01").value
RELEASE_DAYS = 21


def _publish(kafka, topic, frame):
    producer = kafka.producer()
    for station, part in frame.groupby("station"):
        for value in observation_messages(part):
            producer.produce(topic, value=value, key=station.encode())
    assert producer.flush(30) == 0


def _stations():
    onset = START + (RELEASE_DAYS + 1) * NS_PER_DAY
    wave, _ = simulate_station("hw", START, RELEASE_DAYS + 7, mode="heatwave", heatwave_start_ns=onset, seed=2)
    calm, _ = simulate_station("calm", START, RELEASE_DAYS + 7, mode="calm", seed=3)
    return pd.concat([wave, calm]), onset


def _run(defs, instance, request: dg.RunRequest):
    keys = request.asset_selection
    return dg.materialize([defs.get_assets_def(k) for k in keys], instance=instance, resources=defs.resources,
                          partition_key=request.partition_key, run_config=request.run_config or {},
                          tags=request.tags, raise_on_error=False)


def _tick(sensor, instance, defs, cursor):
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 resources=defs.resources, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_a_heatwave_fails_the_drift_check_and_the_sensor_retrains_that_station_only(settings, kafka, lake,
                                                                                     instance, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable: logged as a warning only
    topic = settings.topics.weather_observations
    forecast = ForecastSettings(gru_epochs=2, min_history_h=72)
    weather_sensor = build_weather_sensor(topic, LandingPolicy(min_messages=1, max_wait_s=0.0))
    retrain_sensor = build_drift_retrain_sensor(RetrainPolicy())  # 168 h cool-down, 96 post-onset hours, 7 days before
    defs = dg.Definitions(
        assets=[*build_observation_assets(settings.topics), *build_training_assets(forecast),
                *build_monitor_assets(forecast)],
        sensors=[weather_sensor, retrain_sensor],
        resources={"kafka": kafka, "lake": lake, "model_store": ModelStoreResource(root=str(settings.models_dir))})
    frame, onset = _stations()
    release_ts = START + RELEASE_DAYS * NS_PER_DAY

    # 1. three calm weeks land: the sensor lands them, then adds both stations and asks for their training
    _publish(kafka, topic, frame[frame["ts"] < release_ts])
    first = _tick(weather_sensor, instance, defs, None)
    assert [r.asset_selection for r in first.run_requests] == [[WEATHER_OBSERVATIONS]]
    assert _run(defs, instance, first.run_requests[0]).success
    second = _tick(weather_sensor, instance, defs, first.cursor)
    assert sorted(second.dynamic_partitions_requests[0].partition_keys) == ["calm", "hw"]
    training = [r for r in second.run_requests if r.asset_selection == FORECAST_TRAINING_CHAIN]
    assert sorted(r.partition_key for r in training) == ["calm", "hw"]
    assert {r.tags["aero/trigger"] for r in training} == {"new-station"}
    for request in training:
        assert _run(defs, instance, request).success
    first_champions = {s: released_champion(lake, s) for s in ("calm", "hw")}
    assert all(first_champions.values()), "both stations need a champion for the rest of the test"
    assert first_champions["hw"]["data_last_ts"] == release_ts - NS_PER_HOUR

    # 2. the next week (heatwave from day one) lands; both stations are now monitored, not retrained
    _publish(kafka, topic, frame[frame["ts"] >= release_ts])
    third = _tick(weather_sensor, instance, defs, second.cursor)
    assert _run(defs, instance, third.run_requests[-1]).success  # the landing
    fourth = _tick(weather_sensor, instance, defs, third.cursor)
    monitor = [r for r in fourth.run_requests if r.asset_selection == FORECAST_MONITOR_CHAIN]
    assert sorted(r.partition_key for r in monitor) == ["calm", "hw"]
    verdicts = {}
    for request in monitor:
        result = _run(defs, instance, request)
        assert result.success  # a failed drift check is a verdict, not a failed run
        (check,) = result.get_asset_check_evaluations()
        verdicts[request.partition_key] = check
    assert verdicts["calm"].passed and not verdicts["hw"].passed
    summary = verdicts["hw"].metadata["summary"].value
    assert onset <= summary["alarm_ts"] <= onset + 24 * NS_PER_HOUR
    assert abs(summary["onset_ts"] - onset) <= 12 * NS_PER_HOUR
    preds = read_predictions(lake, "hw")
    assert preds["target_ts"].min() == release_ts and preds["actual"].isna().sum() == 1  # the next hour

    # 3. the drift sensor asks for one retrain of the heatwave station, from before the onset, with its reason
    retrain = _tick(retrain_sensor, instance, defs, None)
    (request,) = retrain.run_requests
    assert request.partition_key == "hw" and request.asset_selection == FORECAST_TRAINING_CHAIN
    assert request.tags["aero/trigger"] == "drift" and "CUSUM" in request.tags["aero/drift_reason"]
    train_from = pd.Timestamp(request.run_config["ops"]["forecast__training_set"]["config"]["start"]).value
    assert train_from == summary["onset_ts"] - 7 * NS_PER_DAY
    assert request.run_config["ops"]["forecast__gru_model"]["config"]["fine_tune"] is True
    assert DriftCursor.load(retrain.cursor).retrained_at == {"hw": summary["last_ts"]}
    assert DriftCursor.load(retrain.cursor).onsets == {"hw": [summary["onset_ts"]]}
    # a second look at the same (still failing) verdicts asks for nothing: one episode, one retrain
    again = _tick(retrain_sensor, instance, defs, retrain.cursor)
    assert not again.run_requests

    result = _run(defs, instance, request)
    assert result.success
    gru = result.asset_materializations_for_node("forecast__gru_model")[0].metadata
    assert gru["params"].value["fine_tune_from"]  # started from the station's GRU
    prophet = result.asset_materializations_for_node("forecast__prophet_model")[0].metadata
    assert prophet["trained"].value is False and "too few train hours" in prophet["skipped"].value
    new = released_champion(lake, "hw")
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"metrics_finite", "beats_baselines", "beats_champion"}
    # seeded and deterministic: the fine-tuned GRU beats both baselines and the old champion on post-onset hours
    assert checks == {"metrics_finite": True, "beats_baselines": True, "beats_champion": True}
    assert new["version"] != first_champions["hw"]["version"] and new["kind"] == "gru" and new["trigger"] == "drift"
    assert "CUSUM" in new["drift_reason"] and new["data_last_ts"] > onset
    assert released_champion(lake, "calm") == first_champions["calm"]
    # the retrained station's monitoring restarts from the new release
    monitor_again = _tick(weather_sensor, instance, defs, fourth.cursor)
    assert not monitor_again.run_requests  # nothing new landed
    assert WeatherCursor.load(monitor_again.cursor if monitor_again.cursor else fourth.cursor).after_storage_id


def test_drift_check_metadata_and_report_file_say_why(settings, kafka, lake, instance, tmp_path):
    """A drift report is readable on its own: verdict, onset, alarm, PSI/KS and the thresholds used."""
    import json

    from aero_assets.forecast.assets import station_dir

    topic = settings.topics.weather_observations
    forecast = ForecastSettings(gru_epochs=1, min_history_h=72)
    defs = dg.Definitions(
        assets=[*build_observation_assets(settings.topics), *build_training_assets(forecast),
                *build_monitor_assets(forecast)],
        resources={"kafka": kafka, "lake": lake, "model_store": ModelStoreResource(root=str(settings.models_dir))})
    frame, onset = _stations()
    wave = frame[frame["station"] == "hw"]
    release_ts = START + RELEASE_DAYS * NS_PER_DAY
    _publish(kafka, topic, wave[wave["ts"] < release_ts])
    dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    instance.add_dynamic_partitions(forecast_stations.name, ["hw"])
    chain = [defs.get_assets_def(k) for k in FORECAST_TRAINING_CHAIN]
    trained = dg.materialize(chain, instance=instance, resources=defs.resources, partition_key="hw",
                             run_config={"ops": {"forecast__champion_model": {"config": {"margin": 0.0}}}})
    assert trained.success and released_champion(lake, "hw") is not None
    _publish(kafka, topic, wave[wave["ts"] >= release_ts])
    dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    result = dg.materialize([defs.get_assets_def(k) for k in FORECAST_MONITOR_CHAIN], instance=instance,
                            resources=defs.resources, partition_key="hw")
    meta = result.asset_materializations_for_node("forecast__drift_report")[0].metadata
    assert meta["drifted"].value and meta["verdict"].value.startswith("drifted: CUSUM")
    assert abs(pd.Timestamp(meta["onset"].value).value - onset) <= 12 * NS_PER_HOUR
    assert meta["alarm"].value and 0 <= meta["delay_h"].value <= 24
    assert meta["plot"].value.startswith("![plot](data:image/png;base64,")
    report = json.loads((station_dir(lake, DRIFT_REPORT, "hw") / "drift_report.json").read_text())
    assert report["drifted"] and report["thresholds"]["cusum_k"] == 3.5 and report["psi"] > 0.2
    ahead = json.loads((station_dir(lake, PREDICTIONS, "hw") / "next_horizon.json").read_text())
    assert len(ahead["forecasts"]) == 1 and ahead["forecasts"][0]["target"] > meta["alarm"].value  # the next hour
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(DRIFT_REPORT, DRIFT_CHECK))
    assert record is not None and record.event.dagster_event.event_specific_data.metadata["station"].value == "hw"
