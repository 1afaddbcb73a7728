"""Dagster wiring of the tire fleet: landed readings, hourly windows, alert episodes, fleet status.

Numbers come from pure modules (`windows`, `episodes`); these bodies read the lake, call them,
write Parquet per hour, serve Postgres tables when configured, and attach metadata and plots.
Hourly partitions are on event time; a landing reports the hours it touched and the sensor asks
for exactly those, so a late reading re-materializes its (possibly long closed) hour.
"""


import time
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aero_assets.keys import (
    TIRE_ALERTS,
    TIRE_FLEET_STATUS,
    TIRE_READINGS,
    TIRE_WINDOWS,
    TIRES,
    TIRES_ALERTS_TOPIC_ASSET,
    TIRES_LANDING_POOL,
    TIRES_RAW_TOPIC_ASSET,
    tires_hourly,
)
from aero_assets.landing import LANDING_GROUP, land_topic
from aero_assets.plots import png_markdown
from aero_assets.tires.alerts_topic import live_positions, publish_alerts, published_alerts, source_position
from aero_assets.tires.decoder import TireReadingsDecoder
from aero_assets.tires.episodes import (
    ALERT_TYPES,
    Thresholds,
    detect_episodes,
    episode_message,
    episodes_table,
)
from aero_assets.tires.readings import HOUR_NS, hours_of, landed_readings
from aero_assets.tires.serving_tables import serve_alerts, serve_windows
from aero_assets.tires.windows import window_aggregates as compute_windows
from resources import KafkaResource, LakeResource, ServingResource, ServingUnavailable, Topics, write_parquet_atomic

WINDOW_COUNT_CHECK = "window_counts_match_landed_readings"
WINDOW_GAP_CHECK = "every_active_tire_has_its_windows"
RECONCILE_CHECK = "alerts_match_live_path"
PUBLISHED_CHECK = "alerts_published"
HORIZON_NS = HOUR_NS  # how far past its hour an episode is followed for its end and peak
PARTITION_FMT = "%Y-%m-%d-%H:%M"


def hour_key(hour_ns: int) -> str:
    """Partition key of the hour starting at `hour_ns`."""
    return datetime.fromtimestamp(hour_ns / 1e9, tz=UTC).strftime(PARTITION_FMT)


def _hour_bounds(context: dg.AssetExecutionContext) -> tuple[int, int]:
    w = context.partition_time_window
    return int(w.start.timestamp()) * 1_000_000_000, int(w.end.timestamp()) * 1_000_000_000


def _hour_dir(lake: LakeResource, key: dg.AssetKey, hour_ns: int):
    return lake.partition_dir(key, hour=datetime.fromtimestamp(hour_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H"))


def build_tires_assets(topics: Topics, thresholds: Thresholds) -> list:
    raw_topic, alerts_topic = topics.tires_raw, topics.tires_alerts
    topic_specs = [
        dg.AssetSpec(TIRES_RAW_TOPIC_ASSET, group_name=TIRES, kinds={"kafka"},
                     description=f"Kafka topic `{raw_topic}`: JSON tire readings, key = vehicle id."),
        dg.AssetSpec(TIRES_ALERTS_TOPIC_ASSET, group_name=TIRES, kinds={"kafka"}, deps=[TIRE_ALERTS],
                     description=f"Kafka topic `{alerts_topic}`: alert episodes, key = alert id "
                                 "(published live by `aero stream tires-alerts`, reconciled hourly)."),
    ]

    @dg.asset(key=TIRE_READINGS, group_name=TIRES, deps=[TIRES_RAW_TOPIC_ASSET], pool=TIRES_LANDING_POOL,
              kinds={"parquet"},
              description=f"Tire readings landed exactly once from `{raw_topic}` (append by offset range).")
    def readings(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource):
        res = land_topic(kafka, lake.path, raw_topic, TireReadingsDecoder())
        hours = sorted({h for f in res.files for h in hours_of(pq.read_table(f, columns=["ts"])["ts"])})
        context.log.info(f"landed {res.messages} messages ({res.rows} readings) from {raw_topic}; hours touched: "
                         f"{[hour_key(h) for h in hours]}"
                         + (f"; {res.dlq_messages} to the DLQ: {dict(res.dlq_reasons)}" if res.dlq_messages else ""))
        return dg.MaterializeResult(metadata={
            **{k: v for k, v in res.metadata().items() if not isinstance(v, dict)},
            "landing": dg.MetadataValue.json(res.metadata()),
            "dagster/row_count": res.rows,
            "readings_per_s": round(res.rows / res.seconds, 1) if res.seconds else 0.0,
            "hours_touched": dg.MetadataValue.json([hour_key(h) for h in hours]),
        })

    @dg.asset(
        key=TIRE_WINDOWS, group_name=TIRES, partitions_def=tires_hourly, deps=[TIRE_READINGS], kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(WINDOW_COUNT_CHECK, asset=TIRE_WINDOWS,
                              description="The window counts of the hour sum to the readings landed for it "
                                          "(nothing dropped, late readings included)."),
            dg.AssetCheckSpec(WINDOW_GAP_CHECK, asset=TIRE_WINDOWS,
                              description="Every tire that reported in the hour has a window for each minute "
                                          "between its first and last reading (no silent gaps)."),
        ],
        description="1-minute tumbling windows on event time per vehicle and tire: count, avg/min/max "
                    "pressure and temperature. Re-materialized when late readings land.",
    )
    def window_aggregates(context: dg.AssetExecutionContext, lake: LakeResource, serving: ServingResource):
        t0 = time.perf_counter()
        lo, hi = _hour_bounds(context)
        topic_dir = lake.landing_dir(raw_topic)
        readings_tab = landed_readings(topic_dir, lo, hi)
        windows = compute_windows(readings_tab)
        path = _hour_dir(lake, TIRE_WINDOWS, lo) / "data.parquet"
        size = write_parquet_atomic(windows, path)
        # the count check reads both sides again, independently of the computation above
        landed = ds.dataset([str(p) for p in topic_dir.glob("*.parquet")], format="parquet").count_rows(
            filter=(ds.field("ts") >= _ts(lo)) & (ds.field("ts") < _ts(hi))) if any(topic_dir.glob("*.parquet")) else 0
        counted = int(pc.sum(pq.read_table(path, columns=["reading_count"])["reading_count"]).as_py() or 0)
        gaps = _window_gaps(windows)
        served = _serve(context, serving, serve_windows, windows)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": windows.num_rows,
                "served_to_postgres": served,
                "readings": readings_tab.num_rows,
                "vehicles": len(pc.unique(windows["vehicle_id"])) if windows.num_rows else 0,
                "tires": len(set(zip(windows["vehicle_id"].to_pylist(), windows["tire"].to_pylist(),
                                     strict=True))) if windows.num_rows else 0,
                "late_readings_note": "readings that arrived after this hour was first materialized are included",
                "path": dg.MetadataValue.path(str(path)),
                "bytes": size,
                "seconds": round(time.perf_counter() - t0, 3),
                "plot": _windows_plot(windows, context.partition_key),
            },
            check_results=[
                dg.AssetCheckResult(check_name=WINDOW_COUNT_CHECK, passed=landed == counted,
                                    metadata={"landed_readings": landed, "window_count_sum": counted},
                                    description=f"{counted:,} readings in windows, {landed:,} landed for the hour"),
                dg.AssetCheckResult(check_name=WINDOW_GAP_CHECK, passed=not gaps,
                                    severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"tires_with_gaps": len(gaps),
                                              "gaps": dg.MetadataValue.json(gaps[:20])},
                                    description="no gaps" if not gaps else
                                    f"{len(gaps)} tire(s) with missing minutes, e.g. {gaps[0]}"),
            ],
        )

    @dg.asset(
        key=TIRE_ALERTS, group_name=TIRES, partitions_def=tires_hourly, deps=[TIRE_READINGS], kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(RECONCILE_CHECK, asset=TIRE_ALERTS,
                              description="The episodes the live path published for the hour are the ones this "
                                          "asset finds (same ids), up to where the live path has read."),
            dg.AssetCheckSpec(PUBLISHED_CHECK, asset=TIRE_ALERTS,
                              description=f"Every episode of the hour is on `{alerts_topic}`."),
        ],
        description=f"Alert episodes opened in the hour (low pressure < {thresholds.low_pressure_kpa:g} kPa, "
                    f"temperature > {thresholds.high_temperature_c:g} °C, pressure loss ≥ "
                    f"{thresholds.rapid_loss_kpa_per_min:g} kPa/min over {thresholds.rapid_loss_window_s:g} s), "
                    "with peak and duration; queryable as `tires.alerts`.",
    )
    def alerts(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource,
               serving: ServingResource):
        t0 = time.perf_counter()
        lo, hi = _hour_bounds(context)
        readings_tab = landed_readings(lake.landing_dir(raw_topic), lo - thresholds.lookback_ns, hi + HORIZON_NS,
                                       position=True)
        found = detect_episodes(readings_tab, thresholds)
        found = found[(found["opened_at"] >= lo) & (found["opened_at"] < hi)].reset_index(drop=True)
        table = episodes_table(found)
        path = _hour_dir(lake, TIRE_ALERTS, lo) / "data.parquet"
        write_parquet_atomic(table, path)
        served = _serve(context, serving, serve_alerts, table)

        # reconcile with the live path, and publish what it should have published but did not
        positions = live_positions(kafka, raw_topic)
        landed = live_positions(kafka, raw_topic, LANDING_GROUP)
        live = published_alerts(kafka, alerts_topic)
        batch_rows = found.to_dict("records")
        behind = [r for r in batch_rows if r["open_offset"] < positions.get(int(r["open_partition"]), -1)]
        due = batch_rows if not positions else behind
        missing = [r for r in due if r["alert_id"] not in live]
        published = publish_alerts(kafka, alerts_topic, [episode_message(r) for r in missing])
        if published:
            context.log.warning(f"published {published} episode(s) the live path had not: "
                                f"{[r['alert_id'] for r in missing][:10]}")
        # compare what both sides have read: readings the live path has seen and the landing has landed
        both = {p: min(o, landed.get(p, 0)) for p, o in positions.items()}
        batch_ids = {r["alert_id"] for r in batch_rows if r["open_offset"] < both.get(int(r["open_partition"]), -1)}
        live_ids = {a for a, m in live.items() if lo <= _iso_ns(m.opened_at) < hi
                    and (src := source_position(m.message)) is not None and src[1] < both.get(src[0], -1)}
        only_batch = sorted(batch_ids - set(live))
        only_live = sorted(live_ids - {r["alert_id"] for r in batch_rows})
        on_topic = set(published_alerts(kafka, alerts_topic)) if published else set(live)
        unpublished = sorted(r["alert_id"] for r in due if r["alert_id"] not in on_topic)
        counts = found["alert_type"].value_counts().to_dict() if len(found) else {}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(found),
                **{f"episodes_{k}": int(counts.get(k, 0)) for k in ALERT_TYPES},
                "open_episodes": int((~found["closed"].astype(bool)).sum()) if len(found) else 0,
                "readings_considered": readings_tab.num_rows,
                "served_to_postgres": served,
                "published_by_this_run": published,
                "live_path_positions": dg.MetadataValue.json({str(k): v for k, v in positions.items()}),
                "path": dg.MetadataValue.path(str(path)),
                "seconds": round(time.perf_counter() - t0, 3),
                "episodes": dg.MetadataValue.md(_episodes_md(found)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=RECONCILE_CHECK,
                    passed=not only_batch and not only_live,
                    severity=dg.AssetCheckSeverity.ERROR if positions else dg.AssetCheckSeverity.WARN,
                    metadata={"only_in_batch": dg.MetadataValue.json(only_batch[:50]),
                              "only_in_live": dg.MetadataValue.json(only_live[:50]),
                              "compared": len(batch_ids), "live_running": bool(positions)},
                    description=("live and batch agree" if not only_batch and not only_live else
                                 f"{len(only_batch)} episode(s) only in batch, {len(only_live)} only live")
                    + ("" if positions else "; the live path has never run (this asset published the hour)"),
                ),
                dg.AssetCheckResult(check_name=PUBLISHED_CHECK, passed=not unpublished,
                                    metadata={"unpublished": dg.MetadataValue.json(unpublished[:50]),
                                              "due": len(due)},
                                    description=f"{len(due) - len(unpublished)} of {len(due)} due episodes on "
                                                f"{alerts_topic}"),
            ],
        )

    @dg.asset(key=TIRE_FLEET_STATUS, group_name=TIRES, partitions_def=tires_hourly,
              deps=[TIRE_WINDOWS, TIRE_ALERTS], kinds={"parquet"},
              description="Fleet status per minute of the hour: active vehicles, readings per minute, "
                          "open alerts by type, with a plot.")
    def fleet_status(context: dg.AssetExecutionContext, lake: LakeResource):
        lo, _ = _hour_bounds(context)
        windows = _read_or_empty(_hour_dir(lake, TIRE_WINDOWS, lo) / "data.parquet")
        eps = _read_or_empty(_hour_dir(lake, TIRE_ALERTS, lo) / "data.parquet")
        status = _fleet_minutes(windows, eps, lo)
        write_parquet_atomic(pa.Table.from_pandas(status, preserve_index=False),
                             _hour_dir(lake, TIRE_FLEET_STATUS, lo) / "data.parquet")
        open_eps = eps.filter(pc.invert(eps["closed"])) if eps is not None and eps.num_rows else None
        open_by_type = ({k: int(v) for k, v in pd.Series(open_eps["alert_type"].to_pylist()).value_counts().items()}
                        if open_eps is not None and open_eps.num_rows else {})
        last = status.iloc[-1] if len(status) else None
        return dg.MaterializeResult(metadata={
            "active_vehicles": int(windows.column("vehicle_id").unique().__len__()) if windows is not None
            and windows.num_rows else 0,
            "readings_per_minute_last": int(last["readings"]) if last is not None else 0,
            "readings_per_minute_avg": round(float(status["readings"].mean()), 1) if len(status) else 0.0,
            "open_alerts": dg.MetadataValue.json(open_by_type),
            "episodes_in_hour": int(eps.num_rows) if eps is not None else 0,
            "plot": _fleet_plot(status, context.partition_key),
        })

    return [*topic_specs, readings, window_aggregates, alerts, fleet_status]


def _serve(context, serving: ServingResource, write, table: pa.Table) -> int:
    """Upsert into the serving tables when configured (after the lake file, which stays the record)."""
    if not serving.enabled:
        return 0
    try:
        n = write(serving, table)
    except ServingUnavailable as exc:
        raise dg.Failure(description=f"{exc} The lake file is written; the next materialization serves it.") from None
    context.log.info(f"served {n} rows to PostgreSQL")
    return n


def _ts(ns: int) -> pa.Scalar:
    return pa.scalar(ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))


def _iso_ns(text: str) -> int:
    try:
        return pd.Timestamp(text).value
    except (ValueError, TypeError):
        return -1


def _read_or_empty(path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (FileNotFoundError, OSError):
        return None


def _window_gaps(windows: pa.Table) -> list[str]:
    """Tires with minutes missing between their first and last window of the hour."""
    if not windows.num_rows:
        return []
    df = pd.DataFrame({"v": windows["vehicle_id"].to_numpy(zero_copy_only=False),
                       "t": windows["tire"].to_numpy(zero_copy_only=False),
                       "m": windows["window_start"].cast(pa.int64()).to_numpy() // 60_000_000_000})
    g = df.groupby(["v", "t"])["m"].agg(["min", "max", "count"])
    g["missing"] = g["max"] - g["min"] + 1 - g["count"]
    bad = g[g["missing"] > 0]
    return [f"{v}/{t}: {int(r.missing)} minute(s)" for (v, t), r in bad.iterrows()]


def _fleet_minutes(windows: pa.Table | None, eps: pa.Table | None, hour_ns: int) -> pd.DataFrame:
    cols = ["minute", "active_vehicles", "readings", *[f"open_{k}" for k in ALERT_TYPES]]
    if windows is None or not windows.num_rows:
        return pd.DataFrame(columns=cols)
    w = pd.DataFrame({"v": windows["vehicle_id"].to_numpy(zero_copy_only=False),
                      "start": windows["window_start"].cast(pa.int64()).to_numpy(),
                      "n": windows["reading_count"].to_numpy()})
    per = w.groupby("start").agg(active_vehicles=("v", "nunique"), readings=("n", "sum")).reset_index()
    minutes = per["start"].to_numpy()
    for k in ALERT_TYPES:  # episodes open during each minute
        if eps is None or not eps.num_rows:
            per[f"open_{k}"] = 0
            continue
        sel = eps.filter(pc.equal(eps["alert_type"], k))
        o = sel["opened_at"].cast(pa.int64()).to_numpy()
        last = sel["last_at"].cast(pa.int64()).to_numpy()
        closed = sel["closed"].to_numpy(zero_copy_only=False).astype(bool)
        end = np.where(closed, last, np.iinfo(np.int64).max)
        during = (o[None, :] < minutes[:, None] + 60_000_000_000) & (end[None, :] >= minutes[:, None])
        per[f"open_{k}"] = during.sum(1)
    per["minute"] = pd.to_datetime(per["start"], utc=True)
    return per[cols]


def _windows_plot(windows: pa.Table, hour: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 3.4), sharex=True)
    if windows.num_rows:
        df = pd.DataFrame({"m": windows["window_start"].to_pandas(), "p": windows["avg_pressure_kpa"].to_numpy(),
                           "pmin": windows["min_pressure_kpa"].to_numpy(),
                           "t": windows["avg_temperature_c"].to_numpy(),
                           "tmax": windows["max_temperature_c"].to_numpy()})
        g = df.groupby("m").agg(p=("p", "mean"), pmin=("pmin", "min"), t=("t", "mean"), tmax=("tmax", "max"))
        axes[0].plot(g.index, g["p"], lw=0.8, label="fleet mean")
        axes[0].plot(g.index, g["pmin"], lw=0.8, label="lowest tire")
        axes[1].plot(g.index, g["t"], lw=0.8, label="fleet mean")
        axes[1].plot(g.index, g["tmax"], lw=0.8, label="hottest tire")
    axes[0].set_ylabel("pressure [kPa]", fontsize=7)
    axes[1].set_ylabel("temperature [°C]", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if windows.num_rows:
            ax.legend(fontsize=6)
    axes[0].set_title(f"tire windows, hour {hour}", fontsize=8)
    return png_markdown(fig)


def _fleet_plot(status: pd.DataFrame, hour: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 3.4), sharex=True)
    if len(status):
        axes[0].plot(status["minute"], status["readings"], lw=0.8, label="readings/min")
        ax2 = axes[0].twinx()
        ax2.plot(status["minute"], status["active_vehicles"], lw=0.8, color="C1", label="active vehicles")
        ax2.tick_params(labelsize=6)
        for k in ALERT_TYPES:
            axes[1].step(status["minute"], status[f"open_{k}"], where="post", lw=0.8, label=k)
        axes[1].legend(fontsize=6)
    axes[0].set_ylabel("readings / min", fontsize=7)
    axes[1].set_ylabel("open alerts", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"fleet status, hour {hour}", fontsize=8)
    return png_markdown(fig)


def _episodes_md(found: pd.DataFrame) -> str:
    if found.empty:
        return "No alert episodes opened in this hour."
    rows = ["| alert id | vehicle | tire | type | opened | duration s | peak | status |",
            "|---|---|---|---|---|---|---|---|"]
    for r in found.head(25).itertuples():
        opened = datetime.fromtimestamp(r.opened_at / 1e9, tz=UTC).strftime("%H:%M:%S")
        rows.append(f"| `{r.alert_id}` | {r.vehicle_id} | {r.tire} | {r.alert_type} | {opened} | "
                    f"{r.duration_s:.0f} | {r.peak_value:.1f} | {'closed' if r.closed else 'open'} |")
    if len(found) > 25:
        rows.append(f"| … {len(found) - 25} more | | | | | | | |")
    return "\n".join(rows)
