"""`rig_readings_sensor`: lands `rig.readings` when enough waits, then refreshes the days any landing touched.

The same shape as the tire sensor: offsets and watermarks, a peek at the oldest waiting message,
a landing by backlog or age (`AERO_RIG_LANDING_*`; the seed's rigs report every 6 minutes, so the
age decides), and a run key naming the topic incarnation and start offsets. Every materialization
of `rig/readings` - from the topic or from an inbox CSV - reports the days its rows fall in; each
such day gets one run of clean readings, anomalies and KPIs.
"""

from __future__ import annotations

import dagster as dg

from aero_assets.keys import RIG_DAY_CHAIN, RIG_READINGS, RIG_TOPIC_ASSET, rig_daily
from resources.kafka import KafkaResource
from sensors.kafka_events import LandedCursor, LandingPolicy, backlog_landing, touched_partitions

RETRY_WINDOW_S = 600


def build_rig_readings_sensor(topic: str, policy: LandingPolicy | None = None,
                              minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    policy = policy or LandingPolicy.from_env(prefix="AERO_RIG_LANDING", min_messages=1_000, max_wait_s=20.0)

    @dg.sensor(
        name="rig_readings_sensor", asset_selection=[RIG_READINGS, *RIG_DAY_CHAIN],
        minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Lands `{topic}` when ≥ {policy.min_messages:,} messages wait or the oldest waited "
                    f"{policy.max_wait_s:g} s; then cleans, scores and summarises every day a landing (topic or "
                    "CSV) touched.")
    def rig_readings_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        cursor = LandedCursor.load(context.cursor)
        requests: list[dg.RunRequest] = []
        records, ready, early = touched_partitions(context, cursor, RIG_READINGS, "days_touched", rig_daily)
        if early:
            context.log.warning(f"readings before the first daily partition ({sorted(early)[:5]}) are landed "
                                "but get no clean readings, anomalies or KPIs")
        for day in sorted(ready):
            requests.append(dg.RunRequest(run_key=f"rig-day/{day}/{cursor.after_storage_id}", partition_key=day,
                                          asset_selection=RIG_DAY_CHAIN,
                                          tags={"aero/trigger": "landing", "aero/day": day}))
        landing, reason = backlog_landing(kafka, topic, policy, RIG_READINGS, RETRY_WINDOW_S)
        if landing is not None:
            requests.append(landing)
        if not requests:
            if records or cursor.pending:
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=reason or "Nothing to do.")
            return dg.SkipReason(reason or "Nothing to do.")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(),
                               asset_events=[dg.AssetObservation(asset_key=RIG_TOPIC_ASSET,
                                                                 metadata={"days_requested": len(ready)})])

    return rig_readings_sensor
