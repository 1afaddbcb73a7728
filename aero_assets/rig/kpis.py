"""Daily KPIs per rig from scored readings: what the seed reported, one row per (day, rig).

The scored table is sorted by (rig_id, ts), so each (rig, day) is one contiguous run, found by
comparing neighbours, and one compiled pass (`kernels.kpi_runs`) reduces each: no groupby.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.rig import kernels
from aero_assets.rig.cleaning import neighbour_changes, to_numpy
from aero_assets.rig.schema import TS_TYPE

NS_PER_DAY = 86_400 * 1_000_000_000

KPI_SCHEMA = pa.schema(
    [
        pa.field("day", pa.string(), nullable=False),
        pa.field("rig_id", pa.string(), nullable=False),
        pa.field("readings", pa.int64(), nullable=False),
        pa.field("avg_temperature_c", pa.float64(), nullable=False),
        pa.field("min_pressure_hpa", pa.float64(), nullable=False),
        pa.field("max_pressure_hpa", pa.float64(), nullable=False),
        pa.field("alert_count", pa.int64(), nullable=False),
        pa.field("uptime_hours", pa.float64(), nullable=False),
        pa.field("first_ts", TS_TYPE, nullable=False),
        pa.field("last_ts", TS_TYPE, nullable=False),
    ]
)


def kpis_by_day(scored: pa.Table) -> pa.Table:
    """KPIs for every (day, rig) in `scored` (sorted by rig_id, ts, as `score` returns it), in that order.

    uptime_hours is the sum of the positive steps of the uptime counter within the day: the same as
    max - min for a counter that only rises, and still right across a counter reset (the negative
    step at the reset is ignored instead of turning max - min into the counter's whole history).
    """
    n = scored.num_rows
    if n == 0:
        return KPI_SCHEMA.empty_table()
    new_run = np.ones(n, dtype=bool)  # a run starts where rig_id or day differs from the row before
    if n > 1:
        with ThreadPoolExecutor(1) as pool:  # (Arrow releases the GIL: both comparisons at once)
            day_changes = pool.submit(neighbour_changes, scored["day"])
            new_run[1:] = neighbour_changes(scored["rig_id"])
            new_run[1:] |= day_changes.result()
    starts = np.flatnonzero(new_run)
    alert = pc.or_(scored["temperature_alert"], scored["pressure_alert"]).to_numpy(zero_copy_only=False)
    count, mean_t, min_p, max_p, alerts, gained, first_ts, last_ts = kernels.kpi_runs(
        starts,
        to_numpy(scored["ts"].cast(pa.int64())),
        to_numpy(scored["temperature_c"]),
        to_numpy(scored["pressure_hpa"]),
        to_numpy(scored["uptime_h"]),
        alert,
    )
    first = pa.array(starts)
    return pa.Table.from_arrays(
        [
            scored["day"].take(first),
            scored["rig_id"].take(first),
            pa.array(count),
            pa.array(mean_t),
            pa.array(min_p),
            pa.array(max_p),
            pa.array(alerts),
            pa.array(gained),
            pa.array(first_ts).cast(TS_TYPE),
            pa.array(last_ts).cast(TS_TYPE),
        ],
        schema=KPI_SCHEMA,
    )


def daily_kpis(scored: pa.Table, day: str) -> pa.Table:
    """KPIs per rig for one `day` ('YYYY-MM-DD') of scored readings (other days' rows are ignored)."""
    return kpis_by_day(scored.filter(pc.equal(scored["day"], day)))
