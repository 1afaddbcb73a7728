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
import os
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import KafkaException, TopicPartition

from aero_assets.keys import TIRE_READINGS, TIRES_HOUR_CHAIN, TIRES_RAW_TOPIC_ASSET, tires_hourly
from aero_assets.landing import LANDING_GROUP
from resources.kafka import BrokerUnavailable, KafkaResource, TopicIdentity
from resources.settings import SettingsError
from sensors.kafka_events import kafka_skip_reason

RETRY_WINDOW_S = 600  # a landing that failed for good is asked for again after this long


@dataclass(frozen=True)
class LandingPolicy:
    min_messages: int = 20_000
    max_wait_s: float = 20.0

    @classmethod
    def from_env(cls, env=None) -> "LandingPolicy":
        env = os.environ if env is None else env
        out = {}
        for name, attr, cast, lo in (("AERO_TIRES_LANDING_MIN_MESSAGES", "min_messages", int, 1),
                                      ("AERO_TIRES_LANDING_MAX_WAIT_S", "max_wait_s", float, 0.0)):
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                value = cast(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number: set it to a {cast.__name__} >= {lo}.") from None
            if value < lo:
                raise SettingsError(f"{name}={value} is too small: set it to a value >= {lo}.")
            out[attr] = value
        return cls(**out)


def waiting(kafka: KafkaResource, identity: TopicIdentity, group_id: str = LANDING_GROUP,
            now_ms: int | None = None) -> tuple[dict[int, int], int, float | None]:
    """(committed offset per partition, messages waiting (a lower bound on Tansu), age of the oldest in s)."""
    # the landing's group, to read its committed offsets; peeking with assign() commits nothing
    consumer = kafka.consumer(group_id, **{"enable.partition.eof": False})
    try:
        tps = [TopicPartition(identity.topic, p) for p in identity.partitions]
        committed = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=5)}
        lag, oldest = 0, None
        for p in identity.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(identity.topic, p), timeout=5)
            start = max(committed.get(p, 0), low)
            if high <= start:
                continue
            lag += high - start
            consumer.assign([TopicPartition(identity.topic, p, start)])
            msg = consumer.poll(2.0)
            if msg is not None and msg.error() is None:
                _, ts_ms = msg.timestamp()
                if ts_ms > 0:
                    age = ((now_ms if now_ms is not None else time.time() * 1000) - ts_ms) / 1000
                    oldest = age if oldest is None else max(oldest, age)
        return committed, lag, oldest
    finally:
        consumer.close()


def build_tires_sensor(raw_topic: str, policy: LandingPolicy | None = None,
                       minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    policy = policy or LandingPolicy.from_env()

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
                if lag and (lag >= policy.min_messages or (oldest is not None and oldest >= policy.max_wait_s)):
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
