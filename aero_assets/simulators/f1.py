"""A simulated F1 session at Silverstone: an out-lap from the pit box, then flying laps, at 100 Hz.

Pure NumPy on top of the car model (`aero_assets.f1.car`): each lap is one vectorised
`simulate_lap` (~10 ms), chained so speed and fuel carry over the line, with driver noise from lap
to lap. Yields one Arrow table per lap in the telemetry schema, plus the time the car crossed the
line, so a publisher can send the lap's rows and its `lap_completed` event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aero_assets.codec import TS_TYPE
from aero_assets.f1.car import CarParams, simulate_lap
from aero_assets.f1.decoder import SCHEMA
from aero_assets.f1.track import Track, silverstone

PIT_BOX_M = 30.0  # the box, level with the line in the pit lane; the out-lap starts here at the pit limit


@dataclass(frozen=True)
class SimLap:
    lap: int
    table: pa.Table
    start_ns: int
    end_ns: int  # when the car crossed the line at the lap's end
    lap_time_s: float


def session_laps(session_id: str, laps: int, start_ns: int, *, seed: int | None = None, out_lap: bool = True,
                 track: Track | None = None, params: CarParams | None = None,
                 fuel_kg: float | None = None) -> Iterator[SimLap]:
    """The out-lap (lap 0, from the pit box) when `out_lap`, then `laps` flying laps numbered 1.."""
    track = track or silverstone()
    params = params or CarParams()
    rng = np.random.default_rng(seed)
    fuel = params.session_fuel_kg if fuel_kg is None else fuel_kg
    t_ns = start_ns
    speed = None
    numbers = ([0] if out_lap else []) + list(range(1, laps + 1))
    for number in numbers:
        if number == 0:
            lap = simulate_lap(track, params, fuel_start_kg=fuel, rng=rng, start_m=PIT_BOX_M, pit_exit=True)
        else:
            lap = simulate_lap(track, params, fuel_start_kg=fuel, rng=rng, start_speed_ms=speed)
        n = len(lap["t_s"])
        ts = t_ns + np.round(lap["t_s"] * 1e9).astype(np.int64)
        table = pa.table({
            "session_id": pa.array([session_id] * n, pa.string()) if n else pa.array([], pa.string()),
            "ts": pa.array(ts).cast(TS_TYPE),
            "lap": pa.array(np.full(n, number, dtype=np.int32)),
            **{c: pa.array(np.asarray(lap[c], dtype=np.float32)) for c in ("distance_m", "x_m", "y_m")},
            "speed_kph": pa.array(np.maximum(np.asarray(lap["speed_kph"], dtype=np.float32), 0)),
            "throttle": pa.array(np.clip(lap["throttle"], 0, 1).astype(np.float32)),
            "brake": pa.array(np.clip(lap["brake"], 0, 1).astype(np.float32)),
            "gear": pa.array(np.asarray(lap["gear"], dtype=np.int8)),
            **{c: pa.array(np.asarray(lap[c], dtype=np.float32)) for c in ("rpm", "g_lat", "g_long", "fuel_kg")},
        }, schema=SCHEMA)
        end_ns = t_ns + round(lap.lap_time_s * 1e9)
        yield SimLap(number, table, t_ns, end_ns, lap.lap_time_s)
        # the next lap's first sample is taken at the line, when the car crosses it
        t_ns = end_ns
        speed, fuel = lap.end_speed_ms, lap.fuel_end_kg


def ndjson_messages(table: pa.Table, samples_per_message: int) -> list[bytes]:
    """The lap's rows as JSON lines (`ts` in epoch ms), `samples_per_message` lines per message.

    pandas' C JSON writer formats a 9,000-row lap in ~20 ms, where a Python f-string per row takes 5x that.
    """
    df = table.to_pandas()
    df["ts"] = table["ts"].cast(pa.int64()).to_numpy() // 1_000_000
    for c in ("distance_m", "x_m", "y_m", "speed_kph", "throttle", "brake", "rpm", "g_lat", "g_long"):
        df[c] = df[c].astype(np.float64).round(3)
    df["fuel_kg"] = df["fuel_kg"].astype(np.float64).round(4)
    lines = df.to_json(orient="records", lines=True).encode().split(b"\n")
    lines = [ln for ln in lines if ln]
    return [b"\n".join(lines[i:i + samples_per_message]) for i in range(0, len(lines), samples_per_message)]
