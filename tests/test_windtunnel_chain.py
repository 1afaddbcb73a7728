"""The wind-tunnel chain in Dagster: raw run -> QC (blocking) -> processing -> metrics -> comparison -> export.

A failed QC stops that run's chain and it is never exported; other runs carry on.
"""

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import (
    AERO_METRICS,
    PROCESSED_RUN,
    QC_REPORT,
    RAW_RUN,
    RUN_COMPARISON,
    RUN_EXPORT,
    WINDTUNNEL_RUN_CHAIN,
    windtunnel_runs,
)
from aero_assets.simulators.publish import publish_run
from aero_assets.simulators.windtunnel import RunConfig, simulate_run
from aero_assets.windtunnel.analytics import QC_BLOCKING

pytestmark = pytest.mark.broker
T0 = 1_767_225_600 * 10**9


def _publish(settings, kafka, run_id, baseline=None, fault_rate=0.0, seed=1, config=None, session="s1"):
    run = simulate_run(run_id, duration_s=6, started_ns=T0, seed=seed, fault_rate=fault_rate, config=config)
    publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                runs_topic=settings.topics.windtunnel_runs, session_id=session, baseline_run_id=baseline)
    return run


def _chain(settings, instance, run_id, run_config=None):
    defs = build_definitions(settings)
    instance.add_dynamic_partitions(windtunnel_runs.name, [run_id])
    result = dg.materialize(list(defs.assets), selection=WINDTUNNEL_RUN_CHAIN, partition_key=run_id,
                            instance=instance, resources=defs.resources, raise_on_error=False,
                            run_config=run_config)
    mats = {e.event_specific_data.materialization.asset_key: e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return result, mats, checks


def test_a_clean_session_runs_the_whole_chain_and_is_released(settings, instance, kafka):
    _publish(settings, kafka, "s1-run001")
    _publish(settings, kafka, "s1-run002", baseline="s1-run001", seed=2, config=RunConfig(ride_height_front_mm=20))
    res1, mats1, checks1 = _chain(settings, instance, "s1-run001")
    res2, mats2, _ = _chain(settings, instance, "s1-run002")
    assert res1.success and res2.success
    assert set(mats1) == set(WINDTUNNEL_RUN_CHAIN)
    assert checks1[QC_BLOCKING].passed
    assert mats1[QC_REPORT].metadata["run_status"].value == "pass"
    assert mats1[QC_REPORT].metadata["flags"].value.startswith("![plot](data:image/png;base64,")
    assert mats1[AERO_METRICS].metadata["cp_distribution"].value.startswith("![plot]")
    assert mats1[RUN_COMPARISON].metadata["is_baseline"].value is True
    assert mats2[RUN_COMPARISON].metadata["baseline_run_id"].value == "s1-run001"
    assert mats2[RUN_COMPARISON].metadata["significant_deltas"].value >= 1
    assert mats2[RUN_COMPARISON].metadata["deltas"].value.startswith("![plot]")
    export = settings.home / "exports" / "s1-run002"
    assert sorted(p.name for p in export.iterdir()) == [
        "metrics.csv", "metrics.parquet", "processed.csv", "processed.parquet", "qc_report.csv"]

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    qc_rows = con.execute("select run_id, count(*), count(distinct channel), min(status), max(run_status) "
                          "from windtunnel.qc_report group by 1 order by 1").fetchall()
    cl = con.execute("select run_id, value, ci95_low, ci95_high from windtunnel.aero_metrics "
                     "where kind = 'coefficient' and name = 'CL' order by 1").fetchall()
    delta = con.execute("select delta, significant from windtunnel.run_comparison "
                        "where run_id = 's1-run002' and metric = 'CL'").fetchone()
    con.close()
    assert qc_rows == [("s1-run001", 72, 72, "pass", "pass"), ("s1-run002", 72, 72, "pass", "pass")]
    assert all(lo < v < hi for _, v, lo, hi in cl)
    assert delta[0] > 0 and delta[1] is True


def test_a_run_with_heavy_faults_is_stopped_by_the_blocking_check_and_never_exported(settings, instance, kafka):
    _publish(settings, kafka, "s1-run001")
    _publish(settings, kafka, "s1-run002", baseline="s1-run001", fault_rate=0.5, seed=5)
    result, mats, checks = _chain(settings, instance, "s1-run002")
    assert not result.success
    assert set(mats) == {RAW_RUN, QC_REPORT}, "nothing downstream of a failed QC runs"
    assert not checks[QC_BLOCKING].passed and checks[QC_BLOCKING].severity == dg.AssetCheckSeverity.ERROR
    assert "channels failed" in checks[QC_BLOCKING].description
    assert not (settings.home / "exports" / "s1-run002").exists()
    # the failure is this run's only: the next run goes all the way
    ok, ok_mats, _ = _chain(settings, instance, "s1-run001")
    assert ok.success and RUN_EXPORT in ok_mats and PROCESSED_RUN in ok_mats


def test_a_variant_whose_announced_baseline_failed_qc_compares_to_the_first_passed_run(settings, instance, kafka):
    _publish(settings, kafka, "s1-run001", fault_rate=0.5, seed=5)  # the announced baseline is bad
    _publish(settings, kafka, "s1-run002", baseline="s1-run001", seed=2)
    _publish(settings, kafka, "s1-run003", baseline="s1-run001", seed=3, config=RunConfig(yaw_deg=3.0))
    assert not _chain(settings, instance, "s1-run001")[0].success
    _, mats2, _ = _chain(settings, instance, "s1-run002")
    _, mats3, _ = _chain(settings, instance, "s1-run003")
    assert mats2[RUN_COMPARISON].metadata["baseline_run_id"].value == "s1-run002"
    assert mats3[RUN_COMPARISON].metadata["baseline_run_id"].value == "s1-run002"
    assert "failed QC" in mats3[RUN_COMPARISON].metadata["baseline_chosen_by"].value


def test_numeric_looking_run_ids_keep_their_leading_zeros(settings, instance, kafka):
    _publish(settings, kafka, "007", session="s7")
    _publish(settings, kafka, "010", baseline=None, seed=2, session="s7")
    assert _chain(settings, instance, "007")[0].success
    _, mats, _ = _chain(settings, instance, "010")
    assert mats[RUN_COMPARISON].metadata["baseline_run_id"].value == "007"
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    ids = con.execute("select distinct run_id from windtunnel.qc_report order by 1").fetchall()
    con.close()
    assert ids == [("007",), ("010",)]


def test_a_baseline_that_fails_qc_on_a_rerun_is_not_used_with_its_old_metrics(settings, instance, kafka, tmp_path):
    import pyarrow.parquet as pq

    from aero_assets.windtunnel.analytics import _choose_baseline
    from aero_assets.windtunnel.raw_runs import read_run_events, run_info
    from resources import LakeResource

    _publish(settings, kafka, "s1-run001")
    _publish(settings, kafka, "s1-run002", baseline="s1-run001", seed=2)
    _chain(settings, instance, "s1-run001")
    _chain(settings, instance, "s1-run002")
    lake = LakeResource(root=str(settings.lake_dir))
    runs = settings.topics.windtunnel_runs
    info = run_info(read_run_events(lake.landing_dir(runs), "s1-run002"), "s1-run002")
    assert _choose_baseline(lake, runs, "s1-run002", info, wait=True)[0] == "s1-run001"
    # the baseline is re-run and now fails QC: its earlier metrics file is still in the lake
    qc_path = lake.partition_dir(QC_REPORT, run_id="s1-run001") / "data.parquet"
    qc = pq.read_table(qc_path)
    pq.write_table(qc.set_column(qc.schema.get_field_index("run_status"), "run_status",
                                 pa.array(["fail"] * qc.num_rows)), qc_path)
    chosen, how = _choose_baseline(lake, runs, "s1-run002", info, wait=True)
    assert chosen == "s1-run002" and "failed QC" in how


def test_a_variant_waits_for_an_earlier_session_run_still_in_flight(settings, instance, kafka):
    from aero_assets.windtunnel.analytics import _choose_baseline
    from aero_assets.windtunnel.raw_runs import read_run_events, run_info
    from resources import LakeResource

    _publish(settings, kafka, "s1-run001")  # published, not processed yet
    _publish(settings, kafka, "s1-run002", seed=2)  # no announced baseline
    no_wait = {"ops": {"windtunnel__run_comparison": {"config": {"baseline_wait_retries": 0}}}}
    _chain(settings, instance, "s1-run002", run_config=no_wait)
    lake = LakeResource(root=str(settings.lake_dir))
    runs = settings.topics.windtunnel_runs
    info = run_info(read_run_events(lake.landing_dir(runs), "s1-run002"), "s1-run002")
    assert _choose_baseline(lake, runs, "s1-run002", info, wait=True) == (None, "waiting")
    assert _choose_baseline(lake, runs, "s1-run002", info, wait=False)[0] == "s1-run002"


def test_a_zero_length_run_lands_and_fails_qc_with_a_clear_reason(settings, instance, kafka, publisher):
    runs = settings.topics.windtunnel_runs
    publisher.json(runs, {"event": "run_started", "run_id": "s1-empty", "session_id": "s1",
                          "started_at": "2026-01-01T00:00:00Z", "config": {}, "baseline_run_id": None}, "s1-empty")
    publisher.json(runs, {"event": "run_finished", "run_id": "s1-empty", "finished_at": "2026-01-01T00:00:01Z",
                          "sample_count": 0}, "s1-empty")
    result, mats, checks = _chain(settings, instance, "s1-empty")
    assert not result.success
    assert set(mats) == {RAW_RUN, QC_REPORT}
    assert mats[RAW_RUN].metadata["dagster/row_count"].value == 0
    assert not checks[QC_BLOCKING].passed and "no samples" in checks[QC_BLOCKING].description
    assert not (settings.home / "exports" / "s1-empty").exists()
