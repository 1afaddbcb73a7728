"""Dagster wiring of the propulsion rig: landed readings, clean readings with a quarantine, anomalies, daily KPIs.

Numbers come from pure modules (`cleaning`, `anomalies`, `kpis`); these bodies read the lake, call
them, write Parquet per day, serve Postgres tables when configured, and attach metadata, plots and
checks. Days are partitions on event time; a landing reports the days it touched and the sensor
asks for exactly those, so a late CSV re-materializes its (possibly long closed) day.
"""

import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aero_assets import crash_points
from aero_assets.keys import (
    RIG,
    RIG_ANOMALIES,
    RIG_CLEAN,
    RIG_INBOX_ASSET,
    RIG_KPIS,
    RIG_LANDING_POOL,
    RIG_READINGS,
    RIG_TOPIC_ASSET,
    rig_daily,
)
from aero_assets.landing import land_topic
from aero_assets.memory import keep_freed_memory
from aero_assets.plots import png_markdown
from aero_assets.rig.decoder import RigReadingsDecoder
from aero_assets.rig.landing import count_day_rows, day_files, day_rows, days_of, land_csv
from aero_assets.rig.serving_tables import serve_anomalies, serve_kpis, serve_readings
from aero_assets.rig.settings import RigLimits
from resources import KafkaResource, LakeResource, ServingResource, ServingUnavailable, Topics, write_parquet_atomic

BALANCE_CHECK = "clean_plus_quarantined_equals_input"
QUARANTINE_CHECK = "quarantine_rate_under_limit"
KPI_CHECK = "kpis_for_every_active_rig"
CLEAN_PAUSE_POINT = "rig/clean_readings:between_files"  # test-only crash window (aero_assets/crash_points.py)
EXPORT_COLUMNS = ["ts", "rig_id", "temperature_c", "pressure_hpa", "uptime_h", "temperature_zscore",
                  "pressure_zscore", "temperature_alert", "pressure_alert"]


def _day_dir(lake: LakeResource, key: dg.AssetKey | str, day: str) -> Path:
    return lake.partition_dir(key, day=day)


def _read(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (FileNotFoundError, OSError):
        return None


def _serve(context, serving: ServingResource, write, *args) -> tuple[int, str]:
    """Write the serving table when configured: (rows, what the table is), (0, 'off') when not."""
    if not serving.enabled:
        return 0, "off (AERO_SERVING_PG_URL unset)"
    try:
        n, kind = write(serving, *args)
    except ServingUnavailable as exc:
        raise dg.Failure(description=f"{exc} The lake files are written; the next materialization serves them.") \
            from None
    context.log.info(f"served {n} rows to PostgreSQL ({kind})")
    return n, kind


def build_rig_assets(topics: Topics, limits: RigLimits) -> list:
    topic = topics.rig_readings

    class RigLandingConfig(dg.Config):
        """Empty `file`: land the Kafka topic. A file name: land that CSV from `$AERO_HOME/inbox/rig/`."""

        file: str = ""
        sha256: str = ""

    class CleaningConfig(dg.Config):
        quarantine_rate_max: float = limits.quarantine_rate_max

    class AnomalyConfig(dg.Config):
        """Defaults from `AERO_RIG_*` (the seed's thresholds); override for one run in the launchpad."""

        temperature_z: float = limits.temperature_z
        pressure_z: float = limits.pressure_z
        temperature_max_c: float = limits.temperature_max_c
        pressure_max_hpa: float = limits.pressure_max_hpa

    specs = [
        dg.AssetSpec(RIG_TOPIC_ASSET, group_name=RIG, kinds={"kafka"},
                     description=f"Kafka topic `{topic}`: JSON rig readings, key = rig id."),
        dg.AssetSpec(RIG_INBOX_ASSET, group_name=RIG, kinds={"file"},
                     description="CSV files dropped into `$AERO_HOME/inbox/rig/` (taken once complete; then moved "
                                 "to `processed/`, or to `rejected/` with a reason file)."),
    ]

    @dg.asset(key=RIG_READINGS, group_name=RIG, deps=[RIG_TOPIC_ASSET, RIG_INBOX_ASSET], pool=RIG_LANDING_POOL,
              kinds={"parquet"},
              description=f"Raw rig readings landed from `{topic}` (exactly once, by offset range) or from one inbox "
                          "CSV; every row tagged with its origin (topic/partition/offset or file:line).")
    def readings(context: dg.AssetExecutionContext, config: RigLandingConfig, kafka: KafkaResource,
                 lake: LakeResource):
        if config.file:
            res = land_csv(lake.inbox, lake.path, config.file)
            if res.rejected:
                context.log.warning(f"{config.file} rejected: {res.rejected} (moved to {res.moved_to})")
            if res.changed:
                context.log.warning(res.changed)
            changed = bool(config.sha256) and config.sha256 != res.sha256
            return dg.MaterializeResult(metadata={
                "source": "csv", "file": config.file, "sha256": res.sha256, "rejected": res.rejected or "",
                "changed_during_landing": res.changed or "",
                "changed_since_sensor": changed, "dagster/row_count": res.rows, "bad_lines": res.bad_lines,
                "moved_to": str(res.moved_to or ""), "days_touched": dg.MetadataValue.json(res.days),
                "delimiter": res.report.delimiter if res.report else "",
                "ignored_columns": dg.MetadataValue.json(res.report.ignored_columns if res.report else []),
                "rig_from_file_name": (res.report.rig_from_file_name or "") if res.report else "",
                "seconds": round(res.seconds, 3)})
        res = land_topic(kafka, lake.path, topic, RigReadingsDecoder())
        days = days_of(res.files)
        return dg.MaterializeResult(metadata={
            "source": "kafka", **{k: v for k, v in res.metadata().items() if not isinstance(v, dict)},
            "landing": dg.MetadataValue.json(res.metadata()), "dagster/row_count": res.rows,
            "days_touched": dg.MetadataValue.json(days)})

    @dg.asset(
        key=RIG_CLEAN, group_name=RIG, partitions_def=rig_daily, deps=[RIG_READINGS], kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(BALANCE_CHECK, asset=RIG_CLEAN, blocking=True,
                              description="Clean + quarantined rows = rows landed for the day (counted from the "
                                          "landed files independently): nothing lost, nothing made up."),
            dg.AssetCheckSpec(QUARANTINE_CHECK, asset=RIG_CLEAN,
                              description="The share of the day's rows quarantined is under the configured limit."),
        ],
        description="The day's readings without nulls, unparseable or physically impossible values and duplicates; "
                    "every removed row is in `rig.quarantine` with its reason and origin.",
    )
    def clean_readings(context: dg.AssetExecutionContext, config: CleaningConfig, lake: LakeResource,
                       serving: ServingResource):
        from aero_assets.rig.cleaning import clean

        keep_freed_memory()  # (a big day allocates its 10-80 MB columns again and again: keep the pages)
        day = context.partition_key
        files = day_files(lake.path, topic)  # one listing: a landing writing the next file meanwhile is no discrepancy
        rows = day_rows(lake.path, topic, day, files)
        good, quarantined = clean(rows)
        write_parquet_atomic(good, _day_dir(lake, RIG_CLEAN, day) / "data.parquet")
        crash_points.pause_at(CLEAN_PAUSE_POINT, day)  # (tests kill the run here: clean written, quarantine not)
        write_parquet_atomic(quarantined, _day_dir(lake, "rig/quarantine", day) / "data.parquet")
        landed = count_day_rows(lake.path, topic, day, files)
        n_clean = pq.ParquetFile(_day_dir(lake, RIG_CLEAN, day) / "data.parquet").metadata.num_rows
        n_q = pq.ParquetFile(_day_dir(lake, "rig/quarantine", day) / "data.parquet").metadata.num_rows
        rate = n_q / landed if landed else 0.0
        reasons = _reason_kinds(quarantined)
        served, table_kind = _serve(context, serving, serve_readings, good, day)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": n_clean, "quarantined": n_q, "input_rows": landed,
                      "quarantine_rate": round(rate, 4), "rigs": len(pc.unique(good["rig_id"])) if n_clean else 0,
                      "quarantine_reasons": dg.MetadataValue.json(reasons), "served_to_postgres": served,
                      "serving_table": table_kind,
                      "quarantine_sample": dg.MetadataValue.md(_quarantine_md(quarantined))},
            check_results=[
                dg.AssetCheckResult(check_name=BALANCE_CHECK, passed=n_clean + n_q == landed,
                                    metadata={"input": landed, "clean": n_clean, "quarantined": n_q},
                                    description=f"{n_clean:,} clean + {n_q:,} quarantined = {n_clean + n_q:,}; "
                                                f"{landed:,} landed"),
                dg.AssetCheckResult(check_name=QUARANTINE_CHECK, passed=rate <= config.quarantine_rate_max,
                                    severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"rate": round(rate, 4), "limit": config.quarantine_rate_max},
                                    description=f"{rate:.1%} quarantined (limit {config.quarantine_rate_max:.1%})"),
            ],
        )

    @dg.asset(key=RIG_ANOMALIES, group_name=RIG, partitions_def=rig_daily, deps=[RIG_CLEAN], kinds={"parquet"},
              description="Robust z-score anomalies per rig and signal (rolling median/MAD; thresholds from config) "
                          "and absolute limits; the day's scored readings feed the KPIs and the processed CSV.")
    def anomalies(context: dg.AssetExecutionContext, config: AnomalyConfig, lake: LakeResource,
                  serving: ServingResource):
        from aero_assets.rig.anomalies import Thresholds, score

        t0 = time.perf_counter()
        keep_freed_memory()
        day = context.partition_key
        good = _read(_day_dir(lake, RIG_CLEAN, day) / "data.parquet")
        if good is None:
            raise dg.Failure(description=f"no clean readings for {day}: materialize rig/clean_readings first")
        prev = _read(_day_dir(lake, RIG_CLEAN, _shift(day, -1)) / "data.parquet")
        thresholds = Thresholds(temperature_z=config.temperature_z, pressure_z=config.pressure_z,
                                temperature_max_c=config.temperature_max_c, pressure_max_hpa=config.pressure_max_hpa)
        scored = score(good, thresholds, context=prev)
        found = scored.filter(scored["anomaly"])
        write_parquet_atomic(scored, _day_dir(lake, "rig/scored", day) / "data.parquet")
        write_parquet_atomic(found, _day_dir(lake, RIG_ANOMALIES, day) / "data.parquet")
        served, _ = _serve(context, serving, serve_anomalies, found, day)
        meta = {"dagster/row_count": found.num_rows, "readings_scored": scored.num_rows,
                "temperature_alerts": int(pc.sum(scored["temperature_alert"]).as_py() or 0),
                "pressure_alerts": int(pc.sum(scored["pressure_alert"]).as_py() or 0),
                "thresholds": dg.MetadataValue.json({k: getattr(config, k) for k in (
                    "temperature_z", "pressure_z", "temperature_max_c", "pressure_max_hpa")}),
                "served_to_postgres": served, "seconds": round(time.perf_counter() - t0, 3),
                "plot": _anomaly_plot(scored, day)}
        meta.update(_against_ground_truth(lake, scored))
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(key=RIG_KPIS, group_name=RIG, partitions_def=rig_daily, deps=[RIG_ANOMALIES], kinds={"parquet", "csv"},
              check_specs=[dg.AssetCheckSpec(KPI_CHECK, asset=RIG_KPIS,
                                             description="Every rig with clean readings that day has a complete KPI "
                                                         "row.")],
              description="Daily KPIs per rig: average temperature, alert count, uptime hours, min/max pressure, with "
                          "a trend plot; and the day's processed CSV with the seed's analytics columns.")
    def kpis(context: dg.AssetExecutionContext, lake: LakeResource, serving: ServingResource):
        from aero_assets.rig.kpis import daily_kpis

        day = context.partition_key
        scored = _read(_day_dir(lake, "rig/scored", day) / "data.parquet")
        if scored is None:
            raise dg.Failure(description=f"no scored readings for {day}: materialize rig/anomalies first")
        table = daily_kpis(scored, day)
        write_parquet_atomic(table, _day_dir(lake, RIG_KPIS, day) / "data.parquet")
        export = lake.exports / "rig" / f"{day}.csv"
        _export_csv(scored, export)
        active = set(pc.unique(scored["rig_id"]).to_pylist()) if scored.num_rows else set()
        df = table.to_pandas()
        complete = set(df.dropna(subset=[c for c in df.columns if c not in ("first_ts", "last_ts")])["rig_id"]) \
            if len(df) else set()
        missing = sorted(active - complete)
        served, _ = _serve(context, serving, serve_kpis, table, day)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": table.num_rows, "export": dg.MetadataValue.path(str(export)),
                      "served_to_postgres": served, "kpis": dg.MetadataValue.md(_kpi_md(df)),
                      "trend": _trend_plot(lake, day)},
            check_results=[dg.AssetCheckResult(
                check_name=KPI_CHECK, passed=not missing, severity=dg.AssetCheckSeverity.WARN,
                metadata={"active_rigs": len(active), "missing": dg.MetadataValue.json(missing)},
                description=f"{len(active) - len(missing)} of {len(active)} active rigs have complete KPIs")],
        )

    return [*specs, readings, clean_readings, anomalies, kpis]


def _shift(day: str, days: int) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def _reason_kinds(quarantined: pa.Table) -> dict[str, int]:
    """Reasons grouped by their kind (the words before the first quote or number)."""
    if not quarantined.num_rows:
        return {}
    kinds = pd.Series(quarantined["reason"].to_pylist()).str.replace(r"['\"].*$|[-+]?\d.*$", "", regex=True)
    return {k.strip(" :;") or "other": int(v) for k, v in kinds.value_counts().head(20).items()}


def _quarantine_md(q: pa.Table, limit: int = 15) -> str:
    if not q.num_rows:
        return "Nothing quarantined."
    rows = ["| origin | rig | reason |", "|---|---|---|"]
    for r in q.slice(0, limit).to_pylist():
        reason = str(r["reason"]).replace("|", "\\|")[:160]
        rows.append(f"| `{r['origin']}` | {r['rig_id'] or ''} | {reason} |")
    if q.num_rows > limit:
        rows.append(f"| … {q.num_rows - limit:,} more | | |")
    return "\n".join(rows)


def _kpi_md(df: pd.DataFrame) -> str:
    if df.empty:
        return "No readings."
    rows = ["| rig | readings | avg °C | min hPa | max hPa | alerts | uptime h |", "|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        rows.append(f"| {r.rig_id} | {r.readings} | {r.avg_temperature_c:.1f} | {r.min_pressure_hpa:.1f} | "
                    f"{r.max_pressure_hpa:.1f} | {r.alert_count} | {r.uptime_hours:.2f} |")
    return "\n".join(rows)


def _export_csv(scored: pa.Table, path: Path) -> None:
    """The seed's processed CSV of the day: readings with z-scores and alert flags."""
    import pyarrow.csv as pacsv

    from resources.lake import write_bytes_atomic

    sink = pa.BufferOutputStream()
    cols = scored.select(EXPORT_COLUMNS) if scored.num_rows else scored.select(EXPORT_COLUMNS).slice(0, 0)
    pacsv.write_csv(cols, sink)
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


def _against_ground_truth(lake: LakeResource, scored: pa.Table) -> dict:
    """Precision/recall of the day's anomalies when simulated rigs left their ground truth (the demo)."""
    gt_dir = lake.path.parent / "ground_truth" / "rig"
    files = sorted(gt_dir.glob("*.parquet")) if gt_dir.exists() else []
    if not files or not scored.num_rows:
        return {}
    from aero_assets.rig.scoring import precision_recall

    truth = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    rigs = set(pc.unique(scored["rig_id"]).to_pylist())
    ts = scored["ts"].cast(pa.int64())
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    truth = truth[truth["rig_id"].astype(str).isin(rigs) & (truth["ts"] >= lo) & (truth["ts"] <= hi)]
    if truth.empty:
        return {}
    pr = precision_recall(scored, truth)
    return {f"ground_truth_{k}": (round(float(v), 4) if isinstance(v, float) else v) for k, v in pr.items()
            if isinstance(v, int | float)}


def _anomaly_plot(scored: pa.Table, day: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 3.6), sharex=True)
    if scored.num_rows:
        df = scored.select(["rig_id", "ts", "temperature_c", "pressure_hpa", "temperature_alert",
                            "pressure_alert"]).to_pandas()
        for rig, g in list(df.groupby("rig_id"))[:6]:
            axes[0].plot(g["ts"], g["temperature_c"], lw=0.7, label=rig)
            axes[1].plot(g["ts"], g["pressure_hpa"], lw=0.7)
            t, p = g[g["temperature_alert"]], g[g["pressure_alert"]]
            axes[0].scatter(t["ts"], t["temperature_c"], s=9, color="red", zorder=3)
            axes[1].scatter(p["ts"], p["pressure_hpa"], s=9, color="red", zorder=3)
        axes[0].legend(fontsize=5, ncol=3)
    axes[0].set_ylabel("temperature [°C]", fontsize=7)
    axes[1].set_ylabel("pressure [hPa]", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"rig readings {day}, anomalies in red", fontsize=8)
    return png_markdown(fig)


def _trend_plot(lake: LakeResource, day: str, days: int = 14) -> dg.MetadataValue:
    """Average temperature and alert count per rig over the last `days` days of KPIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    for k in range(days - 1, -1, -1):
        t = _read(_day_dir(lake, RIG_KPIS, _shift(day, -k)) / "data.parquet")
        if t is not None and t.num_rows:
            frames.append(t.to_pandas())
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 3.4), sharex=True)
    if frames:
        df = pd.concat(frames)
        df["day"] = pd.to_datetime(df["day"])
        for rig, g in list(df.groupby("rig_id"))[:8]:
            axes[0].plot(g["day"], g["avg_temperature_c"], marker="o", ms=2, lw=0.8, label=rig)
            axes[1].plot(g["day"], g["alert_count"], marker="s", ms=2, lw=0.8)
        axes[0].legend(fontsize=5, ncol=4)
    axes[0].set_ylabel("avg temperature [°C]", fontsize=7)
    axes[1].set_ylabel("alerts", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"rig KPIs, {days} days to {day}", fontsize=8)
    return png_markdown(fig)


