"""Small synthetic tire readings with planted episodes, shared by the tire tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from aero_assets.codec import TS_TYPE

TIRES = ("FL", "FR", "RL", "RR")
S = 1_000_000_000


def iso_ms(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fleet(start_ns: int, seconds: int, vehicles: int = 2, *, puncture_at: int | None = 60,
          overheat_at: int | None = 200, leak_at: int | None = None, seed: int = 1) -> pa.Table:
    """1 Hz readings of `vehicles` x 4 tires; v000/FL punctures, v001/RR overheats (when asked)."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds)
    rows = []
    for v in range(vehicles):
        for tire in TIRES:
            p = 235 + rng.normal(0, 0.4, seconds)
            temp = 45 + rng.normal(0, 0.3, seconds)
            if v == 0 and tire == "FL" and puncture_at is not None:  # 60 kPa/min down to 150, fixed 120 s later
                drop = np.clip((t - puncture_at) * 1.0, 0, 85)
                p = p - np.where(t < puncture_at + 200, drop, 0)
            if v == 1 % vehicles and tire == "RR" and overheat_at is not None:
                temp = temp + np.where((t >= overheat_at) & (t < overheat_at + 90), 55, 0)
            if v == 0 and tire == "RL" and leak_at is not None:  # 3 kPa/min for 20 min
                p = p - np.clip((t - leak_at) * 0.05, 0, 60)
            rows.append((f"fleet-v{v:03d}", tire, start_ns + t * S, p, temp))
    vid = np.concatenate([np.full(seconds, r[0], dtype=object) for r in rows])
    tire = np.concatenate([np.full(seconds, r[1], dtype=object) for r in rows])
    ts = np.concatenate([r[2] for r in rows])
    order = np.argsort(ts, kind="stable")
    return pa.table({"vehicle_id": pa.array(vid[order], pa.string()), "tire": pa.array(tire[order], pa.string()),
                     "ts": pa.array(ts[order]).cast(TS_TYPE),
                     "pressure_kpa": np.round(np.concatenate([r[3] for r in rows])[order], 2),
                     "temperature_c": np.round(np.concatenate([r[4] for r in rows])[order], 2)})


def messages(table: pa.Table, per_message: int = 1) -> list[tuple[bytes, bytes]]:
    """(key, value) JSON messages in table order; several readings of one vehicle per message as NDJSON."""
    out: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[str]] = {}
    for r in table.to_pylist():
        line = json.dumps({"vehicle_id": r["vehicle_id"], "tire": r["tire"], "pressure_kpa": r["pressure_kpa"],
                           "temperature_c": r["temperature_c"], "ts": iso_ms(int(r["ts"].timestamp() * 1e9))})
        buf = pending.setdefault(r["vehicle_id"], [])
        buf.append(line)
        if len(buf) >= per_message:
            out.append((r["vehicle_id"].encode(), "\n".join(buf).encode()))
            pending[r["vehicle_id"]] = []
    out.extend((k.encode(), "\n".join(v).encode()) for k, v in pending.items() if v)
    return out


def publish(publisher, topic: str, table: pa.Table, per_message: int = 1) -> int:
    msgs = messages(table, per_message)
    for key, value in msgs:
        publisher.send(topic, value, key, [("content-type", b"application/json")], flush=False)
    assert publisher.producer.flush(30) == 0
    return len(msgs)
