"""`nightly_reprocessing`: yesterday's partitions of every domain again, so late data is in by morning.

The sensors already re-request a partition when a landing touches it; the nightly run is the
backstop for what they cannot see: a run that failed or was cancelled, a reading that landed
while its partition's run was in flight, a threshold or code change. Asset checks are part of
each chain, so a reprocessed partition that now fails its checks shows up failed in the morning.

What it asks for, per night (the day before the scheduled time, in the schedule's time zone,
mapped onto the UTC partitions it overlaps):
- tires: every hour of that day already materialized once (the hour chain);
- rig: that day, if materialized once (clean -> anomalies -> KPIs);
- forecast: every station with a champion (predictions + drift report; training has its own
  weekly schedule and the drift sensor);
- wind tunnel: every run whose raw data was materialized after its QC report (or that has no QC
  report), the chain from QC on;
and never a partition a run is already working on (its `dagster/partition` tag in flight).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from aero_assets.keys import (
    CHAMPION_MODEL,
    FORECAST_MONITOR_CHAIN,
    QC_REPORT,
    RAW_RUN,
    RIG_CLEAN,
    RIG_DAY_CHAIN,
    TIRE_WINDOWS,
    TIRES_HOUR_CHAIN,
    WINDTUNNEL_RUN_CHAIN,
    forecast_stations,
    rig_daily,
    tires_hourly,
    windtunnel_runs,
)

NIGHTLY_CRON = "0 2 * * *"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]
WINDTUNNEL_REPROCESS_CHAIN = [k for k in WINDTUNNEL_RUN_CHAIN if k != RAW_RUN]  # landing is offsets, not a redo
IMPLICIT_ASSET_JOB_NAME = "__ASSET_JOB"  # (dagster._core.definitions.assets.job.asset_job)


def yesterday_utc(scheduled: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar day before `scheduled`, that day taken in `timezone`."""
    local = scheduled.astimezone(ZoneInfo(timezone))
    day = local.date() - timedelta(days=1)
    start = datetime.combine(day, time(0), tzinfo=local.tzinfo)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=local.tzinfo)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def _time_partitions(partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime, end: datetime) -> list[str]:
    """Partition keys whose window overlaps [start, end) (a day in another time zone overlaps two UTC days)."""
    keys = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start - timedelta(days=1), end))
    windows = ((k, partitions_def.time_window_for_partition_key(k)) for k in keys)
    return [k for k, w in windows if w.start < end and w.end > start]


def _busy_partitions(instance: dg.DagsterInstance) -> set[str]:
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT), limit=1000)
    return {r.dagster_run.tags["dagster/partition"] for r in records if "dagster/partition" in r.dagster_run.tags}


def _stale_windtunnel_runs(instance: dg.DagsterInstance) -> list[str]:
    """Wind-tunnel runs whose raw data was materialized after their QC report, or that have none."""
    event = dg.DagsterEventType.ASSET_MATERIALIZATION
    raw = instance.get_latest_storage_id_by_partition(RAW_RUN, event)
    qc = instance.get_latest_storage_id_by_partition(QC_REPORT, event)
    known = set(instance.get_dynamic_partitions(windtunnel_runs.name))
    return sorted(run for run, storage_id in raw.items() if run in known and storage_id > qc.get(run, -1))


def nightly_requests(instance: dg.DagsterInstance, scheduled: datetime, timezone: str) -> list[dg.RunRequest]:
    """The night's run requests (see the module docstring); run keys name the night, so a tick never repeats."""
    start, end = yesterday_utc(scheduled, timezone)
    night = (end - timedelta(seconds=1)).astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d")
    busy = _busy_partitions(instance)
    requests: list[dg.RunRequest] = []

    def ask(domain: str, partition: str, chain: list[dg.AssetKey]) -> None:
        if partition in busy:
            return
        requests.append(dg.RunRequest(
            run_key=f"nightly/{night}/{domain}/{partition}", partition_key=partition, asset_selection=chain,
            tags={"aero/trigger": "nightly", "aero/night": night, "aero/domain": domain}))

    hours = set(_time_partitions(tires_hourly, start, end))
    for hour in sorted(hours & instance.get_materialized_partitions(TIRE_WINDOWS)):
        ask("tires", hour, TIRES_HOUR_CHAIN)
    days = set(_time_partitions(rig_daily, start, end))
    for day in sorted(days & instance.get_materialized_partitions(RIG_CLEAN)):
        ask("rig", day, RIG_DAY_CHAIN)
    stations = set(instance.get_dynamic_partitions(forecast_stations.name))
    for station in sorted(stations & instance.get_materialized_partitions(CHAMPION_MODEL)):
        ask("forecast", station, FORECAST_MONITOR_CHAIN)
    for run in _stale_windtunnel_runs(instance):
        ask("windtunnel", run, WINDTUNNEL_REPROCESS_CHAIN)
    return requests


def build_nightly_schedule(timezone: str = "UTC", cron: str = NIGHTLY_CRON) -> dg.ScheduleDefinition:
    # The implicit asset job: the one job that may hold assets of different partitionings (an asset-selection
    # target must share one); each request selects one domain's chain for one partition of it.
    @dg.schedule(name="nightly_reprocessing", cron_schedule=cron, execution_timezone=timezone,
                 job_name=IMPLICIT_ASSET_JOB_NAME, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="02:00: yesterday's tire hours and rig day, every station's monitoring and every wind-"
                             "tunnel run whose raw data changed since its QC, again, checks included "
                             "(AERO_NIGHTLY_TIMEZONE sets the clock).")
    def nightly_reprocessing(context: dg.ScheduleEvaluationContext):
        requests = nightly_requests(context.instance, context.scheduled_execution_time, timezone)
        if not requests:
            return dg.SkipReason("Nothing of yesterday's to reprocess (no materialized partitions, or all in flight).")
        counts: dict[str, int] = {}
        for r in requests:
            counts[r.tags["aero/domain"]] = counts.get(r.tags["aero/domain"], 0) + 1
        context.log.info("nightly reprocessing: " + ", ".join(f"{n} {d}" for d, n in sorted(counts.items())))
        return requests

    return nightly_reprocessing
