"""`weather_observations_sensor`: lands `weather.observations`, adds new stations, then trains or monitors them.

The same shape as the other landing sensors (offsets and watermarks, a peek at the oldest waiting
message, a landing by backlog or age from `AERO_WEATHER_LANDING_*`, a run key naming the topic
incarnation and start offsets). Each landing lists the stations its rows belong to
(`stations_touched`); the sensor then, per station:

* adds it as a `forecast_stations` partition the first time it is seen;
* without a released champion: asks for the training chain once enough new observations arrived
  since the last attempt (a station with too little history skips with a reason, so asking after
  every landing would fill the run list with skips);
* with one: asks for predictions and the drift report - unless such a run is already queued, since
  a queued run reads everything landed by the time it starts (so a fast stream never builds a queue).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg

from aero_assets.keys import (
    FORECAST_MONITOR_CHAIN,
    FORECAST_TRAINING_CHAIN,
    WEATHER_OBSERVATIONS,
    WEATHER_TOPIC_ASSET,
    forecast_stations,
)
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from sensors.kafka_events import LandingPolicy, backlog_landing, landings_since

RETRY_WINDOW_S = 600
RETRAIN_AFTER_ROWS = 24  # a station without a champion is tried again after a day of new hourly observations
QUEUED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
IN_FLIGHT = [*QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass
class WeatherCursor:
    after_storage_id: int = 0
    fresh_rows: dict[str, int] = field(default_factory=dict)  # rows landed since the last training request
    asked: list[str] = field(default_factory=list)  # stations whose training was asked for at least once

    @classmethod
    def load(cls, raw: str | None) -> WeatherCursor:
        try:
            obj = json.loads(raw or "{}")
            return cls(int(obj.get("after_storage_id", 0)),
                       {str(k): int(v) for k, v in dict(obj.get("fresh_rows", {})).items()},
                       [str(s) for s in obj.get("asked", [])])
        except (ValueError, TypeError, AttributeError, OverflowError):  # json.loads reads Infinity; int() of it
            return cls()  # overflows, and a cursor that raises fails every tick

    def dump(self) -> str:
        return json.dumps({"after_storage_id": self.after_storage_id, "fresh_rows": self.fresh_rows,
                           "asked": self.asked})


def runs_for(instance, station: str, chain: str, statuses) -> bool:
    """Whether a run of `chain` ("training"/"monitor") for `station` is in one of `statuses`."""
    return bool(instance.get_run_records(
        dg.RunsFilter(tags={"aero/station": station, "aero/chain": chain}, statuses=statuses), limit=1))


def touched_stations(context, cursor: WeatherCursor) -> tuple[int, dict[str, int]]:
    """(landings since the cursor, {station: rows}) from the landings' `rows_per_station`."""
    records, cursor.after_storage_id = landings_since(context, WEATHER_OBSERVATIONS, cursor.after_storage_id)
    rows: dict[str, int] = {}
    for meta in records:
        per_station = meta.get("rows_per_station")
        for station, n in (per_station.value if per_station is not None else {}).items():
            rows[str(station)] = rows.get(str(station), 0) + int(n)
    return len(records), rows


def build_weather_sensor(topic: str, policy: LandingPolicy | None = None,
                         minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    policy = policy or LandingPolicy.from_env(prefix="AERO_WEATHER_LANDING", min_messages=2_000, max_wait_s=10.0)

    @dg.sensor(
        name="weather_observations_sensor",
        asset_selection=[WEATHER_OBSERVATIONS, *FORECAST_TRAINING_CHAIN, *FORECAST_MONITOR_CHAIN],
        minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Lands `{topic}` when ≥ {policy.min_messages:,} messages wait or the oldest waited "
                    f"{policy.max_wait_s:g} s; adds new stations; trains a station without a champion, and "
                    "forecasts and checks drift for one with a champion, after every landing that touched it.")
    def weather_observations_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, lake: LakeResource):
        from aero_assets.forecast.assets import released_champion

        cursor = WeatherCursor.load(context.cursor)
        landings, touched = touched_stations(context, cursor)
        known = set(context.instance.get_dynamic_partitions(forecast_stations.name))
        new = sorted(set(touched) - known)
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        for station in sorted(touched):
            cursor.fresh_rows[station] = cursor.fresh_rows.get(station, 0) + touched[station]
            if released_champion(lake, station) is not None:
                if runs_for(context.instance, station, "monitor", QUEUED):
                    notes.append(f"{station}: a monitoring run is already queued")
                    continue
                requests.append(dg.RunRequest(
                    run_key=f"forecast-monitor/{station}/{cursor.after_storage_id}", partition_key=station,
                    asset_selection=FORECAST_MONITOR_CHAIN,
                    tags={"aero/trigger": "landing", "aero/station": station, "aero/chain": "monitor"}))
                continue
            first = station not in cursor.asked
            if not first and cursor.fresh_rows[station] < RETRAIN_AFTER_ROWS:
                notes.append(f"{station}: no champion; {cursor.fresh_rows[station]} new rows since the last training "
                             f"attempt (tries again at {RETRAIN_AFTER_ROWS})")
                continue
            if runs_for(context.instance, station, "training", IN_FLIGHT):
                notes.append(f"{station}: training already in flight")
                continue
            cursor.fresh_rows[station] = 0
            if first:  # never cut: a station dropped from `asked` counts as new again and skips the row threshold
                cursor.asked = sorted({*cursor.asked, station})  # (fresh_rows holds every station anyway)
            requests.append(dg.RunRequest(
                run_key=f"forecast-train/{station}/{cursor.after_storage_id}", partition_key=station,
                asset_selection=FORECAST_TRAINING_CHAIN,
                tags={"aero/trigger": "new-station" if first else "landing", "aero/station": station,
                      "aero/chain": "training"}))

        landing, reason = backlog_landing(kafka, topic, policy, WEATHER_OBSERVATIONS, RETRY_WINDOW_S)
        if landing is not None:
            requests.append(landing)
        partition_requests = [forecast_stations.build_add_request(new)] if new else []
        skip = "; ".join([*notes, reason]) or "Nothing to do."
        if not requests:
            if landings or partition_requests:
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=skip,
                                       dynamic_partitions_requests=partition_requests)
            return dg.SkipReason(skip)
        return dg.SensorResult(
            run_requests=requests, cursor=cursor.dump(), dynamic_partitions_requests=partition_requests,
            asset_events=[dg.AssetObservation(asset_key=WEATHER_TOPIC_ASSET,
                                              metadata={"stations_touched": len(touched), "new_stations": len(new)})])

    return weather_observations_sensor
