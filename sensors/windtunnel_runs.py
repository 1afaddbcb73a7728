"""`windtunnel_run_sensor`: a finished run on the lifecycle topic becomes one run of the whole chain.

Cheap by design: it reads only the small lifecycle topic, never samples. Each `run_finished`
event adds the run's dynamic partition and requests landing, QC, processing, metrics, comparison
and export in one run (blocking checks stop it early for bad runs), with a run key naming topic,
incarnation, partition and offset, so a repeated tick never duplicates a run and an event of a
new topic incarnation is never mistaken for an old one.
"""


import dagster as dg
from confluent_kafka import KafkaException

from aero_assets.codec import RunEventsDecoder, content_type_of
from aero_assets.keys import RUNS_TOPIC_ASSET, SAMPLES_TOPIC_ASSET, WINDTUNNEL_RUN_CHAIN, windtunnel_runs
from aero_assets.landing import LANDING_GROUP
from resources.kafka import BrokerUnavailable, KafkaResource
from sensors.kafka_events import TopicCursor, kafka_skip_reason, landing_lag_hint, read_events


def build_windtunnel_run_sensor(runs_topic: str, samples_topic: str,
                                minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    decoder = RunEventsDecoder()

    @dg.sensor(
        name="windtunnel_run_sensor",
        asset_selection=WINDTUNNEL_RUN_CHAIN,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"When `run_finished` appears on `{runs_topic}`: lands, QCs, processes, measures, "
                    "compares and exports that run, in one run.",
    )
    def windtunnel_run_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        cursor = TopicCursor.from_json(context.cursor)
        try:
            identity = kafka.identity(runs_topic)
            if identity is None:
                return dg.SkipReason(f"Topic {runs_topic} does not exist yet: no run has been published.")
            read = read_events(kafka, runs_topic, cursor, identity)
        except (BrokerUnavailable, KafkaException) as exc:
            # any Kafka failure (outage, a refused client config, a coordinator error) skips this tick
            # with the reason; the cursor is not moved, so the next tick reads the same events again
            return dg.SkipReason(kafka_skip_reason(runs_topic, exc))
        if read.incarnation_changed_from:
            context.log.warning(
                f"{runs_topic} is a new incarnation ({read.incarnation_changed_from} -> {identity.incarnation}): "
                "the broker restarted or the topic was recreated; reading it from the beginning."
            )
        requests, new_ids, bad = [], [], 0
        for ev in read.events:
            try:
                decoded = decoder.decode(ev.value, ev.key, content_type_of(ev.headers, ev.value))
            except Exception as exc:  # DecodeError, or a decoder bug: never let one event stop every tick
                bad += 1  # the landing sends it to the DLQ with this reason; the sensor only reports it
                context.log.warning(f"skipping invalid event at {runs_topic}/{ev.partition}@{ev.offset}: {exc}")
                continue
            if decoded.table["event"][0].as_py() != "run_finished":
                continue
            run_id = decoded.split
            if run_id not in new_ids and not context.instance.has_dynamic_partition(windtunnel_runs.name, run_id):
                new_ids.append(run_id)
            requests.append(
                dg.RunRequest(
                    run_key=f"{runs_topic}@{identity.incarnation}/{ev.partition}/{ev.offset}",
                    partition_key=run_id,
                    asset_selection=WINDTUNNEL_RUN_CHAIN,
                    tags={
                        "aero/topic": runs_topic,
                        "aero/incarnation": identity.incarnation,
                        "aero/partition": str(ev.partition),
                        "aero/offset": str(ev.offset),
                    },
                )
            )
        if not read.events and not read.incarnation_changed_from and read.cursor.offsets == cursor.offsets:
            return dg.SkipReason(f"No new events on {runs_topic}.")
        context.log.info(f"{len(read.events)} events read, {len(requests)} finished runs, {bad} invalid")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[windtunnel_runs.build_add_request(new_ids)] if new_ids else [],
            cursor=read.cursor.to_json(),
            asset_events=_topic_observations(kafka, identity, read, bad, samples_topic),
        )

    return windtunnel_run_sensor


def _topic_observations(kafka: KafkaResource, runs_identity, read, invalid: int,
                        samples_topic: str) -> list[dg.AssetObservation]:
    """What the topics look like, shown on their (external) assets in the UI; only on ticks that read events."""
    obs = [dg.AssetObservation(asset_key=RUNS_TOPIC_ASSET, metadata={
        "incarnation": runs_identity.incarnation,
        "cluster_id": runs_identity.cluster_id,
        "next_offsets": dg.MetadataValue.json({str(p): o for p, o in read.cursor.offsets.items()}),
        "events_read": len(read.events),
        "invalid_events": invalid,
    })]
    try:
        samples = kafka.identity(samples_topic)
        if samples is not None:
            obs.append(dg.AssetObservation(asset_key=SAMPLES_TOPIC_ASSET, metadata={
                "incarnation": samples.incarnation,
                "landing_lag_hint": dg.MetadataValue.json(landing_lag_hint(kafka, samples, LANDING_GROUP)),
                "note": "messages not yet landed, from watermarks: a lower bound on Tansu",
            }))
    except (BrokerUnavailable, KafkaException):
        pass  # the observation is a courtesy; the run requests above matter
    return obs
