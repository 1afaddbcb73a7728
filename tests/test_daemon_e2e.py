"""Nobody clicks anything: `aero simulate` publishes a run, the running daemon's sensor requests the
chain, the queued run executes in its own process, and the run is landed, QC'd, processed, measured,
compared and exported, with its checks passed.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from aero_assets.keys import QC_REPORT, RAW_RUN, RUN_EXPORT, RUNS_TOPIC_ASSET
from aero_assets.windtunnel.analytics import QC_BLOCKING
from aero_assets.windtunnel.assets import COUNT_CHECK
from tests.conftest import REPO, running_daemon, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.daemon]
BIN = Path(sys.executable).parent


def _stack(tmp_path: Path, broker, **extra_env: str) -> tuple[Path, Path, dict]:
    """(AERO_HOME, DAGSTER_HOME with the repo's dagster.yaml, the environment of the processes)."""
    home = tmp_path / "aero"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return home, dagster_home, {**os.environ, "AERO_HOME": str(home), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap,
                                "DAGSTER_HOME": str(dagster_home), **extra_env}


def test_the_daemon_lands_a_simulated_run_without_any_manual_step(tmp_path, broker):
    home, dagster_home, env = _stack(tmp_path, broker)

    sim = subprocess.run([str(BIN / "aero"), "simulate", "windtunnel", "--runs", "1", "--duration", "1",
                          "--session", "e2e", "--seed", "1"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    [run_id] = json.loads(sim.stdout.strip().splitlines()[-1])["runs"]
    assert "simulate windtunnel" in sim.stderr, "a progress bar is shown on stderr"
    assert (home / "ground_truth" / "windtunnel" / f"{run_id}.json").exists()

    with running_daemon(tmp_path, env, dagster_home) as instance:
        def materialized(key):
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=5).records
            return [r for r in recs if r.partition_key == run_id]

        [export] = wait_for(lambda: materialized(RUN_EXPORT), timeout=180, interval=1.0,
                            what="the daemon to run the chain up to the export")
        wait_for(lambda: instance.get_run_by_id(export.run_id).is_finished, timeout=60, what="the run to end")
        assert instance.get_run_by_id(export.run_id).status == dg.DagsterRunStatus.SUCCESS
        [rec] = materialized(RAW_RUN)
        assert rec.run_id == export.run_id, "one run carries the whole chain"
        md = rec.asset_materialization.metadata
        assert md["dagster/row_count"].value == md["expected_samples"].value == 38_800
        check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(RAW_RUN, COUNT_CHECK))
        assert check is not None and check.event.asset_check_evaluation.passed
        qc = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(QC_REPORT, QC_BLOCKING))
        assert qc is not None and qc.event.asset_check_evaluation.passed
        run = instance.get_run_by_id(rec.run_id)
        assert run.tags["dagster/sensor_name"] == "windtunnel_run_sensor"
        assert run.tags["aero/topic"] == "windtunnel.runs"
        topic_obs = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=RUNS_TOPIC_ASSET), limit=1)
        assert topic_obs.records, "the sensor observes the lifecycle topic on the asset graph"
    assert (home / "lake" / "windtunnel" / "raw_run" / f"run_id={run_id}" / "data.parquet").exists()
    assert (home / "exports" / run_id / "processed.csv").exists()


def test_the_daemon_lands_tire_readings_and_refreshes_the_current_hour_by_itself(tmp_path, broker, publisher):
    import time

    from aero_assets.keys import TIRE_ALERTS, TIRE_FLEET_STATUS, TIRE_WINDOWS
    from aero_assets.tires.assets import WINDOW_COUNT_CHECK, hour_key
    from tests.tires_data import S, fleet, publish

    home, dagster_home, env = _stack(tmp_path, broker, AERO_TIRES_LANDING_MAX_WAIT_S="1")
    start = (time.time_ns() // S - 300) * S  # the last five minutes: the open current hour (or the one before)
    readings = fleet(start, 240, vehicles=2, puncture_at=30, overheat_at=100)
    publish(publisher, "tires.raw", readings, per_message=4)
    hours = sorted({hour_key(h) for h in {(start // 3_600_000_000_000) * 3_600_000_000_000,
                                          ((start + 239 * S) // 3_600_000_000_000) * 3_600_000_000_000}})

    with running_daemon(tmp_path, env, dagster_home) as instance:
        def done(key):
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=20).records
            return {r.partition_key for r in recs} >= set(hours)

        wait_for(lambda: done(TIRE_FLEET_STATUS), timeout=240, interval=1.0,
                 what="the daemon to land the readings and refresh their hours")
        assert done(TIRE_WINDOWS) and done(TIRE_ALERTS)
        check = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(TIRE_WINDOWS, WINDOW_COUNT_CHECK))
        assert check is not None and check.event.asset_check_evaluation.passed
    import pyarrow.parquet as pq
    alerts = [pq.read_table(p) for p in (home / "lake" / "tires" / "alerts").glob("hour=*/data.parquet")]
    assert sorted(t for a in alerts for t in a["alert_type"].to_pylist()) == \
        ["high_temperature", "low_pressure", "rapid_pressure_loss"]


def test_the_daemon_summarises_and_publishes_every_lap_of_an_f1_session_by_itself(tmp_path, broker, kafka):
    from aero_assets.f1.assets import COUNT_CHECK as F1_COUNT_CHECK
    from aero_assets.f1.assets import analytics_counts
    from aero_assets.keys import F1_LAP_SUMMARIES, F1_PUBLISHED_LAPS

    _, dagster_home, env = _stack(tmp_path, broker)
    sim = subprocess.run([str(BIN / "aero"), "simulate", "f1", "--laps", "2", "--session", "e2e-f1", "--seed", "2"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    assert "simulate f1" in sim.stderr, "a progress bar is shown on stderr"
    laps = json.loads(sim.stdout.strip().splitlines()[-1])["laps"]
    assert list(laps) == ["0", "1", "2"]

    with running_daemon(tmp_path, env, dagster_home) as instance:
        def published():
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=F1_PUBLISHED_LAPS),
                                                   limit=5).records
            return [r for r in recs if r.partition_key == "e2e-f1"
                    and r.asset_materialization.metadata["laps_on_topic"].value == 3]

        [rec] = wait_for(published, timeout=180, interval=1.0, what="the daemon to summarise and publish")
        run = instance.get_run_by_id(rec.run_id)
        assert run.tags["dagster/sensor_name"] == "f1_telemetry_sensor"
        check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(F1_LAP_SUMMARIES,
                                                                                   F1_COUNT_CHECK))
        assert check is not None and check.event.asset_check_evaluation.passed
    assert analytics_counts(kafka, "f1.analytics") == {"e2e-f1:0": 1, "e2e-f1:1": 1, "e2e-f1:2": 1}


def test_the_daemon_lands_a_dropped_csv_and_its_day_by_itself(tmp_path, broker):
    """A CSV dropped into the inbox: the inbox sensor takes it once complete, the landing moves it to
    processed/, the readings sensor asks for its day, and the day's clean readings, anomalies and KPIs
    materialize with nobody clicking; a broken file ends in rejected/ with its reason."""
    from aero_assets.keys import RIG_KPIS
    from aero_assets.rig.assets import BALANCE_CHECK

    home, dagster_home, env = _stack(tmp_path, broker)
    inbox = home / "inbox" / "rig"
    inbox.mkdir(parents=True)
    lines = [f"2026-11-29T{h:02d}:{m:02d}:00Z,{55 + (h * 60 + m) % 7 * 0.1:.1f},1010.0,{100 + h:.1f}"
             for h in range(3) for m in range(0, 60, 6)]
    (inbox / "rig-21__nov29.csv").write_text("timestamp,temperature,pressure,uptime\n" + "\n".join(lines) + "\n")
    (inbox / "no header.csv").write_text("1,2,3\n")

    with running_daemon(tmp_path, env, dagster_home) as instance:
        def kpis():
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RIG_KPIS), limit=5).records
            return [r for r in recs if r.partition_key == "2026-11-29"]

        wait_for(kpis, timeout=180, interval=1.0, what="the daemon to land the CSV and build its day")
        check = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(["rig", "clean_readings"]), BALANCE_CHECK))
        assert check is not None and check.event.asset_check_evaluation.passed
    assert (inbox / "processed" / "rig-21__nov29.csv").exists()
    assert "no header" in (inbox / "rejected" / "no header.csv.reason.txt").read_text()
    import pyarrow.parquet as pq
    kpi = pq.read_table(home / "lake" / "rig" / "kpis" / "day=2026-11-29" / "data.parquet").to_pylist()
    assert [(r["rig_id"], r["readings"]) for r in kpi] == [("rig-21", 30)]


def test_the_daemon_trains_monitors_and_retrains_a_drifting_station_by_itself(tmp_path, broker, kafka):
    """Three calm weeks of a heatwave station and a calm one land; the daemon trains both and releases champions.
    The next week (the heatwave starts a day into it) lands; the heatwave station's drift check fails and
    drift_retrain_sensor launches a retrain tagged with its reason, which releases a new champion. The calm
    station is monitored and never retrained."""
    from aero_assets.forecast.assets import released_champion
    from resources import LakeResource
    from tests.test_forecast_drift_loop import RELEASE_DAYS, START, _publish, _stations

    home, dagster_home, env = _stack(tmp_path, broker, AERO_FORECAST_GRU_EPOCHS="2",
                                     AERO_FORECAST_MIN_HISTORY_H="72", AERO_WEATHER_LANDING_MAX_WAIT_S="1",
                                     MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    lake = LakeResource(root=str(home / "lake"))
    frame, _ = _stations()
    release_ts = START + RELEASE_DAYS * 86_400_000_000_000
    _publish(kafka, "weather.observations", frame[frame["ts"] < release_ts])

    with running_daemon(tmp_path, env, dagster_home) as instance:
        wait_for(lambda: released_champion(lake, "hw") and released_champion(lake, "calm"), timeout=300,
                 interval=1.0, what="the daemon to land the history and release both champions")
        first = released_champion(lake, "hw")
        _publish(kafka, "weather.observations", frame[frame["ts"] >= release_ts])

        def retrained():
            current = released_champion(lake, "hw")
            return current if current and current["trigger"] == "drift" else None

        current = wait_for(retrained, timeout=420, interval=1.0,
                           what="the drift check to fail and the sensor to release a retrained champion")
        runs = instance.get_run_records(dg.RunsFilter(tags={"aero/trigger": "drift"}))
        assert [r.dagster_run.tags["aero/station"] for r in runs] == ["hw"]
        tags = runs[0].dagster_run.tags
        assert tags["dagster/sensor_name"] == "drift_retrain_sensor" and "CUSUM" in tags["aero/drift_reason"]
        assert current["version"] != first["version"] and "CUSUM" in current["drift_reason"]
        calm_runs = instance.get_run_records(dg.RunsFilter(tags={"aero/station": "calm", "aero/chain": "training"}))
        assert [r.dagster_run.tags["aero/trigger"] for r in calm_runs] == ["new-station"]
        assert released_champion(lake, "calm")["trigger"] == "new-station"
