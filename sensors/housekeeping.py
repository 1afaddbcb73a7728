"""Retention of run records: Dagster purges old sensor and schedule ticks (dagster.yaml `retention`), but
keeps every run and its event log forever. A daily job deletes finished runs older than
AERO_RUN_RETENTION_DAYS (default 90) with their event logs; asset materializations recorded by those
runs stay in the asset catalog's history only as long as their runs do, so the default is generous.
Runs still queued or in flight are never touched.
"""


import os
from datetime import UTC, datetime, timedelta

import dagster as dg

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
DEFAULT_DAYS = 90
BATCH = 500


class RetentionConfig(dg.Config):
    older_than_days: int = int(os.environ.get("AERO_RUN_RETENTION_DAYS") or DEFAULT_DAYS)


def purge_finished_runs(instance: dg.DagsterInstance, older_than: datetime, keep_run_id: str | None = None) -> int:
    """Delete finished runs created before `older_than` (with their event logs); returns how many."""
    deleted = 0
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, created_before=older_than), limit=BATCH)
        batch = [r.dagster_run.run_id for r in records if r.dagster_run.run_id != keep_run_id]
        if not batch:
            return deleted
        for run_id in batch:
            instance.delete_run(run_id)
        deleted += len(batch)


@dg.op(description="Deletes finished runs (and their event logs) older than the retention.")
def purge_old_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> dg.Output:
    if config.older_than_days < 0:
        raise dg.Failure(f"older_than_days must be >= 0, got {config.older_than_days}")
    cutoff = datetime.now(UTC) - timedelta(days=config.older_than_days)
    n = purge_finished_runs(context.instance, cutoff, keep_run_id=context.run.run_id)
    context.log.info(f"deleted {n} finished run(s) created before {cutoff:%Y-%m-%d %H:%M} UTC")
    return dg.Output(n, metadata={"deleted_runs": n, "cutoff": cutoff.isoformat()})


@dg.job(description="Run-record retention (AERO_RUN_RETENTION_DAYS, default 90 days).",
        tags={"aero/trigger": "housekeeping"})
def run_retention():
    purge_old_runs()


run_retention_schedule = dg.ScheduleDefinition(
    name="run_retention", job=run_retention, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:30 UTC: finished runs older than AERO_RUN_RETENTION_DAYS (90) deleted with their event logs.")
