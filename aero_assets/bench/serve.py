"""`aero bench serve`: the read API under concurrent clients, as a real `aero serve` process.

A temporary AERO_HOME holds one simulated 60 s, 72-channel wind-tunnel run landed as
`windtunnel/raw_run` (sorted by channel and time, as the landing writes it) and a day of tire alert
episodes in hourly partitions (some episodes written by two hours, as the live service does). The API
runs as `python -m aero_assets.cli serve` on a free port (no broker: the measured endpoints do not
touch Kafka). N client threads with keep-alive `http.client` connections then send
`GET /windtunnel/runs/<id>/series?channels=FLOW_V,FB_FZ,PT_01,PT_02&max_points=2000` and
`GET /tires/alerts?limit=100`, after a warm-up; latency is request sent -> body read. Repeated
questions are answered from the server's response cache (keyed by the versions of the files read), as
dashboards refreshing a run are; the first, cold answer of each is reported too (`*_cold_ms`).

Baseline, same run and data: the same 4-channel request written the naive way (pandas `read_parquet`
of the whole run, a boolean filter per channel, every k-th sample to stay within max_points, JSON),
timed in this process, single-threaded, with no concurrency: its per-request latency is a lower
bound of what an endpoint written that way would serve one client.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aero_assets.simulators.windtunnel import simulate_run
from aero_assets.tires.episodes import EPISODE_SCHEMA, alert_id
from resources.embedded_broker import free_port, port_is_open, stop_process_group
from resources.lake import write_parquet_atomic

CHANNELS = ("FLOW_V", "FB_FZ", "PT_01", "PT_02")
MAX_POINTS = 2000
RUN_ID = "bench-serve-run"
DAY_NS = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp()) * 1_000_000_000
HOUR_NS = 3600 * 1_000_000_000


def _land_run(lake: Path, duration_s: float) -> Path:
    run = simulate_run(RUN_ID, duration_s=duration_s, started_ns=DAY_NS, fault_rate=0.05, seed=42)
    table = run.table.sort_by([("channel", "ascending"), ("ts", "ascending")])
    path = lake / "windtunnel" / "raw_run" / f"run_id={RUN_ID}" / "data.parquet"
    write_parquet_atomic(table, path)
    return path


def _land_alerts(lake: Path, alerts: int, seed: int = 7) -> int:
    """`alerts` episodes opened over 24 hours; one in five also written, later and closed, by the next hour."""
    rng = np.random.default_rng(seed)
    opened = DAY_NS + np.sort(rng.integers(0, 24 * HOUR_NS, alerts))
    vehicles = [f"veh-{v:04d}" for v in rng.integers(0, 250, alerts)]
    tires = rng.choice(["FL", "FR", "RL", "RR"], alerts)
    kinds = rng.choice(["low_pressure", "high_temperature", "rapid_pressure_loss"], alerts)
    duration = rng.uniform(5, 1800, alerts)
    rows = []
    for i in range(alerts):
        aid = alert_id(vehicles[i], str(tires[i]), str(kinds[i]), int(opened[i]))
        hour = int((opened[i] - DAY_NS) // HOUR_NS)
        spans = hour < 23 and rng.random() < 0.2
        base = {"alert_id": aid, "vehicle_id": vehicles[i], "tire": str(tires[i]), "alert_type": str(kinds[i]),
                "opened_at": int(opened[i]), "threshold": 180.0, "peak_value": float(rng.uniform(120, 179)),
                "readings": int(duration[i] * 10), "open_partition": 0, "open_offset": i}
        last = int(opened[i] + duration[i] * 1e9)
        rows.append({**base, "hour": hour, "last_at": min(last, DAY_NS + (hour + 1) * HOUR_NS - 1),
                     "closed": not spans, "duration_s": float(duration[i])})
        if spans:
            rows.append({**base, "hour": hour + 1, "last_at": last + HOUR_NS, "closed": True,
                         "duration_s": float(duration[i]) + 3600})
    frame = pd.DataFrame(rows)
    for col in ("opened_at", "last_at"):
        frame[col] = pd.to_datetime(frame[col], unit="ns", utc=True)
    for hour, part in frame.groupby("hour"):
        table = pa.Table.from_pandas(part[EPISODE_SCHEMA.names], schema=EPISODE_SCHEMA, preserve_index=False)
        name = datetime.fromtimestamp((DAY_NS + int(hour) * HOUR_NS) / 1e9, tz=UTC).strftime("%Y-%m-%dT%H")
        write_parquet_atomic(table, lake / "tires" / "alerts" / f"hour={name}" / "data.parquet")
    return len(rows)


def naive_series(path: Path, channels: list[str], max_points: int) -> str:
    """The baseline: the whole run into pandas, filter each channel, keep every k-th sample, serialise."""
    df = pd.read_parquet(path)
    origin = df["ts"].min()
    series = {}
    for c in channels:
        g = df[df["channel"] == c].sort_values("ts")
        k = max(1, math.ceil(len(g) / max_points))
        g = g.iloc[::k]
        t = (g["ts"] - origin).dt.total_seconds().round(6)
        series[c] = {"t": t.tolist(), "v": g["value"].tolist(), "points": len(g), "of": int((df["channel"] == c).sum())}
    return json.dumps({"run_id": path.parent.name.split("=", 1)[1], "source": "raw_run", "series": series})


def _start_server(home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "AERO_HOME": str(home)}
    env.pop("AERO_API_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "aero_assets.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_is_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc, timeout=5)
            raise RuntimeError("aero serve did not start")
        time.sleep(0.1)
    return proc, port


def _load(port: int, path: str, clients: int, requests: int, label: str) -> tuple[list[float], list[tuple], float]:
    """`requests` GETs of `path` shared by `clients` keep-alive connections: (latencies s, (status, body)s, wall s)."""
    latencies: list[float] = []
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    left = [requests]
    bar = tqdm(total=requests, desc=label, unit="req", file=sys.stderr)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    results.append((resp.status, body))
                    bar.update()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    bar.close()
    return latencies, results, wall


def _ms(latencies: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(latencies) * 1e3, q)), 2)


def bench_serve(clients: int = 20, requests: int = 400, duration_s: float = 60.0, alerts: int = 3000,
                baseline_repeats: int = 5) -> dict:
    series_path = f"/windtunnel/runs/{RUN_ID}/series?channels={','.join(CHANNELS)}&max_points={MAX_POINTS}"
    alerts_path = "/tires/alerts?limit=100"
    with tempfile.TemporaryDirectory(prefix="aero-bench-serve-") as tmp:
        home = Path(tmp)
        lake = home / "lake"
        print("landing a run and a day of tire alerts ...", file=sys.stderr)
        run_path = _land_run(lake, duration_s)
        alert_rows = _land_alerts(lake, alerts)
        samples = pq.ParquetFile(run_path).metadata.num_rows

        # in-process, single-threaded: the naive way, and Aero's reader the same way, for a like-for-like pair
        from aero_assets.serve.lake_reader import windtunnel_series

        base, ours = [], []
        for _ in range(baseline_repeats):
            t0 = time.perf_counter()
            naive_series(run_path, list(CHANNELS), MAX_POINTS)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            json.dumps(windtunnel_series(lake, RUN_ID, list(CHANNELS), None, None, MAX_POINTS))
            ours.append(time.perf_counter() - t0)

        print(f"starting aero serve over {home} ...", file=sys.stderr)
        proc, port = _start_server(home)
        try:
            # the very first answers of a fresh server: the run's file read and decoded, the JSON built
            cold_lat, _, _ = _load(port, series_path, 1, 1, "cold")
            cold_alerts, _, _ = _load(port, alerts_path, 1, 1, "cold")
            _load(port, series_path, min(clients, 4), 8, "warm-up")
            _load(port, alerts_path, min(clients, 4), 8, "warm-up")
            s_lat, s_res, s_wall = _load(port, series_path, clients, requests, "series")
            a_lat, a_res, a_wall = _load(port, alerts_path, clients, requests, "alerts")
        finally:
            stop_process_group(proc, timeout=10)

    statuses = [s for s, _ in s_res] + [s for s, _ in a_res]
    points = 0
    for status, body in s_res:
        if status == 200:
            series = json.loads(body)["series"]
            if set(series) != set(CHANNELS):
                raise AssertionError(f"series answered channels {sorted(series)}")
            points = max(points, *(s["points"] for s in series.values()))
    totals = {json.loads(b)["total"] for s, b in a_res if s == 200}
    return {
        "series_p50_ms": _ms(s_lat, 50),
        "series_p95_ms": _ms(s_lat, 95),
        "series_p99_ms": _ms(s_lat, 99),
        "series_rps": round(len(s_lat) / s_wall, 1),
        "alerts_rps": round(len(a_lat) / a_wall, 1),
        "alerts_p95_ms": _ms(a_lat, 95),
        "clients": clients,
        "requests": requests,
        "non_200": sum(1 for s in statuses if s != 200),
        "points_per_channel": points,
        "baseline_series_ms": round(float(np.median(base)) * 1e3, 2),
        "baseline": "naive pandas endpoint body (read_parquet of the whole run, per-channel filter, every k-th "
                    "sample, json.dumps), in-process, single-threaded, median of "
                    f"{baseline_repeats}",
        "inprocess_series_ms": round(float(np.median(ours)) * 1e3, 2),
        "series_cold_ms": round(cold_lat[0] * 1e3, 2),
        "alerts_cold_ms": round(cold_alerts[0] * 1e3, 2),
        "samples": samples,
        "alerts_total": max(totals) if totals else 0,
        "alert_rows": alert_rows,
        "targets": {"series_p95_ms": "<= 50"},
    }
