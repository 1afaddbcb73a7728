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



import dagster as dg

from aero_assets.keys import TIRE_READINGS, TIRES_HOUR_CHAIN, TIRES_RAW_TOPIC_ASSET, tires_hourly
from resources.kafka import KafkaResource
from sensors.kafka_events import LandedCursor, LandingPolicy, backlog_landing, touched_partitions

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
        cursor = LandedCursor.load(context.cursor)
        requests: list[dg.RunRequest] = []

        # 1. hours touched by landings that finished since the last tick
        records, hours, early = touched_partitions(context, cursor, TIRE_READINGS, "hours_touched", tires_hourly)
        if early:
            context.log.warning(f"readings before the first hourly partition ({sorted(early)[:5]}) are landed "
                                "(tires.readings) but get no windows or alerts")
        for hour in sorted(hours):
            requests.append(dg.RunRequest(
                run_key=f"tires-hour/{hour}/{cursor.after_storage_id}", partition_key=hour,
                asset_selection=TIRES_HOUR_CHAIN, tags={"aero/trigger": "landing", "aero/hour": hour}))

        # 2. a landing, when enough waits
        landing, reason = backlog_landing(kafka, raw_topic, policy, TIRE_READINGS, RETRY_WINDOW_S)
        if landing is not None:
            requests.append(landing)
        if not requests:
            if records or cursor.pending:  # landings without ready hours: remember them
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=reason or "Nothing to do.")
            return dg.SkipReason(reason or "Nothing to do.")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(),
                               asset_events=[dg.AssetObservation(asset_key=TIRES_RAW_TOPIC_ASSET,
                                                                 metadata={"hours_requested": len(hours)})])

    return tires_readings_sensor
