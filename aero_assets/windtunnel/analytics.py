"""Dagster wiring of wind-tunnel analytics: QC report (blocking), processed run, metrics, comparison, export.

Everything numeric lives in qc.py, processing.py and metrics.py; these asset bodies read inputs
from the lake, call them, write Parquet (hive-partitioned by run id), refresh the DuckDB view,
and attach metadata and plots.
"""

import shutil
import time
import uuid

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aero_assets.keys import (
    AERO_METRICS,
    PROCESSED_RUN,
    QC_REPORT,
    RAW_RUN,
    RUN_COMPARISON,
    RUN_EXPORT,
    WINDTUNNEL,
    windtunnel_runs,
)
from aero_assets.plots import time_series_plot
from aero_assets.windtunnel.catalog import load_catalog
from aero_assets.windtunnel.metrics import compare_runs, compute_metrics
from aero_assets.windtunnel.plots import cp_plot, deltas_plot, qc_flags_plot
from aero_assets.windtunnel.processing import FLAG_NAMES, GAP, ProcessedRun, ProcessingConfig, process_run
from aero_assets.windtunnel.qc import FAIL, PASS, QCThresholds, RunQC, run_qc
from aero_assets.windtunnel.raw_runs import read_run_events, run_info, session_runs
from aero_assets.windtunnel.series import RunSeries, read_series
from resources import LakeResource, Topics, WarehouseResource, write_parquet_atomic

QC_BLOCKING = "qc_run_not_failed"
QC_WARNINGS = "qc_no_warnings"
PROCESSED_CHANNELS = ("FLOW_V", "FB_FZ", "FB_FX", "PT_01")


class QCConfig(dg.Config):
    """Thresholds of the QC checks (see aero_assets/windtunnel/qc.py for what each one means)."""

    gap_factor: float = QCThresholds.gap_factor
    missing_fail_fraction: float = QCThresholds.missing_fail_fraction
    spike_z: float = QCThresholds.spike_z
    flat_min_seconds: float = QCThresholds.flat_min_seconds
    flat_min_samples: int = QCThresholds.flat_min_samples
    out_of_range_min_samples: int = QCThresholds.out_of_range_min_samples
    drift_z: float = QCThresholds.drift_z
    drift_hold_s: float = QCThresholds.drift_hold_s
    drift_linear_z: float = QCThresholds.drift_linear_z
    drift_linear_hold_s: float = QCThresholds.drift_linear_hold_s
    jitter_warn: float = QCThresholds.jitter_warn
    rate_error_warn: float = QCThresholds.rate_error_warn
    max_failed_fraction: float = QCThresholds.max_failed_fraction
    critical_categories: list[str] = list(QCThresholds.critical_categories)

    def thresholds(self) -> QCThresholds:
        return QCThresholds(**{**self.model_dump(), "critical_categories": tuple(self.critical_categories)})


class ProcessingSettings(dg.Config):
    target_rate_hz: int = ProcessingConfig.target_rate_hz
    cutoff_hz: float = ProcessingConfig.cutoff_hz
    filter_order: int = ProcessingConfig.filter_order
    max_interp_gap_s: float = ProcessingConfig.max_interp_gap_s
    spike_z: float = ProcessingConfig.spike_z


class ComparisonConfig(dg.Config):
    """How long a variant waits for its baseline's metrics (a baseline run may still be processing)."""

    baseline_wait_retries: int = 6
    retry_wait_seconds: float = 5.0
    alpha: float = 0.05


def _write(lake: LakeResource, key: dg.AssetKey, run_id: str, table: pa.Table) -> tuple[str, int]:
    """Write one partition's table (the run id comes from the hive folder, not a column)."""
    if "run_id" in table.column_names:
        table = table.drop_columns(["run_id"])
    path = lake.partition_dir(key, run_id=run_id) / "data.parquet"
    return str(path), write_parquet_atomic(table, path)


def _raw_series(lake: LakeResource, run_id: str) -> RunSeries:
    path = lake.partition_dir(RAW_RUN, run_id=run_id) / "data.parquet"
    if not path.exists():
        raise dg.Failure(f"raw run {run_id!r} has not been landed ({path} is missing): "
                         "materialize windtunnel/raw_run first")
    return read_series(path)


def _repaired(context: dg.AssetExecutionContext, run_id: str) -> dict:
    recs = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_RUN, asset_partitions=[run_id]), limit=1).records
    if not recs:
        return {}
    md = recs[0].asset_materialization.metadata.get("repaired_timestamps")
    return md.value if md is not None else {}


def _qc_panels(series: RunSeries, qc: RunQC, th: QCThresholds, max_panels: int = 5) -> list[dict]:
    catalog = load_catalog()
    bad = [c for c in qc.channels if c.status != PASS and c.channel in series.t]
    bad.sort(key=lambda c: (c.status != FAIL, c.channel))
    names = [c.channel for c in bad[:max_panels]] or [c for c in ("FLOW_V", "FB_FZ", "PT_01") if c in series.t]
    status = {c.channel: c.status for c in qc.channels}
    panels = []
    for name in names:
        t, v = series.seconds(name), series.v[name]
        flags = qc.flags(series, name, th, catalog)
        rate = catalog.rate(name) if name in catalog.frame.index else 0
        gaps = []
        if rate:
            dt = np.diff(t)
            idx = np.flatnonzero(dt > th.gap_factor / rate)
            gaps = [(float(t[i]), float(t[i + 1])) for i in idx[:20]]
        panels.append({"name": name, "t": t, "v": v, "status": status.get(name, PASS),
                       "flagged": flags["spike"] | flags["out_of_range"], "gaps": gaps})
    return panels


def _latest_qc_status(lake: LakeResource, run_id: str) -> str | None:
    path = lake.partition_dir(QC_REPORT, run_id=run_id) / "data.parquet"
    if not path.exists():
        return None
    return pq.read_table(path, columns=["run_status"])["run_status"][0].as_py()


def _metrics_path(lake: LakeResource, run_id: str):
    return lake.partition_dir(AERO_METRICS, run_id=run_id) / "data.parquet"


def build_windtunnel_analytics(topics: Topics) -> list:
    runs_topic = topics.windtunnel_runs
    common = {"group_name": WINDTUNNEL, "partitions_def": windtunnel_runs}

    @dg.asset(
        key=QC_REPORT, deps=[RAW_RUN], kinds={"parquet", "duckdb"}, **common,
        check_specs=[
            dg.AssetCheckSpec(QC_BLOCKING, asset=QC_REPORT, blocking=True,
                              description="The run did not fail QC: failed runs stop before processing and release."),
            dg.AssetCheckSpec(QC_WARNINGS, asset=QC_REPORT,
                              description="No channel raised a QC warning (spikes, short gaps, jitter, repairs)."),
        ],
        description="Per-channel QC of a run: gaps, spikes, stuck sensors, out-of-range, drift, rate jitter.",
    )
    def qc_report(context: dg.AssetExecutionContext, config: QCConfig, lake: LakeResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
        run_id = context.partition_key
        t0 = time.perf_counter()
        series = _raw_series(lake, run_id)
        th = config.thresholds()
        qc = run_qc(series, load_catalog(), th, repaired=_repaired(context, run_id))
        path, _size = _write(lake, QC_REPORT, run_id, qc.table(run_id))
        # outside the landing pool: the raw data's views are refreshed here, with a short timeout
        warehouse.try_refresh_view(WINDTUNNEL, QC_REPORT.path[-1], lake.asset_dir(QC_REPORT), context.log)
        warehouse.try_refresh_view(WINDTUNNEL, RAW_RUN.path[-1], lake.asset_dir(RAW_RUN), context.log)
        warehouse.try_refresh_view(WINDTUNNEL, "run_events", lake.landing_dir(topics.windtunnel_runs), context.log)
        counts = qc.counts()
        failed = [c.channel for c in qc.channels if c.status == FAIL]
        warned = [c.channel for c in qc.channels if c.status == "warn"]
        summary = "; ".join(qc.reasons) or "all channels passed"
        return dg.MaterializeResult(
            metadata={
                "run_status": qc.status,
                "channels_pass": counts["pass"], "channels_warn": counts["warn"], "channels_fail": counts["fail"],
                "failed_channels": ", ".join(failed) or "none",
                "warned_channels": ", ".join(warned) or "none",
                "reasons": summary,
                "steady_window_s": dg.MetadataValue.json(list(qc.steady_window_s)),
                "samples": series.samples,
                "path": dg.MetadataValue.path(path),
                "seconds": round(time.perf_counter() - t0, 3),
                "flags": qc_flags_plot(_qc_panels(series, qc, th), f"run {run_id}: QC {qc.status}"),
            },
            check_results=[
                dg.AssetCheckResult(check_name=QC_BLOCKING, passed=qc.status != FAIL,
                                    severity=dg.AssetCheckSeverity.ERROR, description=summary,
                                    metadata={"failed_channels": len(failed)}),
                dg.AssetCheckResult(check_name=QC_WARNINGS, passed=qc.status == PASS,
                                    severity=dg.AssetCheckSeverity.WARN,
                                    description=f"{len(warned)} channels warned, {len(failed)} failed"),
            ],
        )

    @dg.asset(key=PROCESSED_RUN, deps=[RAW_RUN, QC_REPORT], kinds={"parquet", "scipy"}, **common,
              description="Despiked, gap-handled, low-pass filtered run, all channels on one time base.")
    def processed_run(context: dg.AssetExecutionContext, config: ProcessingSettings, lake: LakeResource,
                      warehouse: WarehouseResource) -> dg.MaterializeResult:
        run_id = context.partition_key
        t0 = time.perf_counter()
        series = _raw_series(lake, run_id)
        proc = process_run(series, load_catalog(), ProcessingConfig(**config.model_dump()))
        path, size = _write(lake, PROCESSED_RUN, run_id, proc.table())
        warehouse.try_refresh_view(WINDTUNNEL, PROCESSED_RUN.path[-1], lake.asset_dir(PROCESSED_RUN), context.log)
        flag_counts = np.bincount(proc.flags.ravel(), minlength=len(FLAG_NAMES))
        plot = {c: (proc.t_s, proc.channel(c)) for c in PROCESSED_CHANNELS if c in proc.channels}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": int(proc.values.size),
            "rate_hz": proc.rate_hz, "channels": len(proc.channels), "duration_s": round(float(proc.t_s[-1]), 3),
            "flags": {name: int(n) for name, n in zip(FLAG_NAMES, flag_counts, strict=True)},
            "gap_fraction": round(float(flag_counts[GAP] / max(1, proc.values.size)), 5),
            "invalid_samples_removed": int(sum(proc.dropped.values())),
            "path": dg.MetadataValue.path(path), "bytes": size,
            "seconds": round(time.perf_counter() - t0, 3),
            "preview": time_series_plot(plot, f"run {run_id}: processed at {proc.rate_hz} Hz"),
        })

    @dg.asset(key=AERO_METRICS, deps=[PROCESSED_RUN], kinds={"parquet", "duckdb"}, **common,
              description="CL, CD, L/D, aero balance, moments, Cp summary and per-channel statistics with 95% CIs.")
    def aero_metrics(context: dg.AssetExecutionContext, lake: LakeResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
        run_id = context.partition_key
        proc_path = lake.partition_dir(PROCESSED_RUN, run_id=run_id) / "data.parquet"
        proc = ProcessedRun.from_table(pq.read_table(proc_path))
        table, summary = compute_metrics(run_id, proc, load_catalog())
        path, _ = _write(lake, AERO_METRICS, run_id, table)
        warehouse.try_refresh_view(WINDTUNNEL, AERO_METRICS.path[-1], lake.asset_dir(AERO_METRICS), context.log)
        md = {k: (round(v, 5) if isinstance(v, float) and np.isfinite(v) else None)
              for k, v in summary.get("headline", {}).items()}
        return dg.MaterializeResult(metadata={
            **{k: v for k, v in md.items() if v is not None},
            "steady_window_s": dg.MetadataValue.json(summary["steady_window_s"]),
            "steady_window": summary["steady_window"],
            "dagster/row_count": table.num_rows,
            "path": dg.MetadataValue.path(path),
            "cp_distribution": cp_plot(table, f"run {run_id}: Cp over the front-wing taps (95% CI)"),
        })

    @dg.asset(key=RUN_COMPARISON, deps=[AERO_METRICS], kinds={"parquet", "duckdb"}, **common,
              description="Deltas vs the session baseline with Welch's t-test; a baseline gets identity rows.")
    def run_comparison(context: dg.AssetExecutionContext, config: ComparisonConfig, lake: LakeResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
        run_id = context.partition_key
        events = read_run_events(lake.landing_dir(runs_topic), run_id)
        info = run_info(events, run_id) if events is not None else None
        wait = context.retry_number < config.baseline_wait_retries
        baseline, how = _choose_baseline(lake, runs_topic, run_id, info, wait=wait)
        if baseline is None and how == "waiting":
            raise dg.RetryRequested(max_retries=config.baseline_wait_retries,
                                    seconds_to_wait=config.retry_wait_seconds)
        if baseline is None:
            raise dg.Failure(f"No baseline with metrics for run {run_id!r}: neither the announced baseline "
                             "nor any QC-passed run of its session has aero_metrics yet.")
        comp = compare_runs(_metrics_with_id(lake, run_id), _metrics_with_id(lake, baseline), alpha=config.alpha)
        path, _ = _write(lake, RUN_COMPARISON, run_id, comp)
        warehouse.try_refresh_view(WINDTUNNEL, RUN_COMPARISON.path[-1], lake.asset_dir(RUN_COMPARISON), context.log)
        coeff = [r for r in comp.to_pylist() if r["kind"] == "coefficient"]
        return dg.MaterializeResult(metadata={
            "baseline_run_id": baseline,
            "is_baseline": baseline == run_id,
            "baseline_chosen_by": how,
            "significant_deltas": sum(r["significant"] for r in coeff),
            "deltas_pct": dg.MetadataValue.json(
                {r["metric"]: None if r["delta_pct"] is None else round(r["delta_pct"], 3) for r in coeff}),
            "path": dg.MetadataValue.path(path),
            "deltas": deltas_plot(comp, f"run {run_id} vs {baseline}"),
        })

    @dg.asset(key=RUN_EXPORT, deps=[PROCESSED_RUN, AERO_METRICS, QC_REPORT], kinds={"csv", "parquet"}, **common,
              description="Release: CSV and Parquet of the processed run, its metrics and QC, for QC-passed runs only.")
    def run_export(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        run_id = context.partition_key
        status = _latest_qc_status(lake, run_id)
        if status not in ("pass", "warn"):
            raise dg.Failure(f"run {run_id!r} has QC status {status!r}: only QC-passed runs are exported")
        proc_path = lake.partition_dir(PROCESSED_RUN, run_id=run_id) / "data.parquet"
        proc = ProcessedRun.from_table(pq.read_table(proc_path))
        wide = pa.table({"ts": pa.array(proc.start_ns + np.round(proc.t_s * 1e9).astype(np.int64))
                         .cast(pa.timestamp("ns", tz="UTC")), "t_s": proc.t_s,
                         **{c: pa.array(proc.values[i], from_pandas=True) for i, c in enumerate(proc.channels)}})
        metrics = pq.read_table(_metrics_path(lake, run_id)).drop_columns(["blocks"])
        qc = pq.read_table(lake.partition_dir(QC_REPORT, run_id=run_id) / "data.parquet")
        final = lake.exports / run_id
        tmp = lake.exports / f".{run_id}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.mkdir(parents=True)
        try:
            import pyarrow.csv as pacsv

            pq.write_table(wide, tmp / "processed.parquet")
            pacsv.write_csv(wide, tmp / "processed.csv")
            pq.write_table(metrics, tmp / "metrics.parquet")
            pacsv.write_csv(metrics, tmp / "metrics.csv")
            pacsv.write_csv(qc, tmp / "qc_report.csv")
            # swap by renames: a reader sees the old export or the new one, never none or half
            old = lake.exports / f".{run_id}.{uuid.uuid4().hex[:6]}.old"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        files = sorted(p.name for p in final.iterdir())
        return dg.MaterializeResult(metadata={
            "export_dir": dg.MetadataValue.path(str(final)), "files": ", ".join(files),
            "qc_status": status, "rows": wide.num_rows, "columns": wide.num_columns,
            "bytes": sum((final / f).stat().st_size for f in files),
        })

    return [qc_report, processed_run, aero_metrics, run_comparison, run_export]


def _metrics_with_id(lake: LakeResource, run_id: str) -> pa.Table:
    t = pq.read_table(_metrics_path(lake, run_id))
    return t.append_column("run_id", pa.array([run_id] * t.num_rows, pa.string()))


def _usable(lake: LakeResource, run_id: str) -> bool | None:
    """True: passed QC and has metrics. False: failed QC (old metrics of a re-run do not count).
    None: not decided yet, the run is still in flight."""
    status = _latest_qc_status(lake, run_id)
    if status == FAIL:
        return False
    if status in ("pass", "warn") and _metrics_path(lake, run_id).exists():
        return True
    return None


def _first_passed(lake: LakeResource, runs_topic: str, run_id: str, info, wait: bool) -> tuple[str | None, bool]:
    """The session's first usable run (possibly this run itself), and whether an earlier run is pending.

    With `wait`, an earlier run still in flight stops the search: it may become the baseline.
    """
    if info is None or info.session_id is None:
        return (run_id if _usable(lake, run_id) else None), False
    for candidate in session_runs(lake.landing_dir(runs_topic), info.session_id):
        usable = _usable(lake, candidate)
        if usable:
            return candidate, False
        if usable is None and wait and candidate != run_id:
            return None, True
    return None, False


def _choose_baseline(lake: LakeResource, runs_topic: str, run_id: str, info, wait: bool) -> tuple[str | None, str]:
    """(baseline run id, how it was chosen); (None, 'waiting') while the baseline may still arrive."""
    announced = info.baseline_run_id if info is not None else None
    if announced is not None:
        usable = _usable(lake, announced)
        if usable:
            return announced, "baseline_run_id from run_started"
        if usable is None and wait:
            return None, "waiting"
        why = "failed QC" if usable is False else "has no metrics"
        found, pending = _first_passed(lake, runs_topic, run_id, info, wait)
        return (None, "waiting") if pending else (
            found, f"announced baseline {announced} {why}; first QC-passed run of the session")
    found, pending = _first_passed(lake, runs_topic, run_id, info, wait)
    if pending:
        return None, "waiting"
    return found, "this run is the session baseline" if found == run_id else "first QC-passed run of the session"
