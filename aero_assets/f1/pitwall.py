"""`aero watch f1`: the pit wall in a terminal, live from `f1.telemetry` and `f1.analytics`.

A read-only consumer in a group of its own (`aero-watch-f1-<pid>`) that never commits: landing's
offsets and lag are untouched however many engineers watch. Each fetch is decoded with the
landing's own batch decoder (bad messages are skipped and counted, never shown), folded into a small
state - the last sample, the current lap's distance/time trace, the best lap seen - and the screen is
redrawn at least 10 times a second from that state. The live delta is the current lap's time at
this distance minus the best lap's time at the same distance, both interpolated on distance.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import TopicPartition

from aero_assets.codec import DecodeError, content_type_of
from aero_assets.f1.decoder import F1TelemetryDecoder
from resources.kafka import KafkaResource

LOOKBACK_MESSAGES = 1500  # start this far behind the end: 2.5 min at 10 frames/s, so a best lap is seen soon
BAR = 20


@dataclass
class PitWall:
    """What the screen shows, folded from decoded telemetry batches (pure; no Kafka, no terminal)."""

    track_length_m: float
    sectors_m: tuple[float, float]
    follow: str | None = None  # only this session; None = whichever session sent the newest sample
    session: str | None = None
    last: dict = field(default_factory=dict)
    lap: int | None = None
    lap_d: list[np.ndarray] = field(default_factory=list)
    lap_t: list[np.ndarray] = field(default_factory=list)
    best: tuple[int, float, np.ndarray, np.ndarray] | None = None  # (lap, time s, distance, time since start)
    laps: deque = field(default_factory=lambda: deque(maxlen=5))
    samples: int = 0
    skipped: int = 0

    def ingest(self, table) -> None:
        """Fold one decoded batch (telemetry schema, any sessions) into the state."""
        if table.num_rows == 0:
            return
        sid = table["session_id"].to_numpy(zero_copy_only=False)
        newest = self.follow or str(sid[-1])
        if newest != self.session:
            self._switch(newest)
        mine = np.flatnonzero(sid == self.session)
        if not len(mine):
            return
        t = table.take(mine)
        lap = t["lap"].to_numpy()
        ts = t["ts"].cast("int64").to_numpy()
        d = t["distance_m"].to_numpy().astype(np.float64)
        for lo, hi in _runs(lap):
            if self.lap is not None and lap[lo] > self.lap:
                self._finish_lap(int(ts[lo]))
            if self.lap is None or lap[lo] >= self.lap:
                self.lap = int(lap[lo])
                self.lap_d.append(d[lo:hi])
                self.lap_t.append(ts[lo:hi])
        self.samples += len(t)
        row = t.slice(len(t) - 1).to_pylist()[0]
        self.last = row

    def _switch(self, sid: str) -> None:
        self.session, self.lap, self.lap_d, self.lap_t, self.best, self.last = sid, None, [], [], None, {}
        self.laps.clear()

    def _finish_lap(self, next_lap_first_ns: int) -> None:
        """The lap just ended (the next one's first sample, at the line, is `next_lap_first_ns`)."""
        if not self.lap_d:
            return
        d, t = np.concatenate(self.lap_d), np.concatenate(self.lap_t)
        self.lap_d, self.lap_t = [], []
        tol = 0.01 * self.track_length_m
        if len(d) < 2 or d[0] > tol or d[-1] < self.track_length_m - tol:
            return  # an out-lap or a lap seen only in part is no reference
        secs = (t - t[0]) / 1e9
        lap_time = (next_lap_first_ns - t[0]) / 1e9
        if self.best is None or lap_time < self.best[1]:
            self.best = (int(self.lap), lap_time, np.maximum.accumulate(d), secs)

    def delta_s(self) -> float | None:
        """Current lap's time at its distance minus the best lap's at that distance (+ = slower)."""
        if self.best is None or not self.lap_d:
            return None
        d0, t0 = self.lap_d[0][0], self.lap_t[0][0]
        if d0 > 0.01 * self.track_length_m:
            return None
        now_d, now_t = float(self.lap_d[-1][-1]), float(self.lap_t[-1][-1])
        return (now_t - t0) / 1e9 - float(np.interp(now_d, self.best[2], self.best[3]))

    def add_lap_summary(self, msg: dict) -> None:
        if msg.get("session_id") == self.session:
            self.laps.append(msg)

    def sector(self) -> int | None:
        d = self.last.get("distance_m")
        return None if d is None else 1 + int(d >= self.sectors_m[0]) + int(d >= self.sectors_m[1])

    # -- rendering ---------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """The screen as plain text lines (what `render` lays out, and what `--plain` prints)."""
        r = self.last
        if not r:
            return [f"waiting for telemetry{f' of {self.session}' if self.session else ''} ..."]
        delta = self.delta_s()
        best = f"best lap {self.best[0]} {_laptime(self.best[1])}" if self.best else "best lap: none yet"
        out = [
            f"{self.session}  lap {r['lap']}  sector {self.sector()}  {r['distance_m']:7.1f} m   {best}",
            f"speed {r['speed_kph']:6.1f} km/h   gear {r['gear']}   rpm {r['rpm']:7.0f}   fuel {r['fuel_kg']:6.2f} kg",
            f"throttle [{_bar(r['throttle'])}] {r['throttle'] * 100:5.1f} %",
            f"brake    [{_bar(r['brake'])}] {r['brake'] * 100:5.1f} %",
            f"g lat {r['g_lat']:+5.2f}   g long {r['g_long']:+5.2f}",
            "delta to best: " + ("-" if delta is None else f"{delta:+.3f} s"),
            "last laps (f1.analytics):",
        ]
        for m in list(self.laps)[::-1]:
            t, v = _number(m.get("lap_time_s")), _number(m.get("max_speed_kph"))
            out.append(f"  lap {str(m.get('lap'))[:6]}: {_laptime(t) if t is not None else '-'}  vmax "
                       f"{f'{v:.1f}' if v is not None else '-'}  {str(m.get('flags') or '')[:60]}")
        if not self.laps:
            out.append("  (none yet)")
        return out

    def render(self):
        from rich.panel import Panel
        from rich.text import Text

        return Panel(Text("\n".join(self.lines())), title="Aero pit wall", subtitle=f"{self.samples:,} samples")


def _runs(values: np.ndarray):
    edges = np.flatnonzero(values[1:] != values[:-1]) + 1
    bounds = np.concatenate(([0], edges, [len(values)]))
    return zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)


def _number(x) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) else None


def _bar(x: float) -> str:
    n = round(max(0.0, min(1.0, float(x))) * BAR)
    return "#" * n + "." * (BAR - n)


def _laptime(s: float) -> str:
    return f"{int(s // 60)}:{s % 60:06.3f}"


def watch_group() -> str:
    """A group of its own per watcher: it commits nothing, and shares nothing with landing or other watchers."""
    return f"aero-watch-f1-{os.getpid()}-{time.time_ns() % 1_000_000}"


def run_watch(kafka: KafkaResource, telemetry_topic: str, analytics_topic: str, *, session: str | None = None,
              duration_s: float | None = None, refresh_hz: float = 12.0, plain: bool = False,
              stop: threading.Event | None = None, out=None, lookback: int = LOOKBACK_MESSAGES) -> dict:
    """Follow the topics and redraw the screen at `refresh_hz` until `stop` or `duration_s`; returns stats."""
    from aero_assets.f1.track import silverstone

    track = silverstone()
    wall = PitWall(track.length_m, track.sectors_m, follow=session)
    stop = stop or threading.Event()
    decoder = F1TelemetryDecoder()
    group = watch_group()
    tele = kafka.consumer(group, **{"enable.partition.eof": False, "fetch.wait.max.ms": 20})
    laps = kafka.consumer(group, **{"enable.partition.eof": False})
    frames = 0
    t0 = time.monotonic()
    try:
        _assign_tail(kafka, tele, telemetry_topic, lookback)
        _assign_tail(kafka, laps, analytics_topic, None)
        live = None
        if not plain:
            from rich.console import Console
            from rich.live import Live

            live = Live(wall.render(), console=Console(file=out) if out else None, refresh_per_second=refresh_hz,
                        auto_refresh=False)
            live.start()
        period = 1.0 / refresh_hz
        next_frame = time.monotonic()
        while not stop.is_set() and (duration_s is None or time.monotonic() - t0 < duration_s):
            msgs = tele.consume(5000, timeout=max(0.0, min(period / 2, next_frame - time.monotonic())))
            good, types = [], []
            for m in msgs:
                if m.error() is not None:
                    continue
                try:
                    types.append(content_type_of(m.headers(), m.value()))
                    good.append(m)
                except DecodeError:
                    wall.skipped += 1
            if good:
                try:  # the landing's decoder, by content type (JSON lines or Arrow blocks)
                    batch = decoder.decode_batch([m.value() for m in good], [m.key() for m in good], types)
                    wall.skipped += len(batch.bad)
                    wall.ingest(batch.table)
                except Exception:  # a screen never dies of a message: skip the fetch, count it
                    wall.skipped += len(good)
            for m in laps.consume(100, timeout=0):
                if m.error() is None:
                    try:
                        msg = json.loads(m.value() or b"")
                    except ValueError:
                        msg = None
                    if isinstance(msg, dict):
                        wall.add_lap_summary(msg)
                    else:
                        wall.skipped += 1
            if time.monotonic() >= next_frame:
                frames += 1
                if live is not None:
                    live.update(wall.render(), refresh=True)
                else:
                    print(" | ".join(wall.lines()[:6]), file=out, flush=True)
                next_frame += period
                if next_frame < time.monotonic():  # fell behind (a big backlog): do not try to catch up frames
                    next_frame = time.monotonic() + period
        if live is not None:
            live.stop()
    finally:
        tele.close()
        laps.close()
    seconds = time.monotonic() - t0
    return {"group": group, "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1) if seconds else 0.0, "samples": wall.samples,
            "skipped_messages": wall.skipped, "session": wall.session,
            "best_lap": None if wall.best is None else {"lap": wall.best[0], "time_s": round(wall.best[1], 3)}}


def _assign_tail(kafka: KafkaResource, consumer, topic: str, lookback: int | None) -> None:
    """Assign every partition at `lookback` messages before its end (None: from the beginning)."""
    identity = kafka.identity(topic)
    if identity is None:
        kafka.ensure_topics([topic])
        identity = kafka.identity(topic)
    tps = []
    for p in identity.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
        tps.append(TopicPartition(topic, p, low if lookback is None else max(low, high - lookback)))
    consumer.assign(tps)


__all__ = ["PitWall", "run_watch", "watch_group"]
