"""The production topology on one machine, with real processes: what tests/test_production_topology.py
and tests/test_ui_browser.py run against.

- Dagster's storage in Postgres, in a database of its own (created here, dropped at the end);
- the embedded Kafka-protocol broker;
- a gRPC code server (`dagster api grpc`), the daemon and the webserver as three separate processes
  on a workspace that points at the code server, as docker/docker-compose.yml wires them;
- every domain's simulator publishing (a wind-tunnel run that passes QC and one that fails it, a
  tire fleet, an F1 session, a rig CSV in the inbox, a weather station).

Processes are stopped by process group id. Nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resources.embedded_broker import EmbeddedBroker, free_port, port_is_open, stop_process_group
from tests.conftest import fresh_postgres_database, wait_for

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Stack:
    home: Path
    dagster_home: Path
    env: dict
    webserver: str  # http://127.0.0.1:port
    good_run: str
    failed_run: str
    f1_session: str
    weather_station: str
    rig_day: str
    logs: Path

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.webserver}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        if out.get("errors"):
            raise AssertionError(f"GraphQL errors: {out['errors']}")
        return out["data"]


def _spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(predicate, timeout: float, what: str, procs: list[subprocess.Popen], interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {' '.join(p.args[:3])} exited with {p.returncode}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _aero(env: dict, *args: str, timeout: float = 300) -> str:
    out = subprocess.run([str(BIN / "aero"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"aero {' '.join(args)}: {out.stderr[-2000:]}"
    return out.stdout


def _publish_every_domain(stack_env: dict, home: Path) -> dict:
    """Each domain's simulator, once; returns the ids the tests look for."""
    good = json.loads(_aero(stack_env, "simulate", "windtunnel", "--runs", "1", "--duration", "1",
                            "--session", "topo", "--seed", "1").strip().splitlines()[-1])["runs"][0]
    bad = json.loads(_aero(stack_env, "simulate", "windtunnel", "--runs", "1", "--duration", "1",
                           "--session", "topobad", "--fault-rate", "0.5", "--seed", "2").strip().splitlines()[-1])
    _aero(stack_env, "simulate", "tires", "--vehicles", "2", "--duration", "120", "--fast", "--seed", "3")
    _aero(stack_env, "simulate", "f1", "--laps", "1", "--session", "topo-f1", "--seed", "4")
    _aero(stack_env, "simulate", "weather", "--station", "topo-calm", "--mode", "calm", "--days", "12",
          "--seed", "5")
    inbox = home / "inbox" / "rig"
    inbox.mkdir(parents=True, exist_ok=True)
    lines = [f"2026-11-29T{h:02d}:{m:02d}:00Z,{55 + m % 7 * 0.1:.1f},1010.0,{100 + h:.1f}"
             for h in range(3) for m in range(0, 60, 6)]
    (inbox / "rig-42__nov29.csv").write_text("timestamp,temperature,pressure,uptime\n" + "\n".join(lines) + "\n")
    return {"good_run": good, "failed_run": bad["runs"][0], "f1_session": "topo-f1",
            "weather_station": "topo-calm", "rig_day": "2026-11-29"}


@contextlib.contextmanager
def production_stack(root: Path) -> Iterator[Stack]:
    root.mkdir(parents=True, exist_ok=True)
    home, logs = root / "aero", root / "logs"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    logs.mkdir()
    shutil.copy(REPO / "docker" / "dagster.postgres.yaml", dagster_home / "dagster.yaml")
    procs: list[subprocess.Popen] = []
    with (fresh_postgres_database("aero_topology") as pg_libpq,
          EmbeddedBroker(port=free_port(), log_file=logs / "broker.log") as broker):
        pg_url = pg_libpq.replace("postgresql://", "postgresql+psycopg2://", 1)
        grpc_port, web_port = free_port(), free_port()
        env = {**os.environ, "AERO_HOME": str(home), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap,
               "DAGSTER_HOME": str(dagster_home), "AERO_DAGSTER_PG_URL": pg_url,
               "AERO_TIRES_LANDING_MAX_WAIT_S": "1", "AERO_WEATHER_LANDING_MAX_WAIT_S": "1",
               "AERO_FORECAST_GRU_EPOCHS": "2", "AERO_FORECAST_MIN_HISTORY_H": "72",
               "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1"}
        workspace = root / "workspace.yaml"
        workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
                             "      location_name: aero\n")
        ids = _publish_every_domain(env, home)
        try:
            procs.append(_spawn([str(BIN / "dagster"), "api", "grpc", "-m", "aero_assets.definitions",
                                 "-h", "127.0.0.1", "-p", str(grpc_port), "--location-name", "aero"],
                                env, logs / "code-server.log"))
            _wait(lambda: port_is_open("127.0.0.1", grpc_port), 120, "the code server to listen", procs)
            procs.append(_spawn([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs / "daemon.log"))
            procs.append(_spawn([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                 "-w", str(workspace)], env, logs / "webserver.log"))
            url = f"http://127.0.0.1:{web_port}"

            def serving() -> bool:
                try:
                    with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                        return resp.status == 200
                except OSError:
                    return False

            _wait(serving, 120, "the webserver to serve", procs)
            yield Stack(home=home, dagster_home=dagster_home, env=env, webserver=url, logs=logs, **ids)
        finally:
            for proc in reversed(procs):
                stop_process_group(proc)


LANDED = {"windtunnel/run_export": "good_run", "windtunnel/qc_report": "failed_run", "tires/fleet_status": None,
          "f1/published_laps": "f1_session", "rig/kpis": "rig_day", "forecast/model_evaluation": "weather_station"}
_STATE = """query ($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) {
  assetKey { path } assetMaterializations(limit: 20) { partition } } }"""


@contextlib.contextmanager
def landed_stack(root: Path, timeout: float = 420) -> Iterator[Stack]:
    """`production_stack` once every domain's chain has run by itself (read through GraphQL)."""
    with production_stack(root) as s:
        def everything_landed():
            nodes = s.graphql(_STATE, {"keys": [{"path": k.split("/")} for k in LANDED]})["assetNodes"]
            done = {"/".join(n["assetKey"]["path"]): {m["partition"] for m in n["assetMaterializations"]}
                    for n in nodes}
            missing = [k for k, attr in LANDED.items()
                       if not done.get(k) or (attr and getattr(s, attr) not in done[k])]
            return not missing or None

        try:
            wait_for(everything_landed, timeout=timeout, interval=2.0, what="every domain's chain to run by itself")
        except AssertionError:
            for log in sorted(s.logs.glob("*.log")):  # what the processes said, for whoever reads the failure
                print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
            raise
        yield s
