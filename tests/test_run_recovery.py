"""A landing run killed with SIGKILL (kill -9, OOM) must not wedge its topic.

With a running `dagster-daemon` and the repo's dagster.yaml (its timings shortened, no setting
added): the run worker is killed after it wrote its Parquet files and before it committed the
offsets, while it holds the `landing_windtunnel` pool slot. Then, with no manual step: the dead
run is marked failed, its slot is freed, the run is retried by run_retries, the retry gets the
slot and lands the run with every sample exactly once.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import TopicPartition
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.tags import WILL_RETRY_TAG
from dagster._core.test_utils import create_run_for_test

from aero_assets.keys import RAW_RUN, RUN_EXPORT, WINDTUNNEL_LANDING_POOL
from aero_assets.landing import LANDING_GROUP
from aero_assets.windtunnel.assets import COUNT_CHECK, LANDING_PAUSE_POINT
from tests.conftest import REPO, running_daemon, wait_for

BIN = Path(sys.executable).parent
SAMPLES = 38_800  # one second of tunnel time
RECOVERY_KEYS = ("run_monitoring", "run_retries")


@pytest.mark.parametrize("path", ["dagster.yaml", "docker/dagster.postgres.yaml"])
def test_both_instance_files_free_the_slots_of_dead_runs_and_retry_them(path):
    cfg, _ = dagster_instance_config(str((REPO / path).parent), (REPO / path).name)  # Dagster's own validation
    mon, retries = cfg["run_monitoring"], cfg["run_retries"]
    assert mon["enabled"] and mon["free_slots_after_run_end_seconds"] > 0
    assert mon["max_resume_run_attempts"] == 0, "the default run launcher cannot resume runs"
    assert retries == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert {k: cfg[k] for k in RECOVERY_KEYS} == {k: local[k] for k in RECOVERY_KEYS}, "same settings everywhere"
    assert cfg["nux"] == {"enabled": False}, "the first-visit modal would cover the catalog"
    assert cfg["telemetry"] == {"enabled": False}
    assert cfg["retention"]["sensor"]["purge_after_days"]["skipped"] >= 1, "sensor ticks must not grow forever"
    assert cfg["concurrency"]["runs"]["max_concurrent_runs"] >= 1


def test_a_dead_worker_is_retried_but_a_failing_asset_is_not():
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())

    @dg.asset
    def broken():
        raise ValueError("bad input")

    @dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="gated", blocking=True)])
    def gated():
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=False)])

    @dg.asset(deps=[gated])
    def released():
        pass

    with dg.instance_for_test(overrides={k: cfg[k] for k in RECOVERY_KEYS}) as instance:
        for assets in ([broken], [gated, released]):  # an asset failure; a failed blocking check (QC)
            failed = dg.materialize(assets, instance=instance, raise_on_error=False)
            assert not failed.success
            assert instance.get_run_by_id(failed.run_id).tags[WILL_RETRY_TAG] == "false"
        # what the code server reports when a run worker dies: a run failure without a failed step
        run = create_run_for_test(instance, job_name="landing")
        instance.report_run_failed(run, "Run execution process was terminated by signal 9 (SIGKILL).")
        assert instance.get_run_by_id(run.run_id).tags[WILL_RETRY_TAG] == "true"


def fast_copy_of_repo_instance(dagster_home: Path) -> dict:
    """The repo's dagster.yaml with its run-monitoring timings shortened; nothing missing is added."""
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    mon = cfg.get("run_monitoring", {})
    for key in ("poll_interval_seconds", "free_slots_after_run_end_seconds"):
        if key in mon:
            mon[key] = 1
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    return cfg


def paused_stack(tmp_path: Path, broker, settings, point: str) -> tuple[Path, Path, dict, Path]:
    """(AERO_HOME, DAGSTER_HOME, env, marker) for a daemon whose first run to reach `point` pauses there."""
    home = settings.home
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    fast_copy_of_repo_instance(dagster_home)
    marker = tmp_path / "paused"
    env = {**os.environ, "AERO_HOME": str(home), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap,
           "DAGSTER_HOME": str(dagster_home), "AERO_TEST_PAUSE_AT": point, "AERO_TEST_PAUSE_MARKER": str(marker),
           # the auto-retry daemon reads new run failures every 5 s by default
           "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1"}
    return home, dagster_home, env, marker


def pool_state(instance: dg.DagsterInstance) -> str:
    info = instance.event_log_storage.get_concurrency_info(WINDTUNNEL_LANDING_POOL)
    return (f"pool {WINDTUNNEL_LANDING_POOL}: limit {info.limit}, claimed by "
            f"{[(s.run_id[:8], s.step_key) for s in info.claimed_slots]}, "
            f"pending {[(s.run_id[:8], s.step_key) for s in info.pending_steps]}")


@pytest.mark.broker
@pytest.mark.daemon
def test_a_sigkilled_landing_run_frees_its_slot_and_is_retried_without_loss_or_duplicates(tmp_path, broker, kafka,
                                                                                          settings):
    home, dagster_home, env, marker = paused_stack(tmp_path, broker, settings, LANDING_PAUSE_POINT)

    sim = subprocess.run([str(BIN / "aero"), "simulate", "windtunnel", "--runs", "1", "--duration", "1",
                          "--session", "kill", "--seed", "3"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    [run_id] = json.loads(sim.stdout.strip().splitlines()[-1])["runs"]
    # the steady state: the landing group has committed offsets (here: 0), so files past them that a dead
    # landing left behind are orphans the next landing must remove, not data to resume after
    samples_topic = settings.topics.windtunnel_samples
    consumer = kafka.consumer(LANDING_GROUP)
    consumer.commit(offsets=[TopicPartition(samples_topic, p, 0) for p in kafka.identity(samples_topic).partitions],
                    asynchronous=False)
    consumer.close()

    with running_daemon(tmp_path, env, dagster_home) as instance:
        # 1. the sensor's run is landing: files written, offsets not yet committed, slot held
        wait_for(lambda: marker.exists() and marker.read_text().endswith("\n"), timeout=120, interval=0.1,
                 what="the landing run to reach the point between write and commit")
        pid, files_written = map(int, marker.read_text().split())
        assert files_written >= 1
        [killed] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert killed.tags["dagster/partition"] == run_id
        started = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        pids = [e.dagster_event.engine_event_data.metadata["pid"].value for e in started
                if e.message and e.message.startswith("Started process for run")]
        assert pids == [str(pid)], "the marker's pid is the run worker Dagster reported"
        info = instance.event_log_storage.get_concurrency_info(WINDTUNNEL_LANDING_POOL)
        assert [s.run_id for s in info.claimed_slots] == [killed.run_id], pool_state(instance)
        samples_dir = home / "lake" / "landing" / "windtunnel.samples" / f"run_id={run_id}"
        assert list(samples_dir.glob("*.parquet")), "the killed landing left uncommitted files"

        # 2. kill -9 the run worker
        os.kill(pid, signal.SIGKILL)

        # 3. it is marked failed (by the code server that launched it: the default run launcher
        #    cannot check a worker's health; see dagster.yaml)
        wait_for(lambda: instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE,
                 timeout=30, what="the killed run to be marked failed")

        # 4. retried by itself; the retry needs the killed run's pool slot
        def retry():
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": killed.run_id}))
            return runs[0] if runs else None

        retried = wait_for(retry, timeout=60, what="run_retries to launch a retry of the killed run")
        assert retried.tags["dagster/retry_number"] == "1"

        def finished():
            run = instance.get_run_by_id(retried.run_id)
            return run if run.is_finished else None

        try:
            done = wait_for(finished, timeout=150, interval=0.5, what="the retry to finish")
        except AssertionError as exc:
            run = instance.get_run_by_id(retried.run_id)
            raise AssertionError(f"{exc}; retry is {run.status.value}; {pool_state(instance)}") from None
        assert done.status == dg.DagsterRunStatus.SUCCESS, pool_state(instance)
        assert instance.get_run_by_id(killed.run_id).tags["dagster/auto_retry_run_id"] == retried.run_id

        info = instance.event_log_storage.get_concurrency_info(WINDTUNNEL_LANDING_POOL)
        assert not info.claimed_slots and not info.pending_steps, pool_state(instance)
        assert killed.run_id not in instance.event_log_storage.get_concurrency_run_ids()

        [raw] = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW_RUN), limit=5).records
        assert raw.run_id == retried.run_id and raw.partition_key == run_id
        md = raw.asset_materialization.metadata
        assert md["dagster/row_count"].value == md["expected_samples"].value == SAMPLES
        assert md["duplicate_samples_dropped"].value == 0
        assert md["landing_samples"].value["orphan_files_removed"] >= 1, "the retry cleaned up the kill"
        check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(RAW_RUN, COUNT_CHECK))
        assert check.run_id == retried.run_id and check.event.asset_check_evaluation.passed
        exports = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RUN_EXPORT), limit=5)
        assert [r.run_id for r in exports.records] == [retried.run_id]

    # no duplicate, no loss: the landed files hold every sample once, and so does raw_run
    landed = pa.concat_tables([pq.read_table(f, columns=["ts", "channel", "value", "_offset"])
                               for f in sorted(samples_dir.glob("*.parquet"))])
    assert landed.num_rows == SAMPLES
    keys = pc.binary_join_element_wise(landed["channel"], pc.cast(landed["ts"].cast(pa.int64()), pa.string()), "@")
    assert pc.count_distinct(keys).as_py() == SAMPLES
    offsets = np.unique(landed["_offset"].to_numpy())
    assert offsets.tolist() == list(range(offsets.size)), "every message of the topic landed"
    raw_file = pq.read_table(home / "lake" / "windtunnel" / "raw_run" / f"run_id={run_id}" / "data.parquet")
    assert raw_file.num_rows == SAMPLES


@pytest.mark.broker
@pytest.mark.daemon
def test_a_sigkilled_domain_run_is_retried_and_its_day_ends_balanced_with_no_duplicate(tmp_path, broker, settings):
    """A rig day's chain killed between its clean and quarantine files (the clean file of the killed run on
    disk, the quarantine not): marked failed, retried by itself, and the day ends with every input row once,
    clean or quarantined, its checks passed, nobody clicking."""
    from aero_assets.keys import RIG_CLEAN, RIG_KPIS, RIG_LANDING_POOL
    from aero_assets.rig.assets import BALANCE_CHECK, CLEAN_PAUSE_POINT

    home, dagster_home, env, marker = paused_stack(tmp_path, broker, settings, CLEAN_PAUSE_POINT)
    inbox = home / "inbox" / "rig"
    inbox.mkdir(parents=True)
    lines = [f"2026-11-29T{h:02d}:{m:02d}:00Z,{55 + m % 7 * 0.1:.1f},1010.0,{100 + h:.1f}"
             for h in range(3) for m in range(0, 60, 6)]
    lines += [lines[4], "2026-11-29T05:00:00Z,hot,1010.0,105.0"]  # a duplicate and an unparseable value
    (inbox / "rig-07__nov29.csv").write_text("timestamp,temperature,pressure,uptime\n" + "\n".join(lines) + "\n")
    day = "2026-11-29"

    with running_daemon(tmp_path, env, dagster_home) as instance:
        wait_for(lambda: marker.exists() and marker.read_text().endswith("\n"), timeout=180, interval=0.2,
                 what="the day's chain to reach the point between its clean and quarantine files")
        pid, paused_day = marker.read_text().split()
        assert paused_day == day
        [killed] = [r for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                    if r.tags.get("dagster/partition") == day]
        assert (home / "lake" / "rig" / "clean_readings" / f"day={day}" / "data.parquet").exists()
        assert not (home / "lake" / "rig" / "quarantine" / f"day={day}" / "data.parquet").exists()
        os.kill(int(pid), signal.SIGKILL)

        wait_for(lambda: instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE,
                 timeout=30, what="the killed run to be marked failed")

        def retry():
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": killed.run_id}))
            return runs[0] if runs and runs[0].is_finished else None

        retried = wait_for(retry, timeout=180, interval=0.5, what="run_retries to re-run the killed day")
        assert retried.status == dg.DagsterRunStatus.SUCCESS
        for key in (RIG_CLEAN, RIG_KPIS):
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=10).records
            assert [r.run_id for r in recs if r.partition_key == day] == [retried.run_id], key
        check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(RIG_CLEAN, BALANCE_CHECK))
        assert check.run_id == retried.run_id and check.event.asset_check_evaluation.passed
        info = instance.event_log_storage.get_concurrency_info(RIG_LANDING_POOL)
        assert not info.claimed_slots and not info.pending_steps

    lake = home / "lake" / "rig"
    clean = pq.read_table(lake / "clean_readings" / f"day={day}" / "data.parquet")
    quarantined = pq.read_table(lake / "quarantine" / f"day={day}" / "data.parquet")
    assert clean.num_rows + quarantined.num_rows == len(lines), "every input row once: clean or quarantined"
    assert clean.num_rows == 30 and quarantined.num_rows == 2
    keys = pc.binary_join_element_wise(clean["rig_id"], pc.cast(clean["ts"].cast(pa.int64()), pa.string()), "@")
    assert pc.count_distinct(keys).as_py() == clean.num_rows, "no duplicate reading"
