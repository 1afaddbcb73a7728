"""`windtunnel/raw_run` materialised by Dagster from a real broker into real Parquet and DuckDB."""

import threading
import time

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import RAW_RUN, windtunnel_runs
from aero_assets.simulators.publish import publish_run
from aero_assets.simulators.windtunnel import simulate_run
from aero_assets.windtunnel.assets import COUNT_CHECK

pytestmark = pytest.mark.broker
T0 = 1_767_225_600 * 10**9


def _publish(settings, kafka, run_id="s1-run001", seconds=0.5, fault_rate=0.0, **kw):
    run = simulate_run(run_id, duration_s=seconds, started_ns=T0, seed=3, fault_rate=fault_rate)
    publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                runs_topic=settings.topics.windtunnel_runs, session_id="s1", baseline_run_id=None,
                ground_truth_dir=settings.ground_truth_dir, **kw)
    return run


def _materialize(settings, instance, run_id, retries=0, wait=0.2):
    defs = build_definitions(settings)
    instance.add_dynamic_partitions(windtunnel_runs.name, [run_id])
    return dg.materialize(
        list(defs.assets),
        selection=[RAW_RUN], partition_key=run_id, instance=instance, resources=defs.resources,
        raise_on_error=False,
        run_config={"ops": {"windtunnel__raw_run": {"config": {"completeness_retries": retries,
                                                                "retry_wait_seconds": wait}}}},
    )


def _check(result):
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == COUNT_CHECK]
    return ev


def test_a_complete_run_lands_once_passes_its_check_and_is_queryable(settings, instance, kafka):
    run = _publish(settings, kafka)
    result = _materialize(settings, instance, run.run_id)
    assert result.success
    assert _check(result).passed
    [mat] = result.asset_materializations_for_node("windtunnel__raw_run")
    md = mat.metadata
    assert md["dagster/row_count"].value == run.sample_count == md["expected_samples"].value
    assert md["channels"].value == 72 and md["missing_channels"].value == "none"
    assert md["preview"].value.startswith("![plot](data:image/png;base64,")
    assert len(md["preview"].value) < 80_000, "plots stay small: they live in the event log"
    assert md["landing_samples"].value["dlq_messages"] == 0
    path = settings.lake_dir / "windtunnel" / "raw_run" / f"run_id={run.run_id}" / "data.parquet"
    assert pq.read_metadata(path).num_rows == run.sample_count
    # the landing step leaves the warehouse alone; the views sensor (or qc_report) creates the views
    defs = build_definitions(settings)
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=dict(defs.resources)) as ctx:
        defs.resolve_sensor_def("warehouse_views_sensor").evaluate_tick(ctx)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows, channels = con.execute("select count(*), count(distinct channel) from windtunnel.raw_run "
                             f"where run_id = '{run.run_id}'").fetchone()
    events = con.execute("select event from windtunnel.run_events order by event").fetchall()
    con.close()
    assert (rows, channels) == (run.sample_count, 72)
    assert events == [("run_finished",), ("run_started",)]
    # materialising again lands nothing new and rewrites the same run: still no duplicates
    again = _materialize(settings, instance, run.run_id)
    assert again.asset_materializations_for_node("windtunnel__raw_run")[0].metadata["dagster/row_count"].value \
        == run.sample_count


def test_an_incomplete_run_fails_the_blocking_check(settings, instance, kafka, publisher):
    run = _publish(settings, kafka)
    # the rig announces more samples than it delivered
    publisher.json(settings.topics.windtunnel_runs, {"event": "run_finished", "run_id": run.run_id,
                   "finished_at": "2026-01-01T00:01:00Z", "sample_count": run.sample_count + 100}, run.run_id)
    result = _materialize(settings, instance, run.run_id)
    assert not result.success
    ev = _check(result)
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert "announced" in ev.description
    mat = result.asset_materializations_for_node("windtunnel__raw_run")[0]
    assert mat.metadata["complete"].value is False


def test_a_run_whose_samples_are_still_arriving_is_retried_until_complete(settings, instance, kafka, publisher):
    run = simulate_run("s1-run002", duration_s=0.5, started_ns=T0, seed=4)
    half = run.table.num_rows // 2
    runs_topic, samples_topic = settings.topics.windtunnel_runs, settings.topics.windtunnel_samples
    publisher.json(runs_topic, {"event": "run_finished", "run_id": run.run_id, "finished_at": 1767225600500,
                                "sample_count": run.sample_count}, run.run_id)
    publisher.arrow(samples_topic, run.table.slice(0, half), run.run_id)
    landed = settings.lake_dir / "landing" / samples_topic / f"run_id={run.run_id}"

    def publish_the_rest_once_the_first_half_landed():  # (not after a fixed delay: a busy machine lands later)
        deadline = time.monotonic() + 120
        while not list(landed.glob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        publisher.arrow(samples_topic, run.table.slice(half), run.run_id)

    late = threading.Thread(target=publish_the_rest_once_the_first_half_landed)
    late.start()
    try:
        result = _materialize(settings, instance, run.run_id, retries=10, wait=0.5)
    finally:
        late.join()
    assert result.success and _check(result).passed
    assert _check(result).metadata["retries_used"].value >= 1


def test_a_block_published_twice_is_counted_once(settings, instance, kafka):
    run = _publish(settings, kafka)
    producer = kafka.producer()
    from aero_assets.simulators.publish import ARROW_HEADERS, arrow_blocks

    _, block = arrow_blocks(run.table, 1000)[0]
    producer.produce(settings.topics.windtunnel_samples, value=block, key=run.run_id.encode(), headers=ARROW_HEADERS)
    producer.flush(10)
    result = _materialize(settings, instance, run.run_id)
    md = result.asset_materializations_for_node("windtunnel__raw_run")[0].metadata
    assert md["duplicate_samples_dropped"].value == 1000
    assert _check(result).passed


def test_a_run_id_with_no_lifecycle_events_fails_with_a_clear_message(settings, instance, kafka):
    result = _materialize(settings, instance, "never-published")
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "No lifecycle events for run 'never-published'" in str(failure.step_failure_data.user_failure_data
                                                                  or failure.step_failure_data.error)


def _republish(settings, kafka, run_id, seed, later_s, announce_extra=0, publisher=None):
    """The same run id published again later (a rig re-running it, or `aero simulate` reusing ids)."""
    run = simulate_run(run_id, duration_s=0.5, started_ns=T0 + later_s * 10**9, seed=seed)
    publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                runs_topic=settings.topics.windtunnel_runs, session_id="s1", baseline_run_id=None,
                ground_truth_dir=settings.ground_truth_dir)
    if announce_extra:
        publisher.json(settings.topics.windtunnel_runs, {
            "event": "run_finished", "run_id": run_id, "finished_at": "2026-01-01T00:10:00Z",
            "sample_count": run.sample_count + announce_extra}, run_id)
    return run


def _values(settings, run_id):
    path = settings.lake_dir / "windtunnel" / "raw_run" / f"run_id={run_id}" / "data.parquet"
    return pq.read_table(path).sort_by([("channel", "ascending"), ("ts", "ascending")])


def test_a_run_id_published_again_is_a_new_attempt_and_raw_run_holds_only_that_attempt(settings, instance, kafka):
    first = _publish(settings, kafka)
    assert _check(_materialize(settings, instance, first.run_id)).passed
    second = _republish(settings, kafka, first.run_id, seed=11, later_s=60)
    result = _materialize(settings, instance, first.run_id)
    assert result.success and _check(result).passed, _check(result).description
    md = result.asset_materializations_for_node("windtunnel__raw_run")[0].metadata
    assert md["attempts"].value == 2 and md["samples_from_earlier_attempts"].value == first.sample_count
    got = _values(settings, first.run_id)
    want = second.table.sort_by([("channel", "ascending"), ("ts", "ascending")])
    assert got.num_rows == second.sample_count
    assert got["value"].equals(want["value"]) and got["ts"].equals(want["ts"]), "no sample of attempt 1 mixed in"


def test_a_complete_raw_run_is_never_overwritten_by_an_incomplete_later_attempt(settings, instance, kafka,
                                                                                publisher):
    first = _publish(settings, kafka)
    assert _check(_materialize(settings, instance, first.run_id)).passed
    before = _values(settings, first.run_id)
    _republish(settings, kafka, first.run_id, seed=12, later_s=60, announce_extra=50, publisher=publisher)
    result = _materialize(settings, instance, first.run_id)
    check = _check(result)
    assert not result.success and not check.passed
    assert "raw_run still holds the complete earlier attempt" in check.description
    assert _values(settings, first.run_id).equals(before), "the good file is untouched"
    rejected = list((settings.lake_dir / "windtunnel" / "raw_run_rejected").glob("**/*.parquet"))
    assert len(rejected) == 1, "the failed assembly is kept for inspection, beside raw_run"


def test_a_rerun_with_the_same_timestamps_replaces_the_earlier_attempts_values(settings, instance, kafka):
    first = _publish(settings, kafka)
    assert _check(_materialize(settings, instance, first.run_id)).passed
    second = _republish(settings, kafka, first.run_id, seed=13, later_s=0)  # same started_at, same ts grid
    result = _materialize(settings, instance, first.run_id)
    check = _check(result)
    assert check.passed and "replaced by the newest" in check.description
    want = second.table.sort_by([("channel", "ascending"), ("ts", "ascending")])
    assert _values(settings, first.run_id)["value"].equals(want["value"])


def test_an_attempt_whose_start_is_not_a_whole_microsecond_keeps_all_its_samples(settings, instance, kafka):
    first = _publish(settings, kafka)
    assert _check(_materialize(settings, instance, first.run_id)).passed
    run = simulate_run(first.run_id, duration_s=0.5, started_ns=T0 + 60 * 10**9 + 777, seed=14)
    publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                runs_topic=settings.topics.windtunnel_runs, session_id="s1", baseline_run_id=None)
    result = _materialize(settings, instance, first.run_id)
    assert _check(result).passed, _check(result).description
    assert _values(settings, first.run_id).num_rows == run.sample_count


def test_a_run_finished_that_overtook_its_run_started_still_completes_the_run(settings, instance, kafka, publisher):
    run = simulate_run("s1-run005", duration_s=0.5, started_ns=T0, seed=15)
    runs_topic = settings.topics.windtunnel_runs
    publisher.json(runs_topic, {"event": "run_finished", "run_id": run.run_id, "finished_at": "2026-01-01T00:01:00Z",
                                "sample_count": run.sample_count}, run.run_id)
    publisher.json(runs_topic, {"event": "run_started", "run_id": run.run_id, "session_id": "s1",
                                "started_at": "2026-01-01T00:00:00Z", "config": {}, "baseline_run_id": None},
                   run.run_id)
    publisher.arrow(settings.topics.windtunnel_samples, run.table, run.run_id)
    result = _materialize(settings, instance, run.run_id)
    assert result.success and _check(result).passed, _check(result).description
