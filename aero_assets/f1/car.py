"""Quasi-steady point-mass F1 car: lap speed profile on the track's 1 m grid and 100 Hz lap telemetry.

Physics assumptions (the classic lap-time-simulation "QSS" model):

* the car is a point mass; normal load is weight plus downforce, ``Fz = m g + 1/2 rho ClA v^2``;
* tyre friction is load sensitive, ``mu = mu0 * (Fz / Fz0)^-k`` with ``Fz0 = m g``: grip per unit load
  falls as downforce rises, so cornering g grows less than linearly with downforce;
* combined grip is a friction circle, ``(ax/ax_max)^2 + (ay/ay_max)^2 <= 1``; traction uses only the
  driven (rear) share of the grip, braking all four tyres plus drag, capped by the brake system;
* drive force is power-limited, ``F = eta P / v`` (ICE + ERS as one constant power), minus drag and
  rolling resistance; top speed is where that balance is zero or the rev limiter in 8th;
* the speed profile is the minimum of the corner-limit speed, a forward (acceleration) pass and a
  backward (braking) pass, both sequential loops over the ~5,900-point grid (the only per-sample loops);
* fuel flow is proportional to the power used (the 100 kg/h regulation limit at full throttle).

Everything per lap beyond that loop (time base, channels, noise) is vectorised NumPy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from aero_assets.f1.track import Track, silverstone

G = 9.81


@dataclass(frozen=True)
class CarParams:
    """A 2020s F1 car, numbers in the public ballpark (mass per regulations, 100 kg/h fuel flow)."""

    dry_mass_kg: float = 798.0
    driver_mass_kg: float = 75.0
    rho: float = 1.2  # air density, kg/m^3
    cda_m2: float = 1.4  # drag area (medium-downforce Silverstone trim, DRS closed)
    cla_m2: float = 4.8  # downforce area
    mu0: float = 1.8  # tyre friction at static load
    load_sensitivity: float = 0.15  # k in mu = mu0 (Fz/Fz0)^-k
    traction_share: float = 0.7  # share of total grip the rear (driven) tyres can use for traction
    power_kw: float = 750.0  # ICE + ERS at the crank
    drivetrain_eff: float = 0.93
    brake_cap_g: float = 5.6  # brake system limit on total deceleration
    crr: float = 0.012  # rolling resistance coefficient
    wheel_radius_m: float = 0.36
    final_drive: float = 3.2
    gear_ratios: tuple[float, ...] = (5.09, 3.64, 2.91, 2.46, 2.14, 1.90, 1.70, 1.475)
    shift_rpm: float = 12_000.0  # upshift point
    rev_limit_rpm: float = 12_500.0
    idle_rpm: float = 4_000.0
    fuel_flow_max_kg_s: float = 100.0 / 3600.0  # regulation maximum at full power
    fuel_flow_idle_kg_s: float = 0.0015  # closed throttle (engine braking, idle)
    session_fuel_kg: float = 40.0

    def mass(self, fuel_kg: float) -> float:
        return self.dry_mass_kg + self.driver_mass_kg + fuel_kg

    @property
    def overall_ratios(self) -> np.ndarray:
        return np.asarray(self.gear_ratios) * self.final_drive


@dataclass(frozen=True, eq=False)
class Profile:
    """Speed profile and derived channels on the track's 1 m grid (index i is distance ``track.s[i]``)."""

    v_ms: np.ndarray
    a_long_ms2: np.ndarray
    a_lat_ms2: np.ndarray
    throttle: np.ndarray
    brake: np.ndarray
    gear: np.ndarray
    rpm: np.ndarray
    fuel_rate_kg_per_s: np.ndarray
    lap_time_s: float
    v_limit_ms: np.ndarray  # corner-limit speed (friction circle fully lateral), for diagnostics
    v_end_ms: float  # speed at the line at the end of the lap (= v_ms[0] for a periodic lap)


@dataclass(frozen=True)
class DriverNoise:
    """Lap-to-lap driver variation (standard deviations); zero everywhere gives the deterministic lap."""

    grip_sd: float = 0.005  # per-lap grip scale N(1, sd): track/tyre state, commitment
    corner_speed_sd: float = 0.006  # per-corner grip (so corner speed) factor
    braking_sd: float = 0.03  # per-corner braking intensity: later/earlier braking point
    throttle_sd: float = 0.03  # per-corner exit traction use: throttle application
    speed_sensor_kph: float = 0.3
    g_sensor: float = 0.03

    @classmethod
    def none(cls) -> DriverNoise:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _grip_force(params: CarParams, mass: float, v2: np.ndarray | float) -> np.ndarray | float:
    """Total tyre force capacity mu(Fz) * Fz at speed^2 ``v2`` (friction circle radius, N)."""
    fz0 = mass * G
    fz = fz0 + 0.5 * params.rho * params.cla_m2 * v2
    return params.mu0 * fz0**params.load_sensitivity * fz ** (1.0 - params.load_sensitivity)


def _resistance(params: CarParams, mass: float, v2: np.ndarray | float) -> np.ndarray | float:
    """Aerodynamic drag plus rolling resistance on the aero-loaded tyres (N)."""
    fz = mass * G + 0.5 * params.rho * params.cla_m2 * v2
    return 0.5 * params.rho * params.cda_m2 * v2 + params.crr * fz


def top_speed_ms(params: CarParams, mass: float, power_scale: float = 1.0) -> float:
    """Where drive force equals drag + rolling resistance, capped by the rev limiter in top gear."""
    p = params.power_kw * 1e3 * params.drivetrain_eff * power_scale
    lo, hi = 1.0, 200.0
    for _ in range(60):  # bisection on a scalar: 60 steps, microseconds
        v = 0.5 * (lo + hi)
        resist = _resistance(params, mass, v * v)
        lo, hi = (v, hi) if p / v > resist else (lo, v)
    v_rev = params.rev_limit_rpm * 2 * math.pi * params.wheel_radius_m / 60.0 / params.overall_ratios[-1]
    return min(lo, v_rev)


def corner_speed_limit(
    kappa: np.ndarray, params: CarParams, mass: float, grip: np.ndarray | float, v_top: float
) -> np.ndarray:
    """Largest v with m v^2 |kappa| = grip * mu(Fz) Fz: vectorised bisection over the whole grid."""
    k = np.abs(kappa)
    lo = np.zeros_like(k)
    hi = np.full_like(k, v_top)
    for _ in range(40):
        v = 0.5 * (lo + hi)
        ok = mass * v * v * k <= grip * _grip_force(params, mass, v * v)
        lo = np.where(ok, v, lo)
        hi = np.where(ok, hi, v)
    return lo


def _as_grid(x: np.ndarray | float, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, dtype=float), (n,))


def _forward(v_lim: list[float], kap: list[float], grip: list[float], trac: list[float], v0: float,
             params: CarParams, mass: float, power: float) -> list[float]:
    """Acceleration pass from index 0 with speed v0: power and friction-circle limited (the sequential loop)."""
    c_down = 0.5 * params.rho * params.cla_m2
    c_drag = 0.5 * params.rho * params.cda_m2
    fz0 = mass * G
    k = params.load_sensitivity
    mu_c = params.mu0 * fz0**k
    crr = params.crr
    n = len(v_lim)
    out = [0.0] * n
    v = min(v0, v_lim[0])
    out[0] = v
    for i in range(n - 1):
        v2 = v * v
        fz = fz0 + c_down * v2
        f_grip = grip[i] * mu_c * fz ** (1.0 - k)
        r = mass * v2 * kap[i] / f_grip
        f_x = trac[i] * f_grip * math.sqrt(1.0 - r * r) if r < 1.0 else 0.0
        f_pow = power / v if v > 1.0 else power
        if f_pow < f_x:
            f_x = f_pow
        vn2 = v2 + 2.0 * (f_x - c_drag * v2 - crr * fz) / mass
        v = math.sqrt(vn2) if vn2 > 0.0 else 0.0
        if v > v_lim[i + 1]:
            v = v_lim[i + 1]
        out[i + 1] = v
    return out


def _backward(v_lim: list[float], kap: list[float], grip: list[float], brk: list[float],
              params: CarParams, mass: float) -> list[float]:
    """Braking pass, run from the last index to 0: friction circle + drag, capped by the brake system."""
    c_down = 0.5 * params.rho * params.cla_m2
    c_drag = 0.5 * params.rho * params.cda_m2
    fz0 = mass * G
    k = params.load_sensitivity
    mu_c = params.mu0 * fz0**k
    crr = params.crr
    cap = params.brake_cap_g * G * mass
    n = len(v_lim)
    out = [0.0] * n
    v = v_lim[n - 1]
    out[n - 1] = v
    for i in range(n - 1, 0, -1):
        v2 = v * v
        fz = fz0 + c_down * v2
        f_grip = grip[i] * mu_c * fz ** (1.0 - k)
        r = mass * v2 * kap[i] / f_grip
        f_b = brk[i] * f_grip * math.sqrt(1.0 - r * r) if r < 1.0 else 0.0
        f_tot = f_b + c_drag * v2 + crr * fz
        if f_tot > cap * brk[i]:
            f_tot = cap * brk[i]
        v = math.sqrt(v2 + 2.0 * f_tot / mass)
        if v > v_lim[i - 1]:
            v = v_lim[i - 1]
        out[i - 1] = v
    return out


def _gear_rpm(v: np.ndarray, params: CarParams) -> tuple[np.ndarray, np.ndarray]:
    """Lowest gear whose rpm is under the shift point (the driver upshifts at ``shift_rpm``), and its rpm."""
    wheel_rpm = np.asarray(v)[..., None] * 60.0 / (2 * math.pi * params.wheel_radius_m)
    rpm_all = wheel_rpm * params.overall_ratios
    n_gears = len(params.gear_ratios)
    gear = np.minimum(np.argmax(rpm_all <= params.shift_rpm, axis=-1) + 1, n_gears)
    gear = np.where(rpm_all[..., -1] > params.shift_rpm, n_gears, gear)
    rpm = np.take_along_axis(rpm_all, (gear - 1)[..., None], axis=-1)[..., 0]
    rpm = np.clip(rpm, params.idle_rpm, params.rev_limit_rpm)
    return gear.astype(np.int8), rpm


def speed_profile(
    track: Track,
    params: CarParams,
    fuel_kg: float,
    grip_scale: np.ndarray | float = 1.0,
    power_scale: float = 1.0,
    *,
    brake_scale: np.ndarray | float = 1.0,
    traction_scale: np.ndarray | float = 1.0,
    v_cap_ms: np.ndarray | None = None,
    start_index: int | None = None,
    start_speed_ms: float | None = None,
) -> Profile:
    """Quasi-steady lap on the 1 m grid.

    Periodic by default: both passes start at the slowest corner-limit point (where the speed is
    known, v = v_limit) and go round once, so the speed at the line matches on both sides. With
    ``start_index``/``start_speed_ms`` the acceleration pass starts there instead (an out-lap from the
    pit lane, or a lap continuing the previous one's end speed); braking stays periodic, since the
    corners after the line are the same ones. ``grip_scale``/``brake_scale``/``traction_scale`` may be
    per-grid-point arrays (driver noise), ``v_cap_ms`` an extra speed cap (pit lane limit).
    """
    n = len(track.s)
    ds = float(track.s[1] - track.s[0])
    if ds != 1.0:
        raise ValueError("speed_profile integrates on a 1 m grid")
    mass = params.mass(fuel_kg)
    power = params.power_kw * 1e3 * params.drivetrain_eff * power_scale
    grip = _as_grid(grip_scale, n)
    kap_abs = np.abs(track.curvature)
    v_top = top_speed_ms(params, mass, power_scale)
    v_lim = corner_speed_limit(kap_abs, params, mass, grip, v_top)
    # The extra cap (pit lane) binds the acceleration pass only: braking for it "before the line" would
    # be braking at the end of the lap for the next lap's pit lane.
    v_cap = v_lim if v_cap_ms is None else np.minimum(v_lim, v_cap_ms)

    periodic = start_index is None
    i0 = int(np.argmin(v_lim)) if periodic else int(start_index)
    v0 = float(v_cap[i0]) if start_speed_ms is None else float(start_speed_ms)
    order = np.roll(np.arange(n), -i0)
    order_closed = np.append(order, order[0])
    kap_l = kap_abs[order_closed].tolist()
    grip_l = grip[order_closed].tolist()
    # One lap round from i0 and back to it; the closing point sees no extra cap (the pit lane is behind us).
    cap_l = [*v_cap[order].tolist(), float(v_lim[i0])]
    vf = np.asarray(_forward(cap_l, kap_l, grip_l,
                             (_as_grid(traction_scale, n) * params.traction_share)[order_closed].tolist(),
                             v0, params, mass, power))
    # Backward pass is always periodic from the slowest point.
    j0 = int(np.argmin(v_lim))
    order_b = np.append(np.roll(np.arange(n), -j0), j0)
    vb = np.asarray(_backward(v_lim[order_b].tolist(), kap_abs[order_b].tolist(), grip[order_b].tolist(),
                              _as_grid(brake_scale, n)[order_b].tolist(), params, mass))
    v_f = np.empty(n)
    v_f[order] = vf[:-1]
    v_b = np.empty(n)
    v_b[order_b[:-1]] = vb[:-1]
    v = np.minimum(v_f, v_b)
    # Speed at s = length (the line, end of this lap). Periodic: the lap's own start. Started at i0 > 0: the
    # rotated pass crossed the line and index 0 holds it. Started at 0: the pass's closing point.
    v_end = float(v[0])
    if not periodic:
        if i0 == 0:
            v_end = float(min(vf[-1], v_b[0]))
        v[i0] = min(v0, v_b[i0])
    return _channels(track, params, mass, power, v, v_end, v_lim, i0 if not periodic else 0)


def _channels(track: Track, params: CarParams, mass: float, power: float, v: np.ndarray, v_end: float,
              v_lim: np.ndarray, i0: int) -> Profile:
    """Acceleration, pedals, gear, rpm and fuel flow from the speed on the grid (all vectorised).

    ``v_end`` is the speed at the line after the last grid point; the lap time counts from index ``i0``.
    """
    ds = 1.0
    v_next = np.append(v[1:], v_end)
    a_long = (v_next**2 - v**2) / (2 * ds)
    v2 = v * v
    resist = _resistance(params, mass, v2)
    f_needed = mass * a_long + resist
    p_avail = power
    throttle = np.clip(f_needed * np.maximum(v, 1.0) / p_avail, 0.0, 1.0)
    f_grip = _grip_force(params, mass, v2)
    f_brake_max = np.minimum(f_grip + resist, params.brake_cap_g * G * mass) - resist
    brake = np.clip(-f_needed / np.maximum(f_brake_max, 1.0), 0.0, 1.0)
    gear, rpm = _gear_rpm(v, params)
    fuel_rate = params.fuel_flow_idle_kg_s + (params.fuel_flow_max_kg_s - params.fuel_flow_idle_kg_s) * throttle
    dt = 2 * ds / (v + v_next)
    return Profile(
        v_ms=v, a_long_ms2=a_long, a_lat_ms2=v2 * track.curvature, throttle=throttle, brake=brake,
        gear=gear, rpm=rpm, fuel_rate_kg_per_s=fuel_rate, lap_time_s=float(dt[i0:].sum()), v_limit_ms=v_lim,
        v_end_ms=v_end,
    )


class LapSamples(dict):
    """The 100 Hz columns of one lap (a plain ``dict[str, np.ndarray]``, DataFrame-ready) plus two scalars.

    ``lap_time_s``: time from the lap's first sample to the line, interpolated between samples (for a
    flying lap, distance 0 to distance ``length``); ``end_speed_ms`` and ``fuel_end_kg``: noise-free speed
    and fuel left at the line, to start the next lap with.
    """

    lap_time_s: float
    end_speed_ms: float
    fuel_end_kg: float


def _smooth_circular(x: np.ndarray, width: int) -> np.ndarray:
    win = np.ones(width) / width
    pad = np.concatenate([x[-width:], x, x[:width]])
    return np.convolve(pad, win, mode="same")[width:-width]


def _per_segment(track: Track, values: np.ndarray) -> np.ndarray:
    """Spread one value per segment over the grid, smoothed over 100 m so it acts on approach and exit too."""
    seg = track.segment_of(track.s)
    return _smooth_circular(values[seg], 100)


def simulate_lap(
    track: Track,
    params: CarParams,
    *,
    fuel_start_kg: float,
    rng: np.random.Generator,
    start_m: float = 0.0,
    start_speed_ms: float | None = None,
    pit_exit: bool = False,
    dt: float = 0.01,
    noise: DriverNoise = DriverNoise(),  # frozen dataclass: a safe shared default
) -> LapSamples:
    """One lap sampled at ``1/dt`` Hz in time, from ``start_m`` to the line.

    The speed profile is recomputed for the lap (one forward and one backward pass, ~15 ms) with the
    lap's start fuel and its noise fields: a per-lap grip scale and per-corner grip, braking and
    traction factors. ``pit_exit=True``: the car leaves the pit box at ``start_m`` at the pit limit and
    is held to it until ``track.pit_lane.exit_m`` (the pit lane runs alongside, positions are the
    centreline's). Distance -> time by ``dt = 2 ds / (v_i + v_i+1)`` (exact for constant acceleration
    over a step), then every channel is ``np.interp``-ed onto the uniform time base.
    """
    n = len(track.s)
    n_seg = len(track.corners)
    is_corner = np.array([c.direction != "S" for c in track.corners])
    lap_grip = 1.0 + noise.grip_sd * rng.standard_normal()
    corner_grip = np.where(is_corner, noise.corner_speed_sd * rng.standard_normal(n_seg), 0.0)
    braking = np.where(is_corner, noise.braking_sd * rng.standard_normal(n_seg), 0.0)
    traction = np.where(is_corner, noise.throttle_sd * rng.standard_normal(n_seg), 0.0)
    # The braking into segment j happens on the segment before it; exits are on the one after.
    grip = lap_grip * (1.0 + _per_segment(track, corner_grip))
    brake_scale = np.minimum(1.0, 1.0 - np.abs(_per_segment(track, np.roll(braking, -1))))
    traction_scale = np.minimum(1.0, 1.0 - np.abs(_per_segment(track, np.roll(traction, 1))))

    v_cap = None
    start_index = None
    if pit_exit:
        v_cap = np.where((track.s >= start_m) & (track.s <= track.pit_lane.exit_m), track.pit_lane.speed_limit_ms,
                         np.inf)
        start_speed_ms = track.pit_lane.speed_limit_ms if start_speed_ms is None else start_speed_ms
    if start_speed_ms is not None or start_m != 0.0:
        start_index = math.ceil(start_m) % n
        if start_speed_ms is None:  # a lap picked up mid-track: at the speed the periodic lap has there
            start_speed_ms = float(base_profile(track, params, fuel_start_kg).v_ms[start_index])
    prof = speed_profile(track, params, fuel_start_kg, grip, 1.0, brake_scale=brake_scale,
                         traction_scale=traction_scale, v_cap_ms=v_cap, start_index=start_index,
                         start_speed_ms=start_speed_ms)

    i0 = 0 if start_index is None else start_index
    s_grid = np.append(track.s[i0:], track.length_m)
    v_grid = np.append(prof.v_ms[i0:], prof.v_end_ms)
    # Channel value at the line: index 0 holds it, except when the lap itself started at index 0 (held last).
    tail = n - 1 if start_index == 0 else 0
    t_grid = np.concatenate([[0.0], np.cumsum(2.0 * np.diff(s_grid) / (v_grid[:-1] + v_grid[1:]))])
    lap_time = float(t_grid[-1])
    t = np.arange(0.0, lap_time, dt)
    t = t[t < lap_time]

    def on_time(ch: np.ndarray) -> np.ndarray:
        return np.interp(t, t_grid, np.append(ch[i0:], ch[tail]))

    dist = np.interp(t, t_grid, s_grid)
    v = np.interp(t, t_grid, v_grid)
    x, y = track.xy(dist)
    gear, rpm = _gear_rpm(v, params)
    gear = np.where(v > 0.0, gear, 0).astype(np.int8)
    rate = prof.fuel_rate_kg_per_s[np.r_[i0:n, tail]]
    fuel_used = np.concatenate([[0.0], np.cumsum(0.5 * (rate[:-1] + rate[1:]) * np.diff(t_grid))])
    m = len(t)
    out = LapSamples(
        t_s=t,
        distance_m=dist,
        x_m=x,
        y_m=y,
        speed_kph=v * 3.6 + noise.speed_sensor_kph * rng.standard_normal(m),
        throttle=on_time(prof.throttle),
        brake=on_time(prof.brake),
        gear=gear,
        rpm=rpm,
        g_lat=on_time(prof.a_lat_ms2) / G + noise.g_sensor * rng.standard_normal(m),
        g_long=on_time(prof.a_long_ms2) / G + noise.g_sensor * rng.standard_normal(m),
        fuel_kg=fuel_start_kg - np.interp(t, t_grid, fuel_used),
    )
    out.lap_time_s = lap_time
    out.end_speed_ms = prof.v_end_ms
    out.fuel_end_kg = float(fuel_start_kg - fuel_used[-1])
    return out


@functools.lru_cache(maxsize=8)
def base_profile(track: Track, params: CarParams, fuel_kg: float) -> Profile:
    """Noise-free periodic profile, cached per (track, car setup, fuel): the "once per setup" computation."""
    return speed_profile(track, params, fuel_kg)


def realism_figures(laps: int = 10, seed: int = 0) -> dict[str, float]:
    """Flying laps at Silverstone from 40 kg of fuel, with driver noise: the figures the tests pin.

    Targets: lap 84-100 s, vmax 300-345 km/h, peak lateral 3.5-6 g, peak braking 4-6 g, full throttle
    (>= 0.98) 55-80 % of lap time, 1.5-2 kg of fuel per lap.
    """
    track = silverstone()
    params = CarParams()
    rng = np.random.default_rng(seed)
    fuel = params.session_fuel_kg
    speed: float | None = None
    times, vmax, lat, brk, ft, burn = [], [], [], [], [], []
    for _ in range(laps):
        lap = simulate_lap(track, params, fuel_start_kg=fuel, rng=rng, start_speed_ms=speed)
        times.append(lap.lap_time_s)
        vmax.append(lap["speed_kph"].max())
        lat.append(np.abs(lap["g_lat"]).max())
        brk.append(-lap["g_long"].min())
        ft.append(np.mean(lap["throttle"] >= 0.98))
        burn.append(fuel - lap.fuel_end_kg)
        fuel = lap.fuel_end_kg
        speed = lap.end_speed_ms
    return {
        "lap_time_s": float(np.mean(times)),
        "lap_time_std_s": float(np.std(times)),
        "vmax_kph": float(np.mean(vmax)),
        "peak_lat_g": float(np.mean(lat)),
        "peak_braking_g": float(np.mean(brk)),
        "full_throttle_share": float(np.mean(ft)),
        "fuel_per_lap_kg": float(np.mean(burn)),
    }


__all__ = [
    "CarParams",
    "DriverNoise",
    "LapSamples",
    "Profile",
    "base_profile",
    "corner_speed_limit",
    "realism_figures",
    "simulate_lap",
    "speed_profile",
    "top_speed_ms",
]
