"""`aero simulate tires`: the fleet on `tires.raw`, the way vehicle gateways publish it.

Each tick, each vehicle's gateway sends its on-time readings as one message (NDJSON, one line per
tire, key = vehicle id). A `late_fraction` of readings is held back and sent on its own later
(5-180 s), so landing and windows see late and out-of-order data. Planted episodes are appended
to `$AERO_HOME/ground_truth/tires/<fleet>.jsonl` as they start, so a `--forever` run can be
scored at any time.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from pathlib import Path

from tqdm import tqdm

from aero_assets.simulators.publish import JSON_HEADERS, produce_waiting
from aero_assets.simulators.tires import TIRES, TireFleet, delays_s, iso
from resources.kafka import KafkaResource
from resources.settings import Settings


def reading_line(vehicle_id: str, tire: str, pressure: float, temperature: float, ts_ns: int) -> str:
    return (f'{{"vehicle_id":"{vehicle_id}","tire":"{tire}","pressure_kpa":{pressure:.2f},'
            f'"temperature_c":{temperature:.2f},"ts":"{iso(ts_ns)}"}}')


def simulate_tires(settings: Settings, *, vehicles: int, rate_hz: float, duration_s: float | None,
                   late_fraction: float = 0.02, seed: int | None = None, fleet_id: str = "fleet",
                   episode_rate: float = 3.0, first_episode_within_s: float | None = 45.0, fast: bool = False,
                   kafka: KafkaResource | None = None, progress: bool = True,
                   stop: threading.Event | None = None) -> dict:
    """Publish the fleet; `duration_s=None` runs until `stop` is set. Returns a summary."""
    if duration_s is None and fast:
        raise ValueError("--fast needs a --duration (it publishes a span of the past as fast as it can)")
    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    kafka.ensure_topics([settings.topics.tires_raw])
    producer = kafka.producer(**{"linger.ms": 5, "compression.type": "lz4"})
    topic = settings.topics.tires_raw
    stop = stop or threading.Event()
    now = time.time_ns()
    start_ns = now - int(duration_s * 1e9) if fast else now
    fleet = TireFleet(vehicles, rate_hz, seed=seed, fleet_id=fleet_id, start_ns=start_ns,
                      episode_rate=episode_rate, first_episode_within_s=first_episode_within_s)
    gt_path = settings.ground_truth_dir / "tires" / f"{fleet_id}.jsonl"
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    ticks = None if duration_s is None else int(duration_s * rate_hz)
    late: list[tuple[int, int, bytes, bytes]] = []  # (due ns, seq, key, value)
    sent = episodes = seq = 0
    bar = tqdm(total=None if ticks is None else ticks * vehicles * 4, desc="simulate tires", unit="reading",
               disable=not progress, smoothing=0.1)
    wall0 = time.monotonic()
    tick = 0
    with gt_path.open("a") as gt:
        while not stop.is_set() and (ticks is None or tick < ticks):
            ts, pressure, temperature, new = fleet.step()
            for ep in new:
                gt.write(json.dumps(ep.ground_truth()) + "\n")
                gt.flush()
                episodes += 1
            delay = delays_s(fleet.rng, vehicles * 4, late_fraction).reshape(vehicles, 4)
            for v in range(vehicles):
                vid = fleet.ids[v]
                key = vid.encode()
                lines = []
                for k in range(4):
                    line = reading_line(vid, TIRES[k], pressure[v, k], temperature[v, k], ts)
                    if delay[v, k] > 0:
                        seq += 1
                        heapq.heappush(late, (ts + int(delay[v, k] * 1e9), seq, key, line.encode()))
                    else:
                        lines.append(line)
                if lines:
                    produce_waiting(producer, topic, key, "\n".join(lines).encode(), JSON_HEADERS)
                    sent += len(lines)
            clock = fleet.t_ns if fast else time.time_ns()
            while late and late[0][0] <= clock:
                _, _, key, value = heapq.heappop(late)
                produce_waiting(producer, topic, key, value, JSON_HEADERS)
                sent += 1
            producer.poll(0)
            bar.update(vehicles * 4)
            tick += 1
            if not fast:  # pace at wall-clock speed: event time is now
                wait = wall0 + tick / rate_hz - time.monotonic()
                if wait > 0:
                    stop.wait(wait)
        for _, _, key, value in sorted(late):  # what is still held back goes out at the end, late
            produce_waiting(producer, topic, key, value, JSON_HEADERS)
            sent += 1
    bar.close()
    if producer.flush(60) > 0:
        raise RuntimeError("tire readings were not acknowledged by the broker within 60 s")
    return {"fleet_id": fleet_id, "vehicles": vehicles, "readings": sent, "episodes": episodes,
            "ground_truth": str(gt_path), "seconds": round(time.monotonic() - wall0, 2)}


def read_ground_truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["read_ground_truth", "reading_line", "simulate_tires"]
