"""A tire fleet: four tires per vehicle, pressure and temperature that follow speed and weather.

Physics (vectorised over vehicles x tires, one NumPy step per tick):
- each vehicle follows a drive cycle of target speeds (stops, town, country, motorway) with a
  bounded acceleration; ambient temperature per vehicle drifts slowly;
- tire temperature relaxes (time constant ~5 min) towards ambient plus rolling-resistance heating
  that grows with speed (25-70 °C in normal driving), so pressure never swings fast enough on its own
  to look like a puncture;
- gauge pressure follows the ideal-gas law from a cold pressure set at 20 °C (225-250 kPa),
  so a hot tire reads higher; sensors add noise (0.5 kPa, 0.3 °C).

Planted episodes, written as ground truth: `slow_leak` (1.5-5 kPa/min until well under 200 kPa,
then reinflated), `puncture` (40-120 kPa/min down to 60-150 kPa, then repaired), `overheat`
(95-120 °C for one to three minutes). Normal driving never reads below 205 kPa or above 85 °C, so
every alert on simulated data belongs to a planted episode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from aero_assets.codec import TS_TYPE

TIRES = ("FL", "FR", "RL", "RR")
KINDS = ("slow_leak", "puncture", "overheat")
EXPECTED_ALERTS = {"slow_leak": ["low_pressure"], "puncture": ["rapid_pressure_loss", "low_pressure"],
                   "overheat": ["high_temperature"]}
_SPEEDS = np.array([0.0, 30.0, 50.0, 80.0, 100.0, 120.0])  # km/h targets of the drive cycle
_MIN_GAP_S = 180.0  # between two episodes of one tire


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Episode:
    vehicle_id: str
    tire: str
    kind: str
    start_ns: int
    end_ns: int
    rate: float  # kPa/min lost (leaks) or peak °C (overheat)
    floor_kpa: float = 0.0

    def ground_truth(self) -> dict:
        d = asdict(self)
        d.update(start=iso(self.start_ns), end=iso(self.end_ns), expected_alerts=EXPECTED_ALERTS[self.kind])
        return d


class TireFleet:
    """State of a fleet; `step()` advances one tick and returns that tick's readings."""

    def __init__(self, vehicles: int, rate_hz: float, *, seed: int | None = None, fleet_id: str = "fleet",
                 start_ns: int, episode_rate: float = 3.0, first_episode_within_s: float | None = 45.0):
        if vehicles < 1 or rate_hz <= 0:
            raise ValueError("need at least one vehicle and a positive rate")
        self.rng = np.random.default_rng(seed)
        self.n, self.dt, self.t_ns = vehicles, 1.0 / rate_hz, start_ns
        self.ids = np.array([f"{fleet_id}-v{i:03d}" for i in range(vehicles)], dtype=object)
        self.episode_rate = episode_rate
        rng = self.rng
        self.speed = rng.choice(_SPEEDS, vehicles)
        self.target = self.speed.copy()
        self.next_change = rng.uniform(20, 120, vehicles)
        self.ambient = rng.uniform(5, 35, vehicles)
        self.p_cold = rng.uniform(225, 250, (vehicles, 4))
        self.temp = self._steady_temp() + rng.normal(0, 1, (vehicles, 4))
        self.loss = np.zeros((vehicles, 4))  # kPa lost to a leak or puncture
        self.heat = np.zeros((vehicles, 4))  # °C added by an overheating episode
        self.busy_until = np.zeros((vehicles, 4))  # seconds since start: no new episode before
        self.active: list[tuple[int, int, Episode, float]] = []  # (vehicle, tire, episode, start s)
        self.cooling: list[tuple[int, int]] = []
        self.elapsed = 0.0
        self.first_at = rng.uniform(5, first_episode_within_s) if first_episode_within_s else None

    def _steady_temp(self) -> np.ndarray:
        heating = 0.18 * np.power(self.speed, 1.1)
        return (self.ambient + heating)[:, None] + np.array([1.5, 1.5, 0.0, 0.0])  # fronts brake, run warmer

    def _pressure(self) -> np.ndarray:
        return (self.p_cold + 101.3) * (self.temp + self.heat + 273.15) / 293.15 - 101.3 - self.loss

    def _plant(self, v: int, k: int, kind: str) -> Episode:
        rng, now = self.rng, self.elapsed
        nominal = float(self._pressure()[v, k])
        if kind == "slow_leak":
            rate, floor, hold = rng.uniform(1.5, 5.0), rng.uniform(175, 190), rng.uniform(120, 300)
            duration = (nominal - floor) / rate * 60 + hold
        elif kind == "puncture":
            rate, floor, hold = rng.uniform(40, 120), rng.uniform(60, 150), rng.uniform(60, 180)
            duration = (nominal - floor) / rate * 60 + hold
        else:
            rate, floor, hold = rng.uniform(95, 120), 0.0, rng.uniform(60, 180)
            duration = rng.uniform(30, 60) + hold
        ep = Episode(self.ids[v], TIRES[k], kind, self.t_ns, self.t_ns + int(duration * 1e9), float(rate), float(floor))
        self.active.append((v, k, ep, now))
        self.busy_until[v, k] = now + duration + _MIN_GAP_S
        return ep

    def _start_episodes(self) -> list[Episode]:
        new = []
        if self.first_at is not None and self.elapsed >= self.first_at:
            self.first_at = None
            v, k = int(self.rng.integers(self.n)), int(self.rng.integers(4))
            new.append(self._plant(v, k, "puncture"))  # the quickest to show: two alert types within a minute
        p = self.episode_rate / 3600.0 * self.dt
        for v in np.flatnonzero(self.rng.random(self.n) < p):  # a few per hour: not a per-sample loop
            k = int(self.rng.integers(4))
            if self.busy_until[v, k] <= self.elapsed:
                new.append(self._plant(int(v), k, KINDS[int(self.rng.integers(3))]))
        return new

    def _apply_episodes(self) -> None:
        still = []
        for v, k, ep, t0 in self.active:
            age = self.elapsed - t0
            end = (ep.end_ns - ep.start_ns) / 1e9
            if age >= end:  # repaired / reinflated / cooled: back to normal
                self.loss[v, k] = 0.0
                self.cooling.append((v, k))  # an overheated tire cools over minutes, not at once
                continue
            if ep.kind == "overheat":
                ramp = min(1.0, age / 40.0)
                steady = self._steady_temp()[v, k]
                self.heat[v, k] = max(0.0, (ep.rate - steady) * ramp)
            else:
                nominal = float(self._pressure()[v, k] + self.loss[v, k])
                self.loss[v, k] = min(ep.rate * age / 60.0, max(0.0, nominal - ep.floor_kpa))
            still.append((v, k, ep, t0))
        self.active = still
        for v, k in self.cooling:
            self.heat[v, k] *= np.exp(-self.dt / 600.0)  # slow enough that cooling never looks like a puncture
        self.cooling = [(v, k) for v, k in self.cooling if self.heat[v, k] > 0.05]

    def step(self) -> tuple[int, np.ndarray, np.ndarray, list[Episode]]:
        """One tick: (ts ns, pressure (vehicles, 4), temperature (vehicles, 4), episodes planted now)."""
        rng, dt = self.rng, self.dt
        change = self.elapsed >= self.next_change
        if change.any():
            self.target[change] = rng.choice(_SPEEDS, int(change.sum()))
            self.next_change[change] = self.elapsed + rng.uniform(20, 120, int(change.sum()))
        self.speed += np.clip(self.target - self.speed, -7.0 * dt, 7.0 * dt)
        self.ambient += rng.normal(0, 0.002 * np.sqrt(dt), self.n)
        self.temp += (self._steady_temp() - self.temp) * min(1.0, dt / 300.0)
        new = self._start_episodes()
        self._apply_episodes()
        pressure = self._pressure() + rng.normal(0, 0.5, (self.n, 4))
        temperature = self.temp + self.heat + rng.normal(0, 0.3, (self.n, 4))
        ts = self.t_ns
        self.t_ns += round(dt * 1e9)
        self.elapsed += dt
        return ts, np.round(pressure, 2), np.round(temperature, 2), new


def delays_s(rng: np.random.Generator, n: int, late_fraction: float) -> np.ndarray:
    """Delivery delay per reading: 0 for most, 5-180 s (log-uniform) for a `late_fraction` of them."""
    late = rng.random(n) < late_fraction
    return np.where(late, np.exp(rng.uniform(np.log(5.0), np.log(180.0), n)), 0.0)


def simulate_table(vehicles: int, rate_hz: float, duration_s: float, *, seed: int | None = None, start_ns: int,
                   late_fraction: float = 0.02, episode_rate: float = 3.0, first_episode_within_s: float | None = 45.0,
                   fleet_id: str = "fleet") -> tuple[pa.Table, list[dict]]:
    """A whole simulation at once, in delivery order (late readings after their delay), with ground truth."""
    fleet = TireFleet(vehicles, rate_hz, seed=seed, fleet_id=fleet_id, start_ns=start_ns, episode_rate=episode_rate,
                      first_episode_within_s=first_episode_within_s)
    ticks = int(duration_s * rate_hz)
    p = np.empty((ticks, vehicles, 4))
    t = np.empty((ticks, vehicles, 4))
    ts = np.empty(ticks, dtype=np.int64)
    episodes = []
    for i in range(ticks):  # one vectorised step per tick
        ts[i], p[i], t[i], new = fleet.step()
        episodes += new
    n = ticks * vehicles * 4
    event = np.repeat(ts, vehicles * 4)
    deliver = event + (delays_s(fleet.rng, n, late_fraction) * 1e9).astype(np.int64)
    order = np.argsort(deliver, kind="stable")
    vid = np.tile(np.repeat(np.arange(vehicles), 4), ticks)[order]
    tire = np.tile(np.arange(4), ticks * vehicles)[order]
    table = pa.table({
        "vehicle_id": pa.DictionaryArray.from_arrays(pa.array(vid, pa.int32()), pa.array(fleet.ids.tolist())),
        "tire": pa.DictionaryArray.from_arrays(pa.array(tire, pa.int8()), pa.array(TIRES)),
        "ts": pa.array(event[order]).cast(TS_TYPE),
        "pressure_kpa": p.reshape(-1)[order],
        "temperature_c": t.reshape(-1)[order],
        "deliver_ns": deliver[order],
    })
    return table, [e.ground_truth() for e in episodes]
