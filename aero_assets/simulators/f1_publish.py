"""`aero simulate f1`: a session on `f1.telemetry` and `f1.sessions`, the way a car's telemetry link sends it.

Telemetry goes out as JSON lines, `samples_per_message` samples (10 = one radio frame per 100 ms)
per message, key = session id. Lifecycle events: `session_started`, one `lap_completed` per lap at
the moment the car crosses the line (after the lap's rows are on the broker), `session_finished`.
`realtime` paces the rows at wall-clock speed (the demo, `aero watch f1`); otherwise the session is
published as fast as possible, its timestamps laid out so it ends now.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from tqdm import tqdm

from aero_assets.simulators.f1 import session_laps
from aero_assets.simulators.publish import JSON_HEADERS, produce_waiting
from resources.kafka import KafkaResource
from resources.settings import Settings

LAP_ESTIMATE_S = 105.0  # an upper bound of a lap, to place a fast session's timestamps in the past


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def simulate_f1(settings: Settings, *, laps: int, session_id: str | None = None, realtime: bool = False,
                seed: int | None = None, samples_per_message: int = 10, out_lap: bool = True,
                kafka: KafkaResource | None = None, progress: bool = True, finish: bool = True,
                stop: threading.Event | None = None) -> dict:
    """Publish one session; returns a summary (session id, laps, samples, lap times, seconds)."""
    from aero_assets.ids import validate_id
    from aero_assets.simulators.f1 import ndjson_messages

    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    topics = settings.topics
    kafka.ensure_topics([topics.f1_telemetry, topics.f1_sessions])
    now = time.time_ns()
    session_id = validate_id(session_id or f"silverstone-{datetime.now(UTC):%Y%m%d-%H%M%S}", "session id")
    start_ns = now if realtime else now - int((laps + 1) * LAP_ESTIMATE_S * 1e9)
    producer = kafka.producer(**{"linger.ms": 5, "compression.type": "lz4"})
    stop = stop or threading.Event()
    key = session_id.encode()

    def event(obj: dict) -> None:
        produce_waiting(producer, topics.f1_sessions, key, json.dumps(obj).encode(), JSON_HEADERS)

    event({"event": "session_started", "session_id": session_id, "started_at": iso(start_ns),
           "track": "silverstone", "laps_planned": laps, "out_lap": out_lap})
    bar = tqdm(total=None, desc=f"simulate f1 {session_id}", unit="sample", unit_scale=True, disable=not progress)
    wall0, samples, lap_times, driven = time.monotonic(), 0, {}, 0
    for lap in session_laps(session_id, laps, start_ns, seed=seed, out_lap=out_lap):
        if stop.is_set():
            break
        msgs = ndjson_messages(lap.table, samples_per_message)
        if realtime:
            ts = lap.table["ts"].cast("int64").to_numpy()
            per = samples_per_message
            for i, value in enumerate(msgs):
                # a frame goes out when its last sample has been measured
                due = (int(ts[min((i + 1) * per, len(ts)) - 1]) - start_ns) / 1e9
                wait = wall0 + due - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
                produce_waiting(producer, topics.f1_telemetry, key, value, JSON_HEADERS)
                producer.poll(0)
                bar.update(min(per, len(ts) - i * per))
            if stop.is_set():
                break
        else:
            for value in msgs:
                produce_waiting(producer, topics.f1_telemetry, key, value, JSON_HEADERS)
            producer.poll(0)
            bar.update(lap.table.num_rows)
        samples += lap.table.num_rows
        lap_times[lap.lap] = round(lap.lap_time_s, 3)
        driven = lap.lap
        producer.flush(30)  # the lap's rows are on the broker before anyone is told it is complete
        event({"event": "lap_completed", "session_id": session_id, "lap": lap.lap, "completed_at": iso(lap.end_ns),
               "lap_time_s": round(lap.lap_time_s, 3)})
        bar.set_postfix_str(f"lap {lap.lap}: {lap.lap_time_s:.3f} s")
    if finish:
        event({"event": "session_finished", "session_id": session_id,
               "finished_at": iso(time.time_ns() if realtime else start_ns + sum(
                   int(t * 1e9) for t in lap_times.values())), "laps": driven})
    bar.close()
    if producer.flush(60) > 0:
        raise RuntimeError("F1 telemetry was not acknowledged by the broker within 60 s")
    seconds = time.monotonic() - wall0
    sim_s = sum(lap_times.values())
    return {"session_id": session_id, "laps": lap_times, "samples": samples, "seconds": round(seconds, 3),
            "realtime_factor": round(sim_s / seconds, 1) if seconds else None}
