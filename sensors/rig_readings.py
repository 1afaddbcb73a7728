"""`rig_readings_sensor`: lands `rig.readings` when enough waits, then refreshes the days any landing touched.

The same shape as the tire sensor: offsets and watermarks, a peek at the oldest waiting message,
a landing by backlog or age (`AERO_RIG_LANDING_*`; the seed's rigs report every 6 minutes, so the
age decides), and a run key naming the topic incarnation and start offsets. Every materialization
of `rig/readings` - from the topic or from an inbox CSV - reports the days its rows fall in; each
such day gets one run of clean readings, anomalies and KPIs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import KafkaException

from aero_assets.keys import RIG_DAY_CHAIN, RIG_READINGS, RIG_TOPIC_ASSET, rig_daily
from resources.kafka import BrokerUnavailable, KafkaResource
from sensors.kafka_events import LandingPolicy, kafka_skip_reason, waiting

RETRY_WINDOW_S = 600


@dataclass
class _Cursor:
    after_storage_id: int = 0
    pending: list[str] = field(default_factory=list)  # touched days that are not partitions yet

    @classmethod
    def load(cls, raw: str | None) -> _Cursor:
        try:
            obj = json.loads(raw or "{}")
            return cls(int(obj.get("after_storage_id", 0)), [str(d) for d in obj.get("pending", [])][:1000])
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"after_storage_id": self.after_storage_id, "pending": self.pending})


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
        cursor = _Cursor.load(context.cursor)
        requests: list[dg.RunRequest] = []
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RIG_READINGS, after_storage_id=cursor.after_storage_id),
            limit=200, ascending=True).records
        days: set[str] = set(cursor.pending)
        for rec in records:
            meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
            touched = meta.get("days_touched")
            days.update(touched.value if touched is not None else [])
            cursor.after_storage_id = max(cursor.after_storage_id, rec.storage_id)
        ready = {d for d in days if rig_daily.has_partition_key(d)}
        early = {d for d in days - ready if d < rig_daily.start.strftime("%Y-%m-%d")}
        if early:
            context.log.warning(f"readings before the first daily partition ({sorted(early)[:5]}) are landed "
                                "but get no clean readings, anomalies or KPIs")
        cursor.pending = sorted(days - ready - early)
        for day in sorted(ready):
            requests.append(dg.RunRequest(run_key=f"rig-day/{day}/{cursor.after_storage_id}", partition_key=day,
                                          asset_selection=RIG_DAY_CHAIN,
                                          tags={"aero/trigger": "landing", "aero/day": day}))
        reason = ""
        try:
            identity = kafka.identity(topic)
            if identity is None:
                reason = f"Topic {topic} does not exist yet."
            else:
                committed, lag, oldest = waiting(kafka, identity)
                if policy.due(lag, oldest):
                    start = ",".join(f"{p}:{o}" for p, o in sorted(committed.items()))
                    requests.append(dg.RunRequest(
                        run_key=f"{topic}@{identity.incarnation}/{start}/{int(time.time()) // RETRY_WINDOW_S}",
                        asset_selection=[RIG_READINGS],
                        tags={"aero/topic": topic, "aero/incarnation": identity.incarnation,
                              "aero/start_offsets": start, "aero/waiting_hint": str(lag)}))
                else:
                    reason = (f"{lag:,} message(s) wait on {topic}"
                              + (f", the oldest for {oldest:.0f} s" if oldest is not None else "")
                              + f" (landing at {policy.min_messages:,} or {policy.max_wait_s:g} s).")
        except (BrokerUnavailable, KafkaException) as exc:
            reason = kafka_skip_reason(topic, exc)
        if not requests:
            if records or cursor.pending:
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=reason or "Nothing to do.")
            return dg.SkipReason(reason or "Nothing to do.")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(),
                               asset_events=[dg.AssetObservation(asset_key=RIG_TOPIC_ASSET,
                                                                 metadata={"days_requested": len(ready)})])

    return rig_readings_sensor
