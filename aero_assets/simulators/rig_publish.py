"""`aero simulate rig`: propulsion test rigs reporting on `rig.readings`, and CSV files for the inbox.

The simulation spans `hours` of rig time from `now - backfill`; readings already in the past are
published at once (history), later ones when their time comes, at the seed's cadence (6 minutes by
default). Planted faults (nulls, outliers, duplicates, a drifting sensor, impossible values) are
written as ground truth to `$AERO_HOME/ground_truth/rig/<run>.parquet`, which the anomalies asset
scores itself against.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from aero_assets.simulators.publish import JSON_HEADERS, produce_waiting
from resources.kafka import KafkaResource
from resources.settings import Settings

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_interval(text: str) -> float:
    """'6m', '30s', '1h' or plain seconds -> seconds."""
    m = _INTERVAL.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not an interval: use e.g. 6m, 30s, 1h or seconds")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def iso(ns: int) -> str:
    """Millisecond ISO-8601, from integers (a float of epoch seconds would move the last digit)."""
    ms = ns // 1_000_000
    base = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms % 1000:03d}Z"


def _value(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 3)


def reading_message(row) -> bytes:
    return json.dumps({"rig_id": row.rig_id, "ts": iso(int(row.ts)), "temperature_c": _value(row.temperature_c),
                       "pressure_hpa": _value(row.pressure_hpa), "uptime_h": _value(row.uptime_h)}).encode()


def write_csv(readings: pd.DataFrame, path: Path, *, seed_header: bool = True) -> Path:
    """Readings of one rig as the seed's CSV (`timestamp,temperature,pressure,uptime`), atomically."""
    df = pd.DataFrame({"timestamp": [iso(int(t)) for t in readings["ts"]],
                       "temperature": readings["temperature_c"].round(3),
                       "pressure": readings["pressure_hpa"].round(3), "uptime": readings["uptime_h"].round(3)})
    if not seed_header:
        df.insert(0, "rig_id", readings["rig_id"].astype(str).to_numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def simulate_rig(settings: Settings, *, rigs: int, interval_s: float = 360.0, hours: float = 12.0,
                 backfill_h: float | None = None, faults: bool = True, seed: int | None = None,
                 run_id: str | None = None, first_rig: int = 1, kafka: KafkaResource | None = None,
                 progress: bool = True, stop: threading.Event | None = None) -> dict:
    """Publish the readings; returns a summary with the ground-truth file."""
    from aero_assets.rig.simulate import simulate_rigs

    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    topic = settings.topics.rig_readings
    kafka.ensure_topics([topic])
    stop = stop or threading.Event()
    backfill_h = hours if backfill_h is None else backfill_h
    start_ns = time.time_ns() - int(backfill_h * 3600e9)
    readings, truth = simulate_rigs(rigs, start_ns, hours, interval_s=interval_s, faults=faults, seed=seed)
    if first_rig != 1:  # another set of rigs next to earlier ones (the demo's CSV rig)
        width = max(2, len(str(rigs + first_rig - 1)))
        ren = {f"rig-{i + 1:0{max(2, len(str(rigs)))}d}": f"rig-{i + first_rig:0{width}d}" for i in range(rigs)}
        readings["rig_id"] = readings["rig_id"].astype(str).map(ren)
        truth["rig_id"] = truth["rig_id"].astype(str).map(ren)
    run_id = run_id or f"rigsim-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    gt = settings.ground_truth_dir / "rig" / f"{run_id}.parquet"
    gt.parent.mkdir(parents=True, exist_ok=True)
    # the wire carries milliseconds: the ground truth names readings the way they will be landed
    readings["ts"] = readings["ts"] // 1_000_000 * 1_000_000
    truth["ts"] = truth["ts"] // 1_000_000 * 1_000_000
    truth.assign(rig_id=truth["rig_id"].astype(str)).to_parquet(gt)
    producer = kafka.producer(**{"linger.ms": 5})
    bar = tqdm(total=len(readings), desc="simulate rig", unit="reading", disable=not progress)
    sent = 0
    for row in readings.itertuples(index=False):  # a reading every few minutes per rig: per-message is its nature
        wait = (int(row.ts) - time.time_ns()) / 1e9
        if wait > 0:
            producer.flush(10)
            if stop.wait(wait):
                break
        produce_waiting(producer, topic, str(row.rig_id).encode(), reading_message(row), JSON_HEADERS)
        producer.poll(0)
        sent += 1
        bar.update(1)
        if stop.is_set():
            break
    bar.close()
    if producer.flush(60) > 0:
        raise RuntimeError("rig readings were not acknowledged by the broker within 60 s")
    return {"run_id": run_id, "rigs": rigs, "readings": sent, "faults": len(truth),
            "anomalies_planted": int(truth["anomaly"].sum()) if "anomaly" in truth else None,
            "ground_truth": str(gt)}
