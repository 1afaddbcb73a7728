"""`aero simulate weather`: a simulated station on `weather.observations`, with the ground truth of its heatwave.

Simulated time: the span of `days` starts at `start` (default: `now - history_days`, on an interval
boundary). Its first `history_days` (default: all of it without `speed`; 28 days with one, so a model can
be trained at once) are published as fast as the broker takes them; the rest is paced so that simulated
time runs `speed` times faster than wall time (default 1: real time; `--speed 3600` = a simulated hour per
second) and may run ahead of the wall clock. `forever` keeps going for ten simulated years.

The ground truth (mode, onset, shift, variance factor, duration, seed) is written atomically to
`$AERO_HOME/ground_truth/weather/<station>.json` before the first message goes out, so a drift detector
can be scored while the stream still runs. `faults` plants the bad input of the issue: duplicate
re-deliveries and a 6-hour gap (they land), a NaN temperature and temperatures sent in Kelvin and
Fahrenheit by mistake (they go to the DLQ); their counts are in the ground truth.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from aero_assets.forecast.simulate import NS_PER_DAY, simulate_station
from aero_assets.ids import validate_id
from aero_assets.simulators.publish import JSON_HEADERS, produce_waiting
from resources.kafka import KafkaResource
from resources.lake import write_bytes_atomic
from resources.settings import Settings

FOREVER_DAYS = 3650.0
DEFAULT_PACED_HISTORY_DAYS = 28.0
_OFFSET = re.compile(r"^\s*\+\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": NS_PER_DAY}


def parse_onset(text: str) -> tuple[str, int]:
    """`+10d` / `+36h` / `+90m` / `+600s` (from the simulated start) -> ("offset", ns); an ISO-8601 time
    with an offset -> ("at", epoch ns). Raises ValueError saying what is accepted."""
    m = _OFFSET.match(str(text))
    if m:
        return "offset", round(float(m.group(1)) * _UNIT_NS[m.group(2)])
    try:
        dt = datetime.fromisoformat(str(text).strip())
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise ValueError(f"{text!r} is not a heatwave start: give an offset from the simulated start such as +10d, "
                         "+36h, or an ISO-8601 time with an offset such as 2026-07-01T12:00:00Z")
    return "at", int(pd.Timestamp(dt).value)


def resolve_onset(onset: int | str | None, start_ns: int) -> int | None:
    if onset is None or isinstance(onset, int | np.integer):
        return None if onset is None else int(onset)
    kind, ns = parse_onset(onset)
    return start_ns + ns if kind == "offset" else ns


def iso_ms(ts_ns: np.ndarray) -> pa.Array:
    """Epoch ns as millisecond ISO-8601 strings ending in Z (vectorised)."""
    text = np.datetime_as_string(np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]").astype("datetime64[ms]"),
                                 unit="ms")
    return pc.binary_join_element_wise(pa.array(text), "Z", "")


def _number(values: np.ndarray, nan_as: str) -> pa.Array:
    arr = pa.array(np.asarray(values, dtype=np.float64))
    text = pc.cast(arr, pa.string())
    return pc.if_else(pc.is_nan(arr), nan_as, text)


def observation_messages(frame: pd.DataFrame) -> list[bytes]:
    """The `weather.observations` JSON of each row (vectorised through Arrow string kernels).

    NaN windspeed/pressure go out as null (a temperature-only station); a NaN temperature as the `NaN`
    literal a careless logger sends (refused by the landing). Station ids are safe ids: no escaping needed.
    """
    station = pa.array(frame["station"].astype(str).to_numpy(), pa.string())
    parts = ['{"station":"', station, '","ts":"', iso_ms(frame["ts"].to_numpy()),
             '","temperature_c":', _number(frame["temperature_c"].to_numpy(), "NaN"),
             ',"windspeed_ms":', _number(frame["windspeed_ms"].to_numpy(), "null"),
             ',"pressure_hpa":', _number(frame["pressure_hpa"].to_numpy(), "null"), "}"]
    return pc.cast(pc.binary_join_element_wise(*parts, ""), pa.binary()).to_pylist()


def publish_observations(producer, topic: str, key: bytes, messages: list[bytes], bar: tqdm,
                         stop: threading.Event) -> int:
    """Produce `messages` in order as fast as the broker takes them (linger batches the produce), until `stop`.

    Polls and advances `bar` every 1,000 messages and once more at the end; returns how many were sent.
    The caller flushes (`flush_observations`).
    """
    sent = 0
    for value in messages:  # one message per observation is the wire format
        produce_waiting(producer, topic, key, value, JSON_HEADERS)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
            bar.update(1000)
        if stop.is_set():
            break
    bar.update(sent % 1000)
    return sent


def flush_observations(producer) -> None:
    """Wait for the broker to acknowledge everything produced; RuntimeError after 60 s."""
    if producer.flush(60) > 0:
        raise RuntimeError("weather observations were not acknowledged by the broker within 60 s")


def plant_faults(frame: pd.DataFrame, rng: np.random.Generator, interval_s: float) -> tuple[pd.DataFrame, dict]:
    """Duplicates and a gap (landed) and one NaN, one Kelvin and one Fahrenheit temperature (DLQ), vectorised."""
    n = len(frame)
    if n < 48:
        return frame, {"duplicates": 0, "gap_rows": 0, "dlq_expected": 0}
    gap_len = max(1, round(6 * 3600 / interval_s))
    gap_at = int(rng.integers(n // 4, n // 2))
    keep = np.ones(n, dtype=bool)
    keep[gap_at:gap_at + gap_len] = False
    out = frame[keep].reset_index(drop=True)
    bad = rng.choice(np.arange(len(out) // 2, len(out)), size=3, replace=False)
    t = out["temperature_c"].to_numpy().copy()
    t[bad[0]] = np.nan
    t[bad[1]] = np.round(t[bad[1]] + 273.15, 2)  # Kelvin by mistake
    t[bad[2]] = np.round(max(t[bad[2]], 16.0) * 1.8 + 32.0, 2)  # Fahrenheit by mistake (> 60 whatever the day)
    out["temperature_c"] = t
    dup = np.sort(rng.choice(np.setdiff1d(np.arange(len(out)), bad), size=min(5, len(out) // 10), replace=False))
    # a re-delivery comes later in the log, right after the next reading
    order = np.concatenate([np.arange(len(out)), dup + 0.5])
    out = pd.concat([out, out.iloc[dup]], ignore_index=True).iloc[np.argsort(order, kind="stable")]
    out = out.reset_index(drop=True)
    return out, {"duplicates": len(dup), "gap_rows": int(gap_len),
                 "gap_start_ns": int(frame["ts"].iloc[gap_at]),
                 "dlq_expected": 3, "nan_ts_ns": int(out["ts"].iloc[int(np.flatnonzero(np.isnan(
                     out["temperature_c"].to_numpy()))[0])])}


def simulate_weather(settings: Settings, station: str, mode: str = "calm", heatwave_start_ns: int | str | None = None,
                     speed: float | None = None, days: float = 28.0, seed: int | None = None, *,
                     start: int | str | None = None, history_days: float | None = None, interval_s: float = 3600.0,
                     temperature_only: bool | None = None, forever: bool = False, faults: bool = False,
                     kafka: KafkaResource | None = None, progress: bool = True,
                     stop: threading.Event | None = None) -> dict:
    """Publish one station's observations (see the module docstring for the time semantics); returns a summary."""
    station = validate_id(station, "station id")
    if mode not in ("calm", "heatwave"):
        raise ValueError(f"mode must be calm or heatwave, not {mode!r}")
    if mode == "calm" and heatwave_start_ns is not None:
        raise ValueError("a heatwave start needs --mode heatwave")
    if not days > 0 or not interval_s > 0 or (speed is not None and not speed > 0):
        raise ValueError("days, interval and speed must be positive")
    span_days = max(days, FOREVER_DAYS) if forever else days
    if history_days is None:
        history_days = days if speed is None else min(days, DEFAULT_PACED_HISTORY_DAYS)
    if not 0 <= history_days <= span_days:
        raise ValueError(f"history days ({history_days:g}) must be between 0 and the simulated span ({span_days:g})")
    speed = 1.0 if speed is None else float(speed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    interval_ns = round(interval_s * 1e9)
    now = time.time_ns()
    if start is None:
        start_ns = (now - round(history_days * NS_PER_DAY)) // interval_ns * interval_ns
    else:
        start_ns = start if isinstance(start, int) else int(pd.Timestamp(start).tz_convert("UTC").value)
    onset = resolve_onset(heatwave_start_ns, start_ns)
    if mode == "heatwave" and onset is None and forever:  # the simulator's onset over `days`, not ten years
        onset = simulate_station(station, start_ns, days, mode=mode, interval_s=interval_s, seed=seed,
                                 temperature_only=temperature_only)[1]["heatwave_start_ns"]
    frame, truth = simulate_station(station, start_ns, span_days, mode=mode, heatwave_start_ns=onset,
                                    interval_s=interval_s, seed=seed, temperature_only=temperature_only)
    frame["ts"] = frame["ts"] // 1_000_000 * 1_000_000  # the wire carries milliseconds
    planted = {}
    if faults:
        frame, planted = plant_faults(frame, np.random.default_rng(seed + 1), interval_s)
    history_end_ns = start_ns + round(history_days * NS_PER_DAY)
    topic = settings.topics.weather_observations
    hw = truth["heatwave_start_ns"]
    gt = {**truth, "heatwave_start": _iso(hw), "heatwave_end": _iso(truth["heatwave_end_ns"]),
          "start_ns": int(start_ns), "start": _iso(start_ns), "days": float(span_days),
          "history_days": float(history_days), "history_end_ns": int(history_end_ns), "speed": speed,
          "seed": seed, "topic": topic, "faults": planted, "published_at": _iso(now)}
    gt_path = settings.ground_truth_dir / "weather" / f"{station}.json"
    write_bytes_atomic(gt_path, json.dumps(gt, indent=1).encode())

    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    kafka.ensure_topics([topic])
    stop = stop or threading.Event()
    producer = kafka.producer(**{"linger.ms": 20})
    messages = observation_messages(frame)
    ts = frame["ts"].to_numpy()
    n_history = int(np.searchsorted(ts, history_end_ns, side="left")) if len(ts) else 0
    if faults:  # duplicates are interleaved, so ts is not strictly sorted: count instead of searching
        n_history = int(np.count_nonzero(ts < history_end_ns))
    key = station.encode()
    bar = tqdm(total=None if forever else len(messages), desc=f"simulate weather {station}", unit="obs",
               disable=not progress, smoothing=0.1)
    t0 = time.monotonic()
    sent = publish_observations(producer, topic, key, messages[:n_history], bar, stop)  # history: at once
    flush_observations(producer)
    wall0 = time.monotonic()
    for i in range(n_history, len(messages)):  # paced: simulated time = history end + speed x wall time
        if stop.is_set():
            break
        wait = wall0 + (int(ts[i]) - history_end_ns) / 1e9 / speed - time.monotonic()
        if wait > 0:
            producer.flush(10)
            if stop.wait(wait):
                break
        produce_waiting(producer, topic, key, messages[i], JSON_HEADERS)
        producer.poll(0)
        sent += 1
        bar.update(1)
    bar.close()
    flush_observations(producer)
    return {"station": station, "mode": mode, "topic": topic, "published": sent,
            "history_published": min(sent, n_history), "paced_published": max(0, sent - n_history),
            "first_ts": _iso(int(ts[0])) if len(ts) else "", "last_ts": _iso(int(ts[sent - 1])) if sent else "",
            "heatwave_start": gt["heatwave_start"], "heatwave_start_ns": hw, "dlq_expected":
            int(planted.get("dlq_expected", 0)) if sent == len(messages) else None,
            "ground_truth": str(gt_path), "seed": seed, "speed": speed, "seconds": round(time.monotonic() - t0, 2)}


def _iso(ns: int | None) -> str | None:
    return None if ns is None else pd.Timestamp(int(ns), tz="UTC").isoformat()


__all__ = ["flush_observations", "observation_messages", "parse_onset", "plant_faults", "publish_observations",
           "simulate_weather"]
