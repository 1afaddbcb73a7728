"""`tires_readings_sensor`: lands `tires.raw` when enough waits, then refreshes the hours the landing touched.

Cheap by design: it compares the landing group's committed offsets with the watermarks and, when
something waits, peeks at one message per partition for its age; it never reads the backlog. A
landing is asked for when at least `min_messages` wait or the oldest waiting message is older
than `max_wait_s` (DESIGN.md "Data flow"), so a laptop is not flooded with tiny runs. The run key
names the topic incarnation and the committed offsets it starts from, so a tick repeated while a
landing is queued asks for nothing new.

Each landing records the hours its readings fell in (`hours_touched`); the sensor turns new
landings into one run per touched hour of windows, alerts and fleet status - late readings
included, so a closed hour is re-materialized when a straggler arrives.
"""


import json
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import KafkaException

from aero_assets.keys import TIRE_READINGS, TIRES_HOUR_CHAIN, TIRES_RAW_TOPIC_ASSET, tires_hourly
from resources.kafka import BrokerUnavailable, KafkaResource
from sensors.kafka_events import LandingPolicy, kafka_skip_reason, waiting

RETRY_WINDOW_S = 600  # a landing that failed for good is asked for again after this long


def build_tires_sensor(raw_topic: str, policy: LandingPolicy | None = None,
                       minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    policy = policy or LandingPolicy.from_env(prefix="AERO_TIRES_LANDING")

    @dg.sensor(
        name="tires_readings_sensor",
        asset_selection=[TIRE_READINGS, *TIRES_HOUR_CHAIN],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Lands `{raw_topic}` when ≥ {policy.min_messages:,} messages wait or the oldest waited "
                    f"{policy.max_wait_s:g} s; then refreshes windows, alerts and fleet status of every hour the "
                    "landing touched (late data included).",
    )
    def tires_readings_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        cursor = _Cursor.load(context.cursor)
        requests: list[dg.RunRequest] = []

        # 1. hours touched by landings that finished since the last tick
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TIRE_READINGS, after_storage_id=cursor.after_storage_id),
            limit=200, ascending=True).records
        hours: set[str] = set()
        for rec in records:
            meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
            touched = meta.get("hours_touched")
            hours.update(touched.value if touched is not None else [])
            cursor.after_storage_id = max(cursor.after_storage_id, rec.storage_id)
        # an hour that is not a partition yet (a sensor clock ahead, up to the decoder's hour of slack)
        # waits in the cursor; one before the partitions' start is never materialized, and says so
        hours |= set(cursor.pending)
        ready = {h for h in hours if tires_hourly.has_partition_key(h)}
        early = {h for h in hours - ready if h < tires_hourly.start.strftime("%Y-%m-%d-%H:%M")}
        if early:
            context.log.warning(f"readings before the first hourly partition ({sorted(early)[:5]}) are landed "
                                "(tires.readings) but get no windows or alerts")
        cursor.pending = sorted(hours - ready - early)
        hours = ready
        for hour in sorted(hours):
            requests.append(dg.RunRequest(
                run_key=f"tires-hour/{hour}/{cursor.after_storage_id}", partition_key=hour,
                asset_selection=TIRES_HOUR_CHAIN, tags={"aero/trigger": "landing", "aero/hour": hour}))

        # 2. a landing, when enough waits
        reason = ""
        try:
            identity = kafka.identity(raw_topic)
            if identity is None:
                reason = f"Topic {raw_topic} does not exist yet."
            else:
                committed, lag, oldest = waiting(kafka, identity)
                if policy.due(lag, oldest):
                    start = ",".join(f"{p}:{o}" for p, o in sorted(committed.items()))
                    requests.append(dg.RunRequest(
                        run_key=f"{raw_topic}@{identity.incarnation}/{start}/{int(time.time()) // RETRY_WINDOW_S}",
                        asset_selection=[TIRE_READINGS],
                        tags={"aero/topic": raw_topic, "aero/incarnation": identity.incarnation,
                              "aero/start_offsets": start, "aero/waiting_hint": str(lag)}))
                else:
                    reason = (f"{lag:,} message(s) wait on {raw_topic}"
                              + (f", the oldest for {oldest:.0f} s" if oldest is not None else "")
                              + f" (landing at {policy.min_messages:,} or {policy.max_wait_s:g} s).")
        except (BrokerUnavailable, KafkaException) as exc:
            reason = kafka_skip_reason(raw_topic, exc)
        if not requests:
            if records or cursor.pending:  # landings without ready hours: remember them
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=reason or "Nothing to do.")
            return dg.SkipReason(reason or "Nothing to do.")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(),
                               asset_events=[dg.AssetObservation(asset_key=TIRES_RAW_TOPIC_ASSET,
                                                                 metadata={"hours_requested": len(hours)})])

    return tires_readings_sensor


@dataclass
class _Cursor:
    after_storage_id: int = 0
    pending: list[str] = field(default_factory=list)  # touched hours that are not partitions yet

    @classmethod
    def load(cls, raw: str | None) -> "_Cursor":
        try:
            obj = json.loads(raw or "{}")
            return cls(int(obj.get("after_storage_id", 0)), [str(h) for h in obj.get("pending", [])][:1000])
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"after_storage_id": self.after_storage_id, "pending": self.pending})
