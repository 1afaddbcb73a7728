"""The per-station training chain under Dagster: observations, training set, GRU + Prophet, evaluation, champion."""

import json

import dagster as dg
import pytest

from aero_assets.forecast.assets import build_training_assets, released_champion
from aero_assets.forecast.observations import build_observation_assets
from aero_assets.forecast.settings import ForecastSettings
from aero_assets.keys import CHAMPION_MODEL, FORECAST_TRAINING_CHAIN, WEATHER_OBSERVATIONS, forecast_stations
from aero_assets.simulators.weather_publish import simulate_weather
from resources import ModelStoreResource

pytestmark = pytest.mark.broker


def _defs(settings, kafka, lake, tmp_path, **overrides):
    forecast = ForecastSettings(gru_epochs=2, min_history_h=72, **overrides)
    return dg.Definitions(
        assets=[*build_observation_assets(settings.topics), *build_training_assets(forecast)],
        resources={"kafka": kafka, "lake": lake, "model_store": ModelStoreResource(root=str(settings.models_dir))})


def _chain(defs, instance, station, **kwargs):
    instance.add_dynamic_partitions(forecast_stations.name, [station])
    return dg.materialize([defs.get_assets_def(k) for k in FORECAST_TRAINING_CHAIN], instance=instance,
                          resources=defs.resources, partition_key=station, raise_on_error=False, **kwargs)


def test_a_station_with_enough_history_trains_both_models_and_releases_a_champion(settings, kafka, lake, instance,
                                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable: training still succeeds
    simulate_weather(settings, "st-1", days=21, seed=4, kafka=kafka, progress=False)
    defs = _defs(settings, kafka, lake, tmp_path)
    dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    result = _chain(defs, instance, "st-1")
    assert result.success
    gru = result.asset_materializations_for_node("forecast__gru_model")[0].metadata
    assert gru["test_rmse"].value > 0 and "not logged" in gru["mlflow"].value
    champion = result.asset_materializations_for_node("forecast__champion_model")[0].metadata
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"metrics_finite", "beats_baselines", "beats_champion"}
    current = released_champion(lake, "st-1")
    if checks["beats_baselines"]:
        assert champion["released"].value and current["kind"] in ("gru", "prophet")
    else:  # two epochs may not beat the baselines: then nothing is released and the metadata says why
        assert current is None and "kept no champion" in champion["status"].value


def test_a_failed_gate_keeps_the_previous_champion_in_service(settings, kafka, lake, instance, tmp_path):
    simulate_weather(settings, "st-2", days=21, seed=5, kafka=kafka, progress=False)
    defs = _defs(settings, kafka, lake, tmp_path)
    dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    first = _chain(defs, instance, "st-2",
                   run_config={"ops": {"forecast__champion_model": {"config": {"margin": 0.0}}}})
    before = released_champion(lake, "st-2")
    # an impossible margin: no model beats the baselines by 99 %
    second = _chain(defs, instance, "st-2",
                    run_config={"ops": {"forecast__champion_model": {"config": {"margin": 0.99}}}})
    assert first.success
    failed = [c for c in second.get_asset_check_evaluations() if not c.passed]
    # the same data and seeds retrain the same model: it ties the champion in service, which is no win either
    assert [c.check_name for c in failed] == ["beats_baselines", "beats_champion"]
    assert released_champion(lake, "st-2") == before
    status = second.asset_materializations_for_node("forecast__champion_model")[0].metadata["status"].value
    assert status.startswith("kept") and "less 99%" in status


def test_too_little_history_skips_the_chain_with_a_reason(settings, kafka, lake, instance, tmp_path):
    simulate_weather(settings, "st-3", days=1, seed=6, kafka=kafka, progress=False)
    defs = _defs(settings, kafka, lake, tmp_path)
    dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    result = _chain(defs, instance, "st-3")
    assert result.success and not result.asset_materializations_for_node("forecast__training_set")
    observed = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert "fewer than the 72" in json.dumps(str(observed))
    assert CHAMPION_MODEL not in {m.asset_key for m in result.get_asset_materialization_events()}
