"""Synthetic 100 Hz telemetry with known answers, independent of the car model.

Speed follows v(d) = 200 + 80 sin(2 pi d / L) km/h round a lap of length L, so the exact lap time
is the integral of dd / v(d) and every lap is alike; tests perturb the rows (shuffle, duplicate,
cut, renumber) and check the summaries against that.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from aero_assets.codec import TS_TYPE
from aero_assets.f1.decoder import SCHEMA

L = 5891.0
SECTORS = (1900.0, 3900.0)
T0_NS = 1_790_000_000_000_000_000  # 2026-09-21


def v_kph(d):
    return 200.0 + 80.0 * np.sin(2 * np.pi * d / L)


def exact_lap_time(lo: float = 0.0, hi: float = L) -> float:
    d = np.linspace(lo, hi, 200_001)
    return float(np.trapezoid(3.6 / v_kph(d), d))


def session_table(session_id: str = "s1", laps: int = 3, extra_m: float = 1000.0, dt: float = 0.01,
                  t0_ns: int = T0_NS) -> pa.Table:
    """`laps` full laps from the line plus `extra_m` metres of the next lap, sampled every `dt`."""
    total = laps * L + extra_m
    d = np.linspace(0, total, 2_000_001)
    t = np.concatenate(([0.0], np.cumsum(np.diff(d) * 3.6 / v_kph(d[1:]))))
    ts = np.arange(0, t[-1], dt)
    dist = np.interp(ts, t, d)
    lap = (dist // L).astype(np.int32)
    lapd = dist - lap * L
    n = len(ts)
    rng = np.random.default_rng(0)
    gear = np.clip((v_kph(lapd) // 40).astype(np.int8), 1, 8)
    return pa.table({
        "session_id": pa.array([session_id] * n, pa.string()),
        "ts": pa.array(t0_ns + np.round(ts * 1e9).astype(np.int64)).cast(TS_TYPE),
        "lap": pa.array(lap + 1, pa.int32()),
        "distance_m": lapd.astype(np.float32),
        "x_m": np.cos(2 * np.pi * lapd / L).astype(np.float32) * 900,
        "y_m": np.sin(2 * np.pi * lapd / L).astype(np.float32) * 900,
        "speed_kph": v_kph(lapd).astype(np.float32),
        "throttle": np.clip(rng.random(n) * 1.2, 0, 1).astype(np.float32),
        "brake": (rng.random(n) < 0.1).astype(np.float32),
        "gear": pa.array(gear, pa.int8()),
        "rpm": np.full(n, 11000, np.float32),
        "g_lat": np.sin(ts).astype(np.float32) * 4,
        "g_long": np.cos(ts).astype(np.float32) * 3,
        "fuel_kg": (50 - dist / L * 1.7).astype(np.float32),
    }, schema=SCHEMA)
