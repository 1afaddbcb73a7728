"""Dagster wiring of the wind-tunnel landing: `windtunnel/raw_run` and its blocking check."""


import time

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aero_assets import crash_points
from aero_assets.codec import RunEventsDecoder, WindtunnelSamplesDecoder
from aero_assets.keys import (
    RAW_RUN,
    RUNS_TOPIC_ASSET,
    SAMPLES_TOPIC_ASSET,
    WINDTUNNEL,
    WINDTUNNEL_LANDING_POOL,
    windtunnel_runs,
)
from aero_assets.landing import land_topic
from aero_assets.plots import time_series_plot
from aero_assets.windtunnel.catalog import load_catalog
from aero_assets.windtunnel.raw_runs import assemble_samples, read_run_events, run_info
from resources import KafkaResource, LakeResource, Topics, write_parquet_atomic

COUNT_CHECK = "sample_count_matches_run_finished"
# a samples landing's files are durable, its offsets not yet committed (tests/test_run_recovery.py kills it here)
LANDING_PAUSE_POINT = "windtunnel/raw_run:before_commit"
COMPLETE_KEY, ATTEMPT_KEY = "aero.complete", "aero.attempt_started_ns"  # Parquet schema metadata of raw_run
PLOT_CHANNELS = ("FLOW_V", "FB_FZ", "FB_FX", "PT_01")


class RawRunConfig(dg.Config):
    """How long to wait for samples that are still arriving before releasing the run as incomplete."""

    completeness_retries: int = 6
    retry_wait_seconds: float = 5.0


def build_windtunnel_landing(topics: Topics) -> list:
    samples_topic, runs_topic = topics.windtunnel_samples, topics.windtunnel_runs
    topic_specs = [
        dg.AssetSpec(SAMPLES_TOPIC_ASSET, group_name=WINDTUNNEL, kinds={"kafka"},
                     description=f"Kafka topic `{samples_topic}`: Arrow/JSON sample blocks, key = run id."),
        dg.AssetSpec(RUNS_TOPIC_ASSET, group_name=WINDTUNNEL, kinds={"kafka"},
                     description=f"Kafka topic `{runs_topic}`: run_started / run_finished lifecycle events."),
    ]

    @dg.asset(
        key=RAW_RUN,
        group_name=WINDTUNNEL,
        partitions_def=windtunnel_runs,
        deps=[SAMPLES_TOPIC_ASSET, RUNS_TOPIC_ASSET],
        pool=WINDTUNNEL_LANDING_POOL,
        kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                COUNT_CHECK, asset=RAW_RUN, blocking=True,
                description="Landed samples equal the sample_count announced in run_finished.",
            )
        ],
        description="All samples of one wind-tunnel run, landed exactly once from Kafka into the lake.",
    )
    def raw_run(
        context: dg.AssetExecutionContext,
        config: RawRunConfig,
        kafka: KafkaResource,
        lake: LakeResource,
    ) -> dg.MaterializeResult:
        run_id = context.partition_key
        t0 = time.perf_counter()
        landed_events = land_topic(kafka, lake.path, runs_topic, RunEventsDecoder())
        landed_samples = land_topic(kafka, lake.path, samples_topic, WindtunnelSamplesDecoder(),
                                    before_commit=crash_points.hook(LANDING_PAUSE_POINT, lambda files: str(len(files))))
        for res in (landed_events, landed_samples):
            context.log.info(
                f"landed {res.messages} messages ({res.rows} rows) from {res.topic}"
                + (f"; {res.dlq_messages} to the DLQ: {dict(res.dlq_reasons)}" if res.dlq_messages else "")
            )

        events = read_run_events(lake.landing_dir(runs_topic), run_id)
        if events is None:
            raise dg.Failure(
                description=f"No lifecycle events for run {run_id!r} have been landed from {runs_topic}.",
                metadata={"hint": "Check the run id; a run must publish run_started/run_finished first."},
            )
        info = run_info(events, run_id)
        assembled = assemble_samples(lake.landing_dir(samples_topic), run_id,
                                     since_ns=info.started_ns if info.attempts > 1 else None)
        samples, duplicates, samples_inc = assembled.table, assembled.duplicates, assembled.incarnation
        complete = info.finished and samples.num_rows == info.expected_samples
        if not complete and context.retry_number < config.completeness_retries:
            raise dg.RetryRequested(max_retries=config.completeness_retries,
                                    seconds_to_wait=config.retry_wait_seconds)

        out_dir = lake.partition_dir(RAW_RUN, run_id=run_id)
        target = out_dir / "data.parquet"
        samples = samples.replace_schema_metadata({COMPLETE_KEY: "true" if complete else "false",
                                                   ATTEMPT_KEY: str(info.started_ns or "")})
        kept = not complete and _holds_complete_run(target)
        if kept:
            # a run that passed its count check is never replaced by one that does not: the failed
            # assembly goes beside it for inspection, and the check below reports the failure
            target = lake.asset_dir(RAW_RUN).with_name("raw_run_rejected") / f"run_id={run_id}" / \
                f"attempt-{info.started_ns or 0}.parquet"
            context.log.warning(f"attempt {info.attempts} of {run_id} is incomplete; keeping the complete earlier "
                                f"raw_run and writing this assembly to {target}")
        size = write_parquet_atomic(samples, target)
        # no warehouse view refresh here: this step holds the landing pool, and an analyst holding
        # the DuckDB file must never slow a landing (qc_report and warehouse_views_sensor do it)

        catalog = load_catalog()
        channels = pc.unique(samples["channel"]).to_pylist()
        unknown = sorted(set(channels) - set(catalog.channels))
        missing = sorted(set(catalog.channels) - set(channels))
        if info.finished:
            desc = f"{samples.num_rows:,} samples landed, {info.expected_samples:,} announced"
        else:
            desc = f"{samples.num_rows:,} samples landed, but run_finished has not arrived"
        if info.attempts > 1:
            desc += (f" (attempt {info.attempts} of this run id; {assembled.earlier_attempts:,} samples of "
                     "earlier attempts left out"
                     + (f", {duplicates:,} at timestamps an earlier attempt also had replaced by the newest"
                        if duplicates else "") + ")")
        if kept:
            desc += "; raw_run still holds the complete earlier attempt"
        check = dg.AssetCheckResult(
            check_name=COUNT_CHECK,
            passed=bool(complete),
            severity=dg.AssetCheckSeverity.ERROR,
            description=desc,
            metadata={"landed": samples.num_rows, "expected": int(info.expected_samples or -1),
                      "retries_used": context.retry_number},
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": samples.num_rows,
                "expected_samples": int(info.expected_samples) if info.finished else -1,
                "complete": bool(complete),
                "channels": len(channels),
                "missing_channels": ", ".join(missing) or "none",
                "unknown_channels": ", ".join(unknown) or "none",
                "duplicate_samples_dropped": duplicates,
                "repaired_timestamps": dg.MetadataValue.json(assembled.repaired),
                "session_id": info.session_id or "",
                "baseline_run_id": info.baseline_run_id or "",
                "run_config": dg.MetadataValue.json(info.config),
                "events_incarnation": info.incarnation,
                "samples_incarnation": samples_inc or "",
                "path": dg.MetadataValue.path(str(out_dir / "data.parquet")),
                "attempts": info.attempts,
                "samples_from_earlier_attempts": assembled.earlier_attempts,
                "kept_previous_complete_file": bool(kept),
                "written_to": dg.MetadataValue.path(str(target)),
                "bytes": size,
                "landing_samples": dg.MetadataValue.json(landed_samples.metadata()),
                "landing_events": dg.MetadataValue.json(landed_events.metadata()),
                "dlq_messages": landed_samples.dlq_messages + landed_events.dlq_messages,
                "seconds": round(time.perf_counter() - t0, 3),
                "preview": _plot(samples, info.started_ns, run_id),
            },
            check_results=[check],
        )

    return [*topic_specs, raw_run]


def _holds_complete_run(path) -> bool:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return False
    return meta.get(COMPLETE_KEY.encode()) == b"true"


def _plot(samples: pa.Table, started_ns: int | None, run_id: str) -> dg.MetadataValue:
    series = {}
    if samples.num_rows:
        t0 = started_ns if started_ns is not None else int(pc.min(samples["ts"].cast(pa.int64())).as_py())
        for ch in PLOT_CHANNELS:
            sel = samples.filter(pc.equal(samples["channel"], ch))
            if sel.num_rows:
                t = (sel["ts"].cast(pa.int64()).to_numpy() - t0) / 1e9
                series[ch] = (t, sel["value"].to_numpy(zero_copy_only=False).astype(np.float64))
    return time_series_plot(series, f"run {run_id}: first channels")
