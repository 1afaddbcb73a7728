"""The local stack behind `aero broker`, `aero simulate` and `aero demo`.

`aero demo` is what a newcomer runs: the embedded broker, `dagster dev` (webserver + daemon)
with `DAGSTER_HOME=$AERO_HOME/dagster`, and the simulator publishing runs. The sensor, not the
demo, turns finished runs into landings, exactly as with a real rig. Ctrl-C stops everything
this process started; so does a kill -9 of it (the broker and `dagster dev` are tied to it with
`die_with_parent`). A broker it did not start is used only when that is explicit (`demo_broker`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from resources.embedded_broker import EmbeddedBroker, die_with_parent, port_is_open, stop_process_group
from resources.kafka import BrokerUnavailable, KafkaResource
from resources.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY_FAULT_RATE = 0.5
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class DemoRefused(RuntimeError):
    """`aero demo` will not go on; the message says why and what to do instead."""


def stop_event() -> threading.Event:
    """Set on SIGINT/SIGTERM so long-running commands shut down cleanly."""
    ev = threading.Event()

    def handler(signum, frame):
        ev.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return ev


def start_broker(settings: Settings, port: int, partitions: int | None = None) -> tuple[EmbeddedBroker, KafkaResource]:
    settings.home.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port=port, log_file=settings.home / "broker.log").start()
    n = partitions or settings.kafka.partitions
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap, default_partitions=n)
    kafka.ensure_topics(settings.topics.all())
    return broker, kafka


def run_broker_forever(settings: Settings, port: int, partitions: int | None) -> int:
    broker, _ = start_broker(settings, port, partitions)
    stop = stop_event()
    print(f"aero broker: listening on {broker.bootstrap} (cluster id {broker.cluster_id}, memory only); "
          f"topics: {', '.join(settings.topics.all())}. Ctrl-C stops it.", flush=True)
    try:
        while not stop.wait(0.5):
            if broker.proc.poll() is not None:
                print(f"aero broker: the broker exited with code {broker.proc.returncode}", file=sys.stderr)
                return 1
    finally:
        broker.stop()
        print("aero broker: stopped", flush=True)
    return 0


def simulate_windtunnel(settings: Settings, *, runs: int, duration_s: float, session_id: str | None = None,
                        fault_rate: float = 0.0, seed: int | None = None, block_samples: int = 4000,
                        kafka: KafkaResource | None = None, progress: bool = True, first_index: int | None = None,
                        baseline_run_id: str | None = None) -> list[str]:
    """Simulate and publish `runs` runs of one session.

    The session's first run (index 1) is its baseline, with the baseline setup; later runs are
    variants that name it in `baseline_run_id`. Without `first_index`, numbering continues after
    the session's runs already on the lifecycle topic.
    """
    from aero_assets.ids import validate_id
    from aero_assets.simulators.publish import next_run_index, publish_run, session_run_ids
    from aero_assets.simulators.windtunnel import RunConfig, random_config, simulate_run

    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    kafka.ensure_topics([settings.topics.windtunnel_samples, settings.topics.windtunnel_runs])
    now = datetime.now(UTC)
    session_id = validate_id(session_id or f"wt-{now:%Y%m%d-%H%M%S}", "session id")
    rng = np.random.default_rng(seed)
    rate = 38_800
    bar = tqdm(total=int(runs * duration_s * rate), unit="sample", unit_scale=True, desc="simulate windtunnel",
               disable=not progress, file=sys.stderr)
    if first_index is None:
        # a session published before (an earlier `aero simulate --session X`) continues its numbering:
        # reusing `<session>-run001` would make a new attempt of that run instead of a new run
        earlier = session_run_ids(kafka, settings.topics.windtunnel_runs, session_id)
        first_index = next_run_index(earlier, session_id)
        baseline_run_id = baseline_run_id or (earlier[0] if earlier else None)
    producer = kafka.producer()
    ids: list[str] = []
    baseline = baseline_run_id
    for index in range(first_index, first_index + runs):
        run_id = f"{session_id}-run{index:03d}"
        cfg = RunConfig() if index == 1 else random_config(rng)
        run = simulate_run(run_id, duration_s=duration_s, started_ns=time.time_ns(), config=cfg,
                           fault_rate=fault_rate, seed=int(rng.integers(2**31)))
        publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                    runs_topic=settings.topics.windtunnel_runs, session_id=session_id, baseline_run_id=baseline,
                    block_samples=block_samples, ground_truth_dir=settings.ground_truth_dir, producer=producer,
                    on_block=bar.update)
        baseline = baseline or run_id
        ids.append(run_id)
        bar.set_postfix_str(f"{run_id}: {run.sample_count:,} samples, {len(run.faults)} faults")
    bar.close()
    return ids


def prepare_dagster_home(settings: Settings) -> Path:
    """`$AERO_HOME/dagster` with the repo's instance config (Postgres when AERO_DAGSTER_PG_URL is set)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / ("docker/dagster.postgres.yaml" if settings.dagster_pg_url else "dagster.yaml")
    shutil.copyfile(src, home / "dagster.yaml")
    return home


def demo_broker(settings: Settings, *, reuse_broker: bool) -> tuple[EmbeddedBroker | None, KafkaResource, str]:
    """The demo's broker: (the broker it started or None, a client for it, what to tell the user).

    - Local settings and a free loopback port: start the embedded broker; it dies with this process.
    - Local settings and the port already served: a broker this demo did not start, most likely one
      left behind by an earlier `aero demo` or `aero broker`, with that session's topics, data and
      committed offsets. Refused (DemoRefused) unless `reuse_broker` says to use it as it is.
    - `AERO_ENV=production` or a bootstrap that is not loopback: the cluster the settings name.
    Whenever the broker is not the demo's own, the message says so, with its cluster id.
    """
    host = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
    port = settings.kafka.first_port
    local = settings.env == "local" and host in LOOPBACK
    if local and not port_is_open("127.0.0.1", port):
        broker, kafka = start_broker(settings, port)
        return broker, kafka, (f"aero demo: embedded broker on {broker.bootstrap} (cluster id {broker.cluster_id}, "
                               "memory only; it stops with the demo)")
    kafka = KafkaResource.from_settings(settings.kafka)
    try:
        cluster_id, topics = kafka.cluster(timeout=5)
        ours = sorted(set(topics) & set(settings.topics.all()))
        what = f"cluster id {cluster_id}"
        if local and cluster_id.startswith("aero-"):
            what += ", an embedded broker started by an earlier `aero demo` or `aero broker`"
        what += f"; {len(ours)} of Aero's {len(settings.topics.all())} topics exist there"
    except BrokerUnavailable as exc:
        cluster_id, what = None, f"it did not answer as a Kafka broker: {exc}"
    where = settings.kafka.bootstrap_servers
    if local and not reuse_broker:
        raise DemoRefused(
            f"aero demo: {where} is already served by a broker this demo did not start ({what}). Its topics may "
            "hold an earlier session's data and offsets, so this demo would not start clean. Stop that broker, "
            "or set AERO_KAFKA_BOOTSTRAP to a free port (e.g. 127.0.0.1:9093), or pass --reuse-broker to use it "
            "as it is."
        )
    if cluster_id is None:
        raise DemoRefused(f"aero demo: cannot use the Kafka broker at {where}: {what}")
    kafka.ensure_topics(settings.topics.all())
    return None, kafka, (f"aero demo: WARNING: using the Kafka broker at {where}, which this demo did not start "
                         f"({what}). Its topics may hold an earlier session's data; it keeps running when the "
                         "demo stops.")


def start_tire_fleet(settings: Settings, kafka: KafkaResource, env: dict, vehicles: int,
                     stop: threading.Event) -> tuple[subprocess.Popen, threading.Thread]:
    """The tire side of the demo: `aero stream tires-alerts` in its own process, and a fleet publishing in real time."""
    from aero_assets.simulators.tires_publish import simulate_tires

    log = (settings.home / "tires-alerts.log").open("ab")
    live = subprocess.Popen([str(Path(sys.executable).with_name("aero")), "stream", "tires-alerts"], env=env,
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent(signal.SIGINT))

    def fleet() -> None:
        try:
            simulate_tires(settings, vehicles=vehicles, rate_hz=1.0, duration_s=None, kafka=kafka, progress=False,
                           stop=stop, fleet_id=f"fleet{datetime.now(UTC):%H%M}", first_episode_within_s=45.0)
        except Exception as exc:  # the wind tunnel goes on; say why the fleet stopped
            print(f"aero demo: the tire fleet simulator stopped: {exc}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=fleet, name="tire-fleet", daemon=True)
    thread.start()
    return live, thread


def start_f1_sessions(settings: Settings, kafka: KafkaResource, laps: int, stop: threading.Event) -> threading.Thread:
    """The F1 side of the demo: sessions of `laps` flying laps at real time, one after another, until stopped."""
    from aero_assets.simulators.f1_publish import simulate_f1

    def sessions() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                simulate_f1(settings, laps=laps, session_id=f"silverstone-{datetime.now(UTC):%Y%m%d-%H%M}-{n}",
                            realtime=True, kafka=kafka, progress=False, stop=stop)
            except Exception as exc:  # the other domains go on; say why the car stopped
                print(f"aero demo: the F1 simulator stopped: {exc}", file=sys.stderr, flush=True)
                return

    thread = threading.Thread(target=sessions, name="f1-sessions", daemon=True)
    thread.start()
    return thread


def start_rigs(settings: Settings, kafka: KafkaResource, rigs: int, stop: threading.Event) -> threading.Thread:
    """The rig side of the demo: `rigs` rigs with the last 24 h published at once and the next 24 h at the
    seed's 6-minute cadence, and one CSV of another rig dropped into the inbox (with a few bad lines)."""
    from aero_assets.rig.simulate import simulate_rigs
    from aero_assets.simulators.rig_publish import simulate_rig, write_csv

    inbox = settings.home / "inbox" / "rig"
    csv_rig = f"rig-{rigs + 1:02d}"
    readings, _ = simulate_rigs(1, time.time_ns() - 12 * 3_600_000_000_000, 12.0, faults=False, seed=7)
    path = write_csv(readings, inbox / f".{csv_rig}__demo.tmp")
    with path.open("a") as fh:  # what a hand-edited export looks like: a typo, a short line
        late = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fh.write(f"{late},n/a,1012.0,1.0\n{late},55.0\n")
    path.replace(inbox / f"{csv_rig}__demo.csv")

    def run() -> None:
        try:
            simulate_rig(settings, rigs=rigs, hours=48.0, backfill_h=24.0, faults=True, seed=11, kafka=kafka,
                         progress=False, stop=stop)
        except Exception as exc:  # the other domains go on; say why the rigs stopped
            print(f"aero demo: the rig simulator stopped: {exc}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name="rigs", daemon=True)
    thread.start()
    return thread


DEMO_WEATHER_HISTORY_DAYS = 60.0
DEMO_HEATWAVE_AFTER_DAYS = 2.0  # simulated days of calm after the history before the heatwave starts
DEMO_WEATHER_SEEDS = {"calm": 104, "heatwave": 4}  # checked with forecast.scenario: detected in 7 h, retrain released


def start_weather(settings: Settings, kafka: KafkaResource, speed: float, stop: threading.Event) -> dict[str, int]:
    """The forecast side of the demo: a calm NOAA-like station and a temperature-only station whose heatwave
    starts two simulated days after their 60 days of history, both `speed` times faster than real time."""
    from aero_assets.simulators.weather_publish import simulate_weather

    hour = 3_600_000_000_000
    start = (time.time_ns() - round(DEMO_WEATHER_HISTORY_DAYS * 24) * hour) // hour * hour
    onset = start + round((DEMO_WEATHER_HISTORY_DAYS + DEMO_HEATWAVE_AFTER_DAYS) * 24) * hour
    stations = {"calm-01": ("calm", None), "heat-01": ("heatwave", onset)}

    def run(station: str, mode: str, heatwave_start: int | None) -> None:
        try:
            simulate_weather(settings, station, mode=mode, heatwave_start_ns=heatwave_start, speed=speed,
                             days=DEMO_WEATHER_HISTORY_DAYS + 56, seed=DEMO_WEATHER_SEEDS[mode], start=start,
                             history_days=DEMO_WEATHER_HISTORY_DAYS, kafka=kafka, progress=False, stop=stop)
        except Exception as exc:  # the other domains go on; say why the station stopped
            print(f"aero demo: the weather station {station} stopped: {exc}", file=sys.stderr, flush=True)

    for station, (mode, heatwave_start) in stations.items():
        threading.Thread(target=run, args=(station, mode, heatwave_start), name=station, daemon=True).start()
    return {"start_ns": start, "onset_ns": onset}


def start_api(settings: Settings, env: dict, port: int) -> subprocess.Popen | None:
    """`aero serve` on 127.0.0.1:`port` for the demo (None, with a note, when the port is taken)."""
    if port_is_open("127.0.0.1", port):
        print(f"aero demo: port {port} is in use, so the read API is not started (pass --api-port N)", file=sys.stderr)
        return None
    cmd = [str(Path(sys.executable).with_name("aero")), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = (settings.home / "api.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent(signal.SIGINT))
    print(f"aero demo: read API and explorer on http://127.0.0.1:{port} (docs: /docs, metrics: /metrics; "
          f"logs in {settings.home / 'api.log'})", flush=True)
    return proc


def run_demo(settings: Settings, *, ui_port: int, runs: int, duration_s: float, interval_s: float,
             fault_rate: float, reuse_broker: bool = False, vehicles: int = 20, f1_laps: int = 10,
             rigs: int = 2, weather_speed: float = 1800.0, api_port: int = 8000) -> int:
    stop = stop_event()
    if port_is_open("127.0.0.1", ui_port):
        print(f"aero demo: port {ui_port} is already in use (a Dagster UI left from an earlier demo?). "
              "Stop it, or pick another with --port.", file=sys.stderr)
        return 1
    try:
        broker, kafka, note = demo_broker(settings, reuse_broker=reuse_broker)
    except DemoRefused as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(note, file=sys.stderr if broker is None else sys.stdout, flush=True)
    dagster_home = prepare_dagster_home(settings)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "AERO_HOME": str(settings.home),
           "AERO_KAFKA_BOOTSTRAP": kafka.bootstrap_servers}
    if settings.dagster_pg_url:  # (maybe built from AERO_DAGSTER_PG_HOST/...: dagster.yaml reads the URL)
        env["AERO_DAGSTER_PG_URL"] = settings.dagster_pg_url
    dagster_bin = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster_bin), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(ui_port)]
    log = (settings.home / "dagster-dev.log").open("ab")
    # SIGINT when this process dies, however it dies: `dagster dev` takes it as Ctrl-C and stops its
    # webserver, daemon and code servers (a SIGKILL would leave those running, serving the old instance)
    dev = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                           preexec_fn=die_with_parent(signal.SIGINT))
    print(f"aero demo: starting Dagster (logs in {settings.home / 'dagster-dev.log'}) ...", flush=True)
    live = None
    api = start_api(settings, env, api_port) if api_port else None
    try:
        deadline = time.monotonic() + 120
        while not port_is_open("127.0.0.1", ui_port) and not stop.is_set():
            if dev.poll() is not None:
                print(f"aero demo: dagster dev exited with code {dev.returncode}; see the log above", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("aero demo: the Dagster UI did not come up within 120 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"aero demo: Dagster UI on http://127.0.0.1:{ui_port} — runs land, get QC'd, processed, "
              "measured, compared and exported by themselves (Catalog > windtunnel). Ctrl-C stops everything.",
              flush=True)
        if vehicles:
            live, _ = start_tire_fleet(settings, kafka, env, vehicles, stop)
            print(f"aero demo: a fleet of {vehicles} vehicles publishes tire readings to {settings.topics.tires_raw}; "
                  f"`aero stream tires-alerts` publishes alert episodes to {settings.topics.tires_alerts} (log: "
                  f"{settings.home / 'tires-alerts.log'}); windows and alerts of the current hour refresh by "
                  "themselves (Catalog > tires).", flush=True)
        if f1_laps:
            start_f1_sessions(settings, kafka, f1_laps, stop)
            print(f"aero demo: an F1 car laps Silverstone in real time on {settings.topics.f1_telemetry} (sessions of "
                  f"an out-lap and {f1_laps} laps); each completed lap is summarised (Catalog > f1) and published "
                  f"once to {settings.topics.f1_analytics}. Watch it live: `.venv/bin/aero watch f1` in another "
                  "terminal.", flush=True)
        if rigs:
            start_rigs(settings, kafka, rigs, stop)
            print(f"aero demo: {rigs} propulsion rigs report on {settings.topics.rig_readings} (24 h of history, "
                  f"then every 6 minutes) and a CSV of rig-{rigs + 1:02d} is in {settings.home / 'inbox' / 'rig'}; "
                  "clean readings, anomalies and KPIs per day appear by themselves (Catalog > rig). Drop more CSVs "
                  "there (header timestamp,temperature,pressure,uptime).", flush=True)
        if weather_speed:
            times = start_weather(settings, kafka, weather_speed, stop)
            wall_to_onset = DEMO_HEATWAVE_AFTER_DAYS * 86_400 / weather_speed
            print(f"aero demo: weather stations calm-01 and heat-01 publish to {settings.topics.weather_observations} "
                  f"({DEMO_WEATHER_HISTORY_DAYS:g} days of history, then {weather_speed:g}x real time); each gets a "
                  "champion forecaster (Catalog > forecast). heat-01's heatwave starts at simulated "
                  f"{datetime.fromtimestamp(times['onset_ns'] / 1e9, UTC):%Y-%m-%d %H:%M} UTC, about "
                  f"{wall_to_onset / 60:.0f} min from now: its drift check fails within a simulated day and "
                  "drift_retrain_sensor retrains it by itself a few simulated days later (Runs, tag "
                  "aero/trigger=drift); calm-01 never retrains.", flush=True)
        next_at = time.monotonic()
        batch = runs
        session = f"wt-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        published: list[str] = []
        while not stop.is_set():
            if batch and time.monotonic() >= next_at:
                # first batch: a clean reference run (the session baseline), ordinary variants, and one
                # badly instrumented run so the blocking QC check shows; later: ordinary variants
                plan = [(batch, fault_rate)]
                if not published and batch >= 3:
                    plan = [(1, 0.0), (batch - 2, fault_rate), (1, HEAVY_FAULT_RATE)]
                for n, rate in plan:
                    if not n:
                        continue
                    ids = simulate_windtunnel(settings, runs=n, duration_s=duration_s, fault_rate=rate,
                                              kafka=kafka, session_id=session, first_index=len(published) + 1,
                                              baseline_run_id=published[0] if published else None)
                    published += ids
                    note = f" (fault rate {rate:.0%}: QC will stop it)" if rate == HEAVY_FAULT_RATE else ""
                    print(f"aero demo: published {', '.join(ids)}{note}", flush=True)
                batch = 1 if interval_s > 0 else 0
                next_at = time.monotonic() + interval_s
            if dev.poll() is not None:
                print(f"aero demo: dagster dev exited with code {dev.returncode}", file=sys.stderr)
                return 1
            stop.wait(0.5)
    finally:
        print("aero demo: stopping ...", flush=True)
        stop.set()
        if live is not None:
            stop_process_group(live)
        if api is not None:
            stop_process_group(api)
        stop_process_group(dev)
        if broker is not None:
            broker.stop()
        print("aero demo: stopped", flush=True)
    return 0
