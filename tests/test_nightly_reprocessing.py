"""`nightly_reprocessing`: yesterday's partitions of every domain again, evaluated as the daemon would."""

from datetime import datetime

import dagster as dg
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import (
    CHAMPION_MODEL,
    QC_REPORT,
    RAW_RUN,
    RIG_CLEAN,
    TIRE_WINDOWS,
    forecast_stations,
    windtunnel_runs,
)
from resources.settings import load_settings
from sensors.nightly import WINDTUNNEL_REPROCESS_CHAIN, build_nightly_schedule, yesterday_utc


def _materialized(instance, key: dg.AssetKey, *partitions: str) -> None:
    for p in partitions:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=p))


def _evaluate(schedule, instance, when: datetime, repo):
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo) as ctx:
        return schedule.evaluate_tick(ctx)


@pytest.fixture
def repo(tmp_path):
    settings = load_settings({"AERO_HOME": str(tmp_path)})
    return build_definitions(settings).get_repository_def()


def test_the_nightly_run_asks_for_yesterdays_partitions_of_every_domain_and_only_those(repo):
    schedule = build_nightly_schedule("UTC")
    when = datetime.fromisoformat("2026-03-10T02:00:00+00:00")
    with dg.instance_for_test() as instance:
        assert _evaluate(schedule, instance, when, repo).skip_message  # an empty instance: nothing to redo
        _materialized(instance, TIRE_WINDOWS, "2026-03-09-00:00", "2026-03-09-23:00", "2026-03-08-23:00",
                      "2026-03-10-00:00")
        _materialized(instance, RIG_CLEAN, "2026-03-08", "2026-03-09")
        instance.add_dynamic_partitions(forecast_stations.name, ["calm-01", "new-02"])
        _materialized(instance, CHAMPION_MODEL, "calm-01")  # new-02 has no champion yet: training's job
        instance.add_dynamic_partitions(windtunnel_runs.name, ["s1-run001", "s1-run002", "s1-run003"])
        _materialized(instance, RAW_RUN, "s1-run001", "s1-run002")
        _materialized(instance, QC_REPORT, "s1-run001", "s1-run002")
        _materialized(instance, RAW_RUN, "s1-run002", "s1-run003")  # late samples re-landed run002; run003 unchecked
        tick = _evaluate(schedule, instance, when, repo)
    got = {(r.tags["aero/domain"], r.partition_key) for r in tick.run_requests}
    assert got == {("tires", "2026-03-09-00:00"), ("tires", "2026-03-09-23:00"), ("rig", "2026-03-09"),
                   ("forecast", "calm-01"), ("windtunnel", "s1-run002"), ("windtunnel", "s1-run003")}
    wind = next(r for r in tick.run_requests if r.tags["aero/domain"] == "windtunnel")
    assert list(wind.asset_selection) == WINDTUNNEL_REPROCESS_CHAIN and RAW_RUN not in wind.asset_selection
    assert all(r.run_key.startswith("nightly/2026-03-09/") and r.tags["aero/trigger"] == "nightly"
               for r in tick.run_requests)
    assert len({r.run_key for r in tick.run_requests}) == len(tick.run_requests)


def test_a_partition_already_in_flight_is_left_to_the_run_working_on_it(repo):
    schedule = build_nightly_schedule("UTC")
    when = datetime.fromisoformat("2026-03-10T02:00:00+00:00")
    with dg.instance_for_test() as instance:
        _materialized(instance, RIG_CLEAN, "2026-03-09")
        _materialized(instance, TIRE_WINDOWS, "2026-03-09-05:00")
        from dagster._core.test_utils import create_run_for_test

        create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
                            tags={"dagster/partition": "2026-03-09"})
        tick = _evaluate(schedule, instance, when, repo)
    assert [(r.tags["aero/domain"], r.partition_key) for r in tick.run_requests] == [("tires", "2026-03-09-05:00")]


def test_the_nights_day_follows_the_schedules_time_zone():
    # 02:00 in Tokyo on 10 March is 17:00 UTC on 9 March: "yesterday" is Tokyo's 9 March, 15:00 UTC 8th to 9th
    start, end = yesterday_utc(datetime.fromisoformat("2026-03-10T02:00:00+09:00"), "Asia/Tokyo")
    assert (start.isoformat(), end.isoformat()) == ("2026-03-08T15:00:00+00:00", "2026-03-09T15:00:00+00:00")
    # the night after the clocks go forward in London, yesterday had 23 hours
    start, end = yesterday_utc(datetime.fromisoformat("2026-03-30T02:00:00+01:00"), "Europe/London")
    assert (end - start).total_seconds() == 23 * 3600


def test_a_time_zone_setting_moves_the_schedule_and_the_rig_days_it_covers(repo):
    schedule = build_nightly_schedule("Asia/Tokyo")
    assert schedule.execution_timezone == "Asia/Tokyo" and schedule.cron_schedule == "0 2 * * *"
    when = datetime.fromisoformat("2026-03-10T02:00:00+09:00")
    with dg.instance_for_test() as instance:
        _materialized(instance, RIG_CLEAN, "2026-03-08", "2026-03-09", "2026-03-10")
        tick = _evaluate(schedule, instance, when, repo)
    # Tokyo's 9 March overlaps the UTC days 8 and 9 March
    assert sorted(r.partition_key for r in tick.run_requests) == ["2026-03-08", "2026-03-09"]


def test_the_code_location_has_the_nightly_schedule_running_at_two(repo):
    schedule = repo.get_schedule_def("nightly_reprocessing")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_each_nightly_request_is_a_valid_single_partition_subset_of_the_implicit_asset_job(repo):
    schedule = build_nightly_schedule("UTC")
    when = datetime.fromisoformat("2026-03-10T02:00:00+00:00")
    with dg.instance_for_test() as instance:
        _materialized(instance, TIRE_WINDOWS, "2026-03-09-07:00")
        _materialized(instance, RIG_CLEAN, "2026-03-09")
        instance.add_dynamic_partitions(forecast_stations.name, ["calm-01"])
        _materialized(instance, CHAMPION_MODEL, "calm-01")
        requests = _evaluate(schedule, instance, when, repo).run_requests
        job = repo.get_implicit_global_asset_job_def()
        for r in requests:
            subset = job.get_subset(asset_selection=set(r.asset_selection))
            assert subset.partitions_def is not None
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                assert subset.partitions_def.has_partition_key(r.partition_key)
            checks = {c.asset_key for c in repo.asset_graph.asset_check_keys if c.asset_key in r.asset_selection}
            assert checks, f"{r.tags['aero/domain']}: its asset checks run with it"
    assert len(requests) == 3


def test_aero_backfill_asks_the_daemon_for_a_range_of_days_as_one_asset_backfill(repo):
    from aero_assets.backfill import BackfillError, partition_keys, submit_backfill

    with dg.instance_for_test() as instance:
        keys = partition_keys("rig", instance, "2026-03-01", "2026-03-03", None)
        assert keys == ["2026-03-01", "2026-03-02", "2026-03-03"]
        hours = partition_keys("tires", instance, "2026-03-01", None, None)
        assert len(hours) == 24 and hours[0] == "2026-03-01-00:00" and hours[-1] == "2026-03-01-23:00"
        assert partition_keys("tires", instance, "2026-03-01-05:00", "2026-03-01-06:00", None) == [
            "2026-03-01-05:00", "2026-03-01-06:00"]
        backfill_id = submit_backfill(instance, repo, "rig", keys)
        backfill = instance.get_backfill(backfill_id)
        assert backfill.status.value == "REQUESTED" and backfill.tags["aero/trigger"] == "backfill"
        subset = backfill.asset_backfill_data.target_subset
        assert {k.to_user_string() for k in subset.asset_keys} == {"rig/clean_readings", "rig/anomalies", "rig/kpis"}
        assert set(subset.get_partitions_subset(RIG_CLEAN).get_partition_keys()) == set(keys)
        instance.add_dynamic_partitions(forecast_stations.name, ["b", "a"])
        assert partition_keys("forecast", instance, None, None, None) == ["a", "b"]
        for bad, match in ((("rig", "2026-03-05", "2026-03-01", None), "before"),
                           (("rig", "March", None, None), "neither a day"),
                           (("forecast", None, None, ["zz"]), "no such partition"),
                           (("forecast", "2026-03-01", None, None), "named, not dated"),
                           (("rig", None, None, None), "--from")):
            with pytest.raises(BackfillError, match=match):
                partition_keys(bad[0], instance, *bad[1:])


def test_run_retention_deletes_finished_runs_and_never_one_in_flight():
    from dagster._core.test_utils import create_run_for_test

    from sensors.housekeeping import run_retention

    with dg.instance_for_test() as instance:
        done = [create_run_for_test(instance, job_name="j", status=s).run_id
                for s in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
        running = create_run_for_test(instance, job_name="j", status=dg.DagsterRunStatus.STARTED).run_id
        result = run_retention.execute_in_process(
            instance=instance, run_config={"ops": {"purge_old_runs": {"config": {"older_than_days": 0}}}})
        assert result.success and result.output_for_node("purge_old_runs") == 2
        assert all(instance.get_run_by_id(r) is None for r in done)
        assert instance.get_run_by_id(running) is not None
        assert instance.get_run_by_id(result.run_id) is not None, "the purge keeps its own run"
        kept = run_retention.execute_in_process(instance=instance)  # the default: 90 days
        assert kept.output_for_node("purge_old_runs") == 0
