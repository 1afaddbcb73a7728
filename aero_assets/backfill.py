"""`aero backfill`: a domain's chain over a range of partitions, as one Dagster asset backfill.

Dagster 1.13's CLI has no `dagster asset backfill` (only `dagster job backfill`, for jobs), and
`dagster asset materialize --partition-range` needs every asset to run ranges in one run. So the
backfill is submitted the way the UI's "Materialize partitions" dialog does: a PartitionBackfill
in the instance, which the daemon's backfill loop then runs partition by partition, under the
same run queue, pools and retries as everything else, and which shows on the UI's Backfills page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from aero_assets.keys import (
    FORECAST_MONITOR_CHAIN,
    FORECAST_TRAINING_CHAIN,
    RIG_DAY_CHAIN,
    TIRES_HOUR_CHAIN,
    forecast_stations,
    rig_daily,
    tires_hourly,
    windtunnel_runs,
)
from sensors.nightly import WINDTUNNEL_REPROCESS_CHAIN

DONE = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED,
        BulkActionStatus.FAILED, BulkActionStatus.CANCELED}


class BackfillError(ValueError):
    """A backfill that cannot be asked for; the message says what to change."""


@dataclass(frozen=True)
class Chain:
    assets: list[dg.AssetKey]
    partitions: dg.PartitionsDefinition


CHAINS = {
    "tires": Chain(TIRES_HOUR_CHAIN, tires_hourly),
    "rig": Chain(RIG_DAY_CHAIN, rig_daily),
    "windtunnel": Chain(WINDTUNNEL_REPROCESS_CHAIN, windtunnel_runs),
    "forecast": Chain(FORECAST_MONITOR_CHAIN, forecast_stations),
    "forecast-training": Chain(FORECAST_TRAINING_CHAIN, forecast_stations),
}


def partition_keys(domain: str, instance: dg.DagsterInstance, start: str | None, end: str | None,
                   names: list[str] | None) -> list[str]:
    """The partitions of `domain` to backfill: a time range [start, end] (inclusive, as the partitions
    are named: '2026-03-01' for days, '2026-03-01-05:00' or a day for hours) or named dynamic ones."""
    chain = CHAINS.get(domain)
    if chain is None:
        raise BackfillError(f"unknown domain {domain!r}; one of: {', '.join(CHAINS)}")
    if isinstance(chain.partitions, dg.TimeWindowPartitionsDefinition):
        if names:
            return _known(chain.partitions.get_partition_keys(), names, domain)
        if not start:
            raise BackfillError(f"{domain}: give --from (and --to) as partitions are named, e.g. 2026-03-01")
        lo, hi = _parse(start, chain.partitions), _parse(end or start, chain.partitions, end_of_day=True)
        if hi < lo:
            raise BackfillError(f"{domain}: --to {end} is before --from {start}")
        keys = chain.partitions.get_partition_keys_in_time_window(dg.TimeWindow(lo, hi))
        if not keys:
            raise BackfillError(f"{domain}: no partitions between {start} and {end or start}")
        return keys
    known = instance.get_dynamic_partitions(chain.partitions.name)
    if start or end:
        raise BackfillError(f"{domain} partitions are named, not dated: give --partitions a,b or --all")
    return sorted(known) if names is None else _known(known, names, domain)


def _known(known, names: list[str], domain: str) -> list[str]:
    missing = sorted(set(names) - set(known))
    if missing:
        raise BackfillError(f"{domain}: no such partition(s): {', '.join(missing[:10])}")
    return list(dict.fromkeys(names))


def _parse(text: str, partitions: dg.TimeWindowPartitionsDefinition, end_of_day: bool = False) -> datetime:
    """A partition-style time; with end_of_day, the end of that hour or day (so --to is inclusive)."""
    tz = ZoneInfo(partitions.timezone or "UTC")
    for fmt, step in (("%Y-%m-%d-%H:%M", timedelta(hours=1)), ("%Y-%m-%d", timedelta(days=1))):
        try:
            at = datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
        return at + step if end_of_day else at
    raise BackfillError(f"{text!r} is neither a day (2026-03-01) nor an hour (2026-03-01-05:00)")


def submit_backfill(instance: dg.DagsterInstance, repo: dg.RepositoryDefinition, domain: str,
                    keys: list[str], title: str | None = None) -> str:
    """Add the backfill to the instance (the daemon runs it); returns its id."""
    chain = CHAINS[domain]
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=repo.asset_graph, partition_names=keys,
        asset_selection=chain.assets, backfill_timestamp=time.time(),
        tags={"aero/trigger": "backfill", "aero/domain": domain}, dynamic_partitions_store=instance,
        all_partitions=False, title=title or f"aero backfill {domain} ({len(keys)} partitions)",
        description=f"{domain}: {keys[0]} .. {keys[-1]}", run_config=None)
    instance.add_backfill(backfill)
    return backfill_id


def wait_for_backfill(instance: dg.DagsterInstance, backfill_id: str, timeout_s: float,
                      poll_s: float = 2.0) -> BulkActionStatus:
    """Poll until the backfill is done (any end state) or timeout_s passes; returns its status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = instance.get_backfill(backfill_id).status
        if status in DONE or time.monotonic() > deadline:
            return status
        time.sleep(poll_s)
