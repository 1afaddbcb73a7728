"""Simulated NOAA-like weather stations, with the ground truth of a planted heatwave.

The forecast domain needs two kinds of streams whose behaviour is *known*, so the trainers, the
baselines and the drift detector can be scored rather than eyeballed:

* ``calm``: a station whose temperature is a deterministic climate (a yearly cycle by day of year
  and a daily cycle peaking mid-afternoon) plus AR(1) "weather" noise. Hour-to-hour noise is
  strongly correlated, as real weather is, which is exactly what makes a same-hour-yesterday
  forecaster good and a naive i.i.d. drift test over-sensitive. Windspeed is a log-normal AR(1)
  (always > 0) with sparse gusts; pressure swings slowly around 1013 hPa (synoptic systems with a
  decorrelation time of a few days).
* ``heatwave``: a temperature-only station (windspeed/pressure are null on the wire) where, at a
  known onset, the level rises by 6-10 degC over a few hours and the weather-noise variance grows
  by x1.5-2 for several days.

Everything is vectorised (the AR(1) recursions run through ``scipy.signal.lfilter``) and
deterministic for a given seed. Random draws happen in a fixed order, climate and noise first and
the heatwave last, so the same seed gives the *same base series* in both modes and with or without
``temperature_only``: the difference between a heatwave run and a calm run is exactly the planted
event, which the tests exploit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter

NS_PER_S = 1_000_000_000
NS_PER_HOUR = 3_600 * NS_PER_S
NS_PER_DAY = 24 * NS_PER_HOUR

READING_COLUMNS = ("station", "ts", "temperature_c", "windspeed_ms", "pressure_hpa")

Mode = Literal["calm", "heatwave"]


def _ar1(rng: np.random.Generator, n: int, phi: float, std: float) -> np.ndarray:
    """A stationary AR(1) series with marginal standard deviation `std` (vectorised via lfilter).

    The first value is drawn from the stationary distribution so there is no burn-in transient
    that a drift detector could mistake for an event at the start of the stream.
    """
    innovations = rng.normal(0.0, std * np.sqrt(1.0 - phi * phi), n)
    if n:
        innovations[0] = rng.normal(0.0, std)
    return lfilter([1.0], [1.0, -phi], innovations)


def _per_step(phi_hourly: float, interval_s: float) -> float:
    """The AR coefficient per sample, so the correlation *per hour* does not depend on the interval."""
    return float(phi_hourly ** (interval_s / 3_600.0))


def simulate_station(
    station: str,
    start_ns: int,
    days: float,
    *,
    mode: Mode = "calm",
    heatwave_start_ns: int | None = None,
    interval_s: float = 3600.0,
    seed: int | None = None,
    temperature_only: bool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Readings of one station over `days` from `start_ns`, and the ground truth that made them.

    Returns a frame with the `weather.observations` fields (station, ts as int ns, temperature_c,
    windspeed_ms, pressure_hpa; NaN stands for null) and a dict with at least ``mode``,
    ``heatwave_start_ns``, ``shift_c`` and ``variance_factor`` (0.0 / 1.0 when calm) plus the
    climate parameters. `temperature_only` defaults to True for a heatwave station and False
    otherwise. In heatwave mode the onset defaults to a seeded point 40-60 % into the span.
    """
    if mode not in ("calm", "heatwave"):
        raise ValueError(f"mode must be 'calm' or 'heatwave', not {mode!r}")
    if mode == "calm" and heatwave_start_ns is not None:
        raise ValueError("heatwave_start_ns only makes sense with mode='heatwave'")
    if interval_s <= 0 or days < 0:
        raise ValueError("interval_s must be > 0 and days >= 0")
    if temperature_only is None:
        temperature_only = mode == "heatwave"

    rng = np.random.default_rng(seed)
    interval_ns = round(interval_s * NS_PER_S)
    n = int(np.floor(days * 86_400 / interval_s + 1e-9))
    ts = np.int64(start_ns) + np.arange(n, dtype=np.int64) * np.int64(interval_ns)

    # Climate of this station (seeded, so two stations differ but each is reproducible).
    mean_c = rng.uniform(8.0, 16.0)
    yearly_amplitude_c = rng.uniform(8.0, 12.0)
    daily_amplitude_c = rng.uniform(3.0, 6.0)
    noise_std_c = rng.uniform(1.2, 1.8)

    hour_of_day = (ts % NS_PER_DAY) / NS_PER_HOUR  # local solar time == UTC for a simulated station
    day_of_year = pd.DatetimeIndex(ts).day_of_year.to_numpy() - 1 + hour_of_day / 24.0
    yearly = -yearly_amplitude_c * np.cos(2 * np.pi * (day_of_year - 15.0) / 365.25)  # coldest mid-January
    daily = daily_amplitude_c * np.cos(2 * np.pi * (hour_of_day - 15.0) / 24.0)  # warmest at 15:00
    weather = _ar1(rng, n, _per_step(0.92, interval_s), noise_std_c)

    # Wind: log-normal AR(1) (positive by construction), windier afternoons, sparse gusts.
    log_wind = np.log(4.0) + _ar1(rng, n, _per_step(0.95, interval_s), 0.4)
    gusts = (rng.random(n) < 0.03) * rng.exponential(4.0, n)
    windspeed = np.exp(log_wind) * (1.0 + 0.2 * np.cos(2 * np.pi * (hour_of_day - 14.0) / 24.0)) + gusts
    windspeed = np.maximum(windspeed, 0.0)

    # Pressure: slow synoptic swings (decorrelation ~4 days) plus barometer noise.
    pressure = 1013.0 + _ar1(rng, n, _per_step(0.99, interval_s), 8.0) + rng.normal(0.0, 0.3, n)

    truth: dict = {
        "station": station,
        "mode": mode,
        "heatwave_start_ns": None,
        "heatwave_end_ns": None,
        "shift_c": 0.0,
        "variance_factor": 1.0,
        "ramp_h": 0.0,
        "duration_days": 0.0,
        "mean_c": float(mean_c),
        "yearly_amplitude_c": float(yearly_amplitude_c),
        "daily_amplitude_c": float(daily_amplitude_c),
        "noise_std_c": float(noise_std_c),
        "interval_s": float(interval_s),
        "n": n,
        "temperature_only": bool(temperature_only),
    }

    envelope = np.zeros(n)
    shift_c = 0.0
    variance_factor = 1.0
    if mode == "heatwave":
        span_ns = n * interval_ns
        onset_draw = rng.uniform(0.4, 0.6)
        if heatwave_start_ns is None:
            heatwave_start_ns = int(start_ns + (int(onset_draw * span_ns) // interval_ns) * interval_ns)
        shift_c = rng.uniform(6.0, 10.0)
        variance_factor = rng.uniform(1.5, 2.0)
        ramp_h = rng.uniform(3.0, 9.0)
        duration_days = rng.uniform(4.0, 8.0)
        end_ns = int(heatwave_start_ns + duration_days * NS_PER_DAY)
        # A trapezoid: rises over ramp_h from the onset, holds, decays over ramp_h after the end.
        rise = (ts - heatwave_start_ns) / (ramp_h * NS_PER_HOUR)
        fall = (end_ns - ts) / (ramp_h * NS_PER_HOUR)
        envelope = np.clip(np.minimum(rise, fall + 1.0), 0.0, 1.0)
        truth.update(
            heatwave_start_ns=int(heatwave_start_ns),
            heatwave_end_ns=end_ns,
            shift_c=float(shift_c),
            variance_factor=float(variance_factor),
            ramp_h=float(ramp_h),
            duration_days=float(duration_days),
        )

    noise_scale = np.sqrt(1.0 + envelope * (variance_factor - 1.0))  # variance x factor, std x sqrt(factor)
    temperature = mean_c + yearly + daily + envelope * shift_c + weather * noise_scale

    readings = pd.DataFrame(
        {
            "station": pd.Series([station] * n, dtype=object),
            "ts": ts,
            "temperature_c": np.round(temperature, 2),
            "windspeed_ms": np.full(n, np.nan) if temperature_only else np.round(windspeed, 2),
            "pressure_hpa": np.full(n, np.nan) if temperature_only else np.round(pressure, 2),
        },
        columns=list(READING_COLUMNS),
    )
    return readings, truth
