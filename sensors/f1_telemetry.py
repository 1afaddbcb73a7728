"""`f1_telemetry_sensor`: sessions become partitions, telemetry lands, completed laps get summarised.

Cheap by design, as the other domains' sensors: it reads only the small lifecycle topic
`f1.sessions` (cursor = topic incarnation + offsets, stored in the same `SensorResult` as its run
requests) and compares the landing group's offsets with the watermarks of `f1.telemetry`.
- `session_started` (or any event of an unknown session) adds the session's dynamic partition.
- A landing of `f1/telemetry` is asked for when a lap completes or the session finishes (the event
  says there is a lap to summarise now), or when the backlog policy says so (`AERO_F1_LANDING_*`).
- Each landing reports the highest lap it landed per session; when that rises (a lap completed)
  or the session has finished, the session's summaries and release run (one run per session).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import KafkaException, TopicPartition

from aero_assets.codec import content_type_of
from aero_assets.f1.decoder import SessionEventsDecoder
from aero_assets.keys import (
    F1_SESSION_CHAIN,
    F1_SESSIONS_TOPIC_ASSET,
    F1_TELEMETRY,
    F1_TELEMETRY_TOPIC_ASSET,
    f1_sessions,
)
from resources.kafka import BrokerUnavailable, KafkaResource
from sensors.kafka_events import (
    LANDING_GROUP,
    LandingPolicy,
    TopicCursor,
    backlog_note,
    kafka_skip_reason,
    landing_request,
    landings_since,
    read_events,
    waiting,
)

RETRY_WINDOW_S = 600  # a landing that failed for good is asked for again after this long
MAX_TRACKED = 500  # sessions remembered in the cursor (oldest forgotten first)


@dataclass
class _Cursor:
    events: TopicCursor = field(default_factory=TopicCursor)
    after_storage_id: int = 0
    summarised: dict[str, int] = field(default_factory=dict)  # session -> highest landed lap asked for
    finished: list[str] = field(default_factory=list)
    land_due: bool = False

    @classmethod
    def load(cls, raw: str | None) -> _Cursor:
        try:
            obj = json.loads(raw or "{}")
            return cls(TopicCursor.from_json(json.dumps(obj.get("events", {}))), int(obj.get("after_storage_id", 0)),
                       {str(k): int(v) for k, v in obj.get("summarised", {}).items()},
                       [str(s) for s in obj.get("finished", [])], bool(obj.get("land_due", False)))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        keep = list(self.summarised)[-MAX_TRACKED:]
        return json.dumps({"events": json.loads(self.events.to_json()), "after_storage_id": self.after_storage_id,
                           "summarised": {k: self.summarised[k] for k in keep},
                           "finished": self.finished[-MAX_TRACKED:], "land_due": self.land_due})


def build_f1_sensor(telemetry_topic: str, sessions_topic: str, policy: LandingPolicy | None = None,
                    minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    policy = policy or LandingPolicy.from_env(prefix="AERO_F1_LANDING", min_messages=5_000, max_wait_s=15.0)
    decoder = SessionEventsDecoder()

    @dg.sensor(
        name="f1_telemetry_sensor",
        asset_selection=[F1_TELEMETRY, *F1_SESSION_CHAIN],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Adds a partition per session on `{sessions_topic}`; lands `{telemetry_topic}` when a lap "
                    f"completes (or ≥ {policy.min_messages:,} messages wait, or the oldest waited "
                    f"{policy.max_wait_s:g} s); then summarises and publishes the laps of each session it touched.",
    )
    def f1_telemetry_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        cursor = _Cursor.load(context.cursor)
        requests: list[dg.RunRequest] = []
        new_sessions: list[str] = []

        checked: set[str] = set()

        def know(sid: str) -> None:
            # one partition look-up per session per tick, not per event (a flood of lap events is cheap)
            if sid in checked:
                return
            checked.add(sid)
            if not context.instance.has_dynamic_partition(f1_sessions.name, sid):
                new_sessions.append(sid)

        # 1. lifecycle events: new sessions, and laps that just completed
        notes, observations = [], []
        try:
            identity = kafka.identity(sessions_topic)
            if identity is not None:
                read = read_events(kafka, sessions_topic, cursor.events, identity)
                if read.incarnation_changed_from:
                    context.log.warning(f"{sessions_topic} is a new incarnation ({read.incarnation_changed_from} -> "
                                        f"{identity.incarnation}); reading it from the beginning.")
                invalid = 0
                for ev in read.events:
                    try:
                        d = decoder.decode(ev.value, ev.key, content_type_of(ev.headers, ev.value))
                    except Exception as exc:  # the landing sends it to the DLQ with this reason
                        invalid += 1
                        context.log.warning(f"skipping invalid event at {sessions_topic}/{ev.partition}@{ev.offset}: "
                                            f"{exc}")
                        continue
                    know(d.split)
                    if d.table["event"][0].as_py() in ("lap_completed", "session_finished"):
                        cursor.land_due = True
                cursor.events = read.cursor
                if read.events:
                    observations.append(dg.AssetObservation(asset_key=F1_SESSIONS_TOPIC_ASSET, metadata={
                        "incarnation": identity.incarnation, "events_read": len(read.events),
                        "invalid_events": invalid,
                        "next_offsets": dg.MetadataValue.json({str(p): o for p, o in read.cursor.offsets.items()})}))
        except (BrokerUnavailable, KafkaException) as exc:
            return dg.SkipReason(kafka_skip_reason(sessions_topic, exc))

        # 2. sessions whose laps the landings since the last tick moved on
        records, cursor.after_storage_id = landings_since(context, F1_TELEMETRY, cursor.after_storage_id)
        touched: dict[str, int] = {}
        for meta in records:
            for sid, lap in (meta["sessions_touched"].value if "sessions_touched" in meta else {}).items():
                touched[sid] = max(touched.get(sid, -1), int(lap))
            for sid in meta["sessions_finished"].value if "sessions_finished" in meta else []:
                if sid not in cursor.finished:
                    cursor.finished.append(sid)
                    touched.setdefault(sid, cursor.summarised.get(sid, -1))
        for sid, lap in sorted(touched.items()):
            if lap > cursor.summarised.get(sid, -1) or sid in cursor.finished:
                know(sid)
                cursor.summarised[sid] = max(lap, cursor.summarised.get(sid, -1))
                requests.append(dg.RunRequest(
                    run_key=f"f1-session/{sid}/{cursor.after_storage_id}", partition_key=sid,
                    asset_selection=F1_SESSION_CHAIN, tags={"aero/trigger": "landing", "aero/session": sid}))

        # 3. a landing, when a lap completed or enough waits
        try:
            tele = kafka.identity(telemetry_topic)
            if tele is None:
                notes.append(f"Topic {telemetry_topic} does not exist yet.")
            else:
                committed, lag, oldest = waiting(kafka, tele)
                # Lap and finish events the landing has not landed yet (its committed offsets on f1.sessions
                # behind what this sensor has read) mean a lap to summarise now, even when the telemetry
                # watermark shows nothing waiting (Tansu under-reports it, and after session_finished no more
                # data comes). Asked for again until a landing has landed them, so a failed one is retried.
                events_behind = _events_not_landed(kafka, sessions_topic, cursor)
                cursor.land_due = cursor.land_due and events_behind
                if cursor.land_due or policy.due(lag, oldest):
                    window = int(time.time()) // RETRY_WINDOW_S
                    why = (f"lap events to {','.join(f'{p}:{o}' for p, o in sorted(cursor.events.offsets.items()))}"
                           f"/{window}" if cursor.land_due else f"backlog/{window}")
                    requests.append(landing_request(telemetry_topic, tele, committed, lag, F1_TELEMETRY, why, **{
                        "aero/why": "lap completed" if cursor.land_due else "backlog"}))
                    observations.append(dg.AssetObservation(asset_key=F1_TELEMETRY_TOPIC_ASSET, metadata={
                        "incarnation": tele.incarnation, "landing_lag_hint": lag}))
                else:
                    notes.append(backlog_note(telemetry_topic, lag, oldest, policy, when="when a lap completes, "))
        except (BrokerUnavailable, KafkaException) as exc:
            notes.append(kafka_skip_reason(telemetry_topic, exc))

        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[f1_sessions.build_add_request(new_sessions)] if new_sessions else [],
            cursor=cursor.dump(), asset_events=observations,
            skip_reason=None if requests or new_sessions else " ".join(notes) or "Nothing to do.",
        )

    return f1_telemetry_sensor


def _events_not_landed(kafka: KafkaResource, sessions_topic: str, cursor: _Cursor) -> bool:
    """Whether the landing group's offsets on the lifecycle topic are behind what the sensor has read."""
    identity = kafka.identity(sessions_topic)
    if identity is None or identity.incarnation != cursor.events.incarnation:
        return False
    consumer = kafka.consumer(LANDING_GROUP)
    try:
        committed = consumer.committed([TopicPartition(sessions_topic, p) for p in identity.partitions], timeout=5)
    finally:
        consumer.close()
    return any(max(tp.offset, 0) < cursor.events.offsets.get(tp.partition, 0) for tp in committed)
