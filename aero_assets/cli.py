"""`aero` command line: the embedded broker, simulators, the demo and benchmarks.

Thin on purpose: each subcommand parses arguments, reads settings and calls a module that does
the work (and is tested on its own).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from resources.settings import SettingsError, load_settings


def cmd_broker(args: argparse.Namespace) -> int:
    from aero_assets.stack import run_broker_forever

    settings = load_settings()
    port = args.port or settings.kafka.first_port
    return run_broker_forever(settings, port, args.partitions)


def cmd_simulate(args: argparse.Namespace) -> int:
    from aero_assets.stack import simulate_windtunnel

    settings = load_settings()
    if args.domain == "f1":
        from aero_assets.simulators.f1_publish import simulate_f1
        from aero_assets.stack import stop_event

        summary = simulate_f1(settings, laps=args.laps, session_id=args.session, realtime=args.realtime,
                              seed=args.seed, samples_per_message=args.samples_per_message,
                              out_lap=not args.no_out_lap, stop=stop_event())
        print(json.dumps(summary))
        return 0
    if args.domain == "rig":
        from aero_assets.simulators.rig_publish import simulate_rig
        from aero_assets.stack import stop_event

        summary = simulate_rig(settings, rigs=args.rigs, interval_s=args.interval, hours=args.hours,
                               backfill_h=args.backfill, faults=args.faults, seed=args.seed, stop=stop_event())
        print(json.dumps(summary))
        return 0
    if args.domain == "tires":
        from aero_assets.simulators.tires_publish import simulate_tires
        from aero_assets.stack import stop_event

        if (args.duration is None) == (not args.forever):
            print("aero simulate tires: give --duration S or --forever", file=sys.stderr)
            return 2
        summary = simulate_tires(settings, vehicles=args.vehicles, rate_hz=args.rate, duration_s=args.duration,
                                 late_fraction=args.late_fraction, seed=args.seed, fleet_id=args.fleet,
                                 episode_rate=args.episode_rate, fast=args.fast, stop=stop_event())
        print(json.dumps(summary))
        return 0
    if args.domain == "weather":
        from aero_assets.simulators.weather_publish import simulate_weather
        from aero_assets.stack import stop_event

        if args.heatwave_start is not None and args.mode != "heatwave":
            print("aero simulate weather: --heatwave-start needs --mode heatwave", file=sys.stderr)
            return 2
        if args.history_days is not None and args.history_days > args.days and not args.forever:
            print(f"aero simulate weather: --history-days {args.history_days:g} is longer than --days {args.days:g}",
                  file=sys.stderr)
            return 2
        summary = simulate_weather(settings, args.station, mode=args.mode, heatwave_start_ns=args.heatwave_start,
                                   speed=args.speed, days=args.days, seed=args.seed, start=args.start,
                                   history_days=args.history_days, interval_s=args.interval,
                                   temperature_only=args.temperature_only, forever=args.forever, faults=args.faults,
                                   stop=stop_event())
        print(json.dumps(summary))
        return 0
    ids = simulate_windtunnel(
        settings, runs=args.runs, duration_s=args.duration, session_id=args.session,
        fault_rate=args.fault_rate, seed=args.seed, block_samples=args.block_samples,
    )
    print(json.dumps({"runs": ids}))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from pathlib import Path

    from aero_assets.forecast.csv_load import CsvLoadError, load_weather_csv
    from aero_assets.stack import stop_event

    settings = load_settings()
    try:
        summary = load_weather_csv(settings, Path(args.csv), args.station, ts_column=args.ts_column,
                                   temperature_column=args.temperature_column, windspeed_column=args.windspeed_column,
                                   pressure_column=args.pressure_column, unit=args.unit, stop=stop_event())
    except CsvLoadError as exc:
        print(f"aero load weather: {exc}", file=sys.stderr)
        return 2
    if summary["bad_rows"]:
        print(f"aero load weather: {summary['bad_rows']} of {summary['rows_read']} rows not published (time or "
              f"temperature does not parse): " + "; ".join(summary["bad_examples"]), file=sys.stderr)
    print(json.dumps(summary))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import logging

    from aero_assets.stack import stop_event
    from aero_assets.tires.live import run_live_alerts
    from aero_assets.tires.settings import load_thresholds

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings, thresholds = load_settings(), load_thresholds()
    print(f"aero stream tires-alerts: {settings.topics.tires_raw} -> {settings.topics.tires_alerts} "
          f"({thresholds}); Ctrl-C stops it.", flush=True)
    stats = run_live_alerts(settings, stop=stop_event(), thresholds=thresholds)
    print(json.dumps(stats))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from aero_assets.f1.pitwall import run_watch
    from aero_assets.stack import stop_event
    from resources.kafka import KafkaResource

    settings = load_settings()
    stats = run_watch(KafkaResource.from_settings(settings.kafka), settings.topics.f1_telemetry,
                      settings.topics.f1_analytics, session=args.session, duration_s=args.duration,
                      refresh_hz=args.refresh, plain=args.plain, stop=stop_event())
    print(json.dumps(stats))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from aero_assets.stack import run_demo

    return run_demo(load_settings(), ui_port=args.port, runs=args.runs, duration_s=args.duration,
                    interval_s=args.interval, fault_rate=args.fault_rate, reuse_broker=args.reuse_broker,
                    vehicles=args.vehicles, f1_laps=args.f1_laps, rigs=args.rigs, weather_speed=args.weather_speed,
                    api_port=args.api_port)


def cmd_backfill(args: argparse.Namespace) -> int:
    import os

    import dagster as dg

    from aero_assets.backfill import BackfillError, partition_keys, submit_backfill, wait_for_backfill
    from aero_assets.definitions import defs
    from aero_assets.stack import prepare_dagster_home

    settings = load_settings()
    os.environ.setdefault("DAGSTER_HOME", str(prepare_dagster_home(settings)))
    names = [n for n in args.partitions.split(",") if n] if args.partitions else None
    with dg.DagsterInstance.get() as instance:
        try:
            keys = partition_keys(args.domain, instance, args.start, args.end, None if args.all else names)
        except BackfillError as exc:
            print(f"aero backfill: {exc}", file=sys.stderr)
            return 2
        backfill_id = submit_backfill(instance, defs.get_repository_def(), args.domain, keys)
        print(f"aero backfill: {args.domain}, {len(keys)} partition(s) {keys[0]} .. {keys[-1]}: backfill {backfill_id}"
              f" (the daemon runs it; UI: /runs/b/{backfill_id}, DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
        if not args.wait:
            return 0
        status = wait_for_backfill(instance, backfill_id, args.wait)
        print(f"aero backfill: {backfill_id} {status.value}")
        return 0 if status.value in ("COMPLETED_SUCCESS", "COMPLETED") else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from aero_assets.doctor import report, run_checks

    findings = run_checks(load_settings(), ui_port=args.ui_port)
    if args.json:
        print(json.dumps([f.__dict__ for f in findings]))
        return 1 if any(f.status == "FAIL" for f in findings) else 0
    text, code = report(findings)
    print(text)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from aero_assets.serve.app import serve

    serve(load_settings(), host=args.host, port=args.port)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "ingest":
        from aero_assets.bench.ingest import bench_ingest

        figures = bench_ingest(samples=args.samples, baseline_samples=args.baseline_samples)
    elif args.name == "qc":
        from aero_assets.bench.windtunnel import bench_qc

        figures = bench_qc(runs=args.runs, duration_s=args.duration or 10.0)
    elif args.name == "windtunnel":
        from aero_assets.bench.windtunnel import bench_windtunnel

        figures = bench_windtunnel(duration_s=args.duration or 60.0)
    elif args.name == "tires":
        from pathlib import Path

        from aero_assets.bench.tires import bench_tires

        figures = bench_tires(readings=args.readings, input_path=Path(args.input) if args.input else None,
                              latency_seconds=args.latency_seconds)
    elif args.name == "rig":
        from aero_assets.bench.rig import bench_rig

        figures = bench_rig(rows=args.rows)
    elif args.name == "f1":
        from pathlib import Path

        from aero_assets.bench.f1 import bench_f1

        figures = bench_f1(laps=args.laps, input_path=Path(args.input) if args.input else None,
                           sim_laps=args.sim_laps)
    elif args.name == "forecast":
        from aero_assets.bench.forecast import bench_forecast

        figures = bench_forecast(seeds=args.seeds)
    elif args.name == "serve":
        from aero_assets.bench.serve import bench_serve

        figures = bench_serve(clients=args.clients, requests=args.requests, duration_s=args.duration or 60.0)
    else:  # argparse restricts choices; later issues add benchmarks here
        raise SystemExit(f"unknown benchmark {args.name}")
    print(json.dumps(figures))
    return 0


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive number")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a fraction between 0 and 1")
    return value


def _safe_id(raw: str) -> str:
    from aero_assets.ids import InvalidIdentifier, validate_id

    try:
        return validate_id(raw, "fleet id")
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _station_id(raw: str) -> str:
    from aero_assets.ids import InvalidIdentifier, validate_id

    try:
        return validate_id(raw, "station id")
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _onset(raw: str) -> str:
    from aero_assets.simulators.weather_publish import parse_onset

    try:
        parse_onset(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return raw


def _utc_time(raw: str) -> str:
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 time with an offset (e.g. 2026-06-01T00:00:00Z)")
    return raw


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{raw} is not a number >= 0")
    return value


def _interval(raw: str) -> float:
    from aero_assets.simulators.rig_publish import parse_interval

    try:
        return parse_interval(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _session_id(raw: str) -> str:
    from aero_assets.ids import InvalidIdentifier, validate_id

    try:
        return validate_id(raw, "session id")
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aero", description="Aero telemetry data platform")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Ctrl-C stops it)")
    b.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: AERO_KAFKA_BOOTSTRAP's, 9092)")
    b.add_argument("--partitions", type=int, default=None, help="partitions per topic (default AERO_KAFKA_PARTITIONS)")
    b.set_defaults(fn=cmd_broker)

    s = sub.add_parser("simulate", help="publish simulated telemetry to Kafka")
    ssub = s.add_subparsers(dest="domain", required=True)
    w = ssub.add_parser("windtunnel", help="72-channel wind-tunnel runs as Arrow IPC blocks")
    w.add_argument("--runs", type=int, default=1)
    w.add_argument("--duration", type=float, default=10.0, help="seconds of tunnel time per run")
    w.add_argument("--session", default=None, help="session id (default: wt-<timestamp>)")
    w.add_argument("--fault-rate", type=float, default=0.0, help="probability per channel of an injected fault")
    w.add_argument("--seed", type=int, default=None)
    w.add_argument("--block-samples", type=int, default=4000, help="samples per Arrow message")
    w.set_defaults(fn=cmd_simulate)
    t = ssub.add_parser("tires", help="a tire fleet's pressure/temperature readings as JSON on tires.raw")
    t.add_argument("--vehicles", type=_positive_int, default=20)
    t.add_argument("--rate", type=_positive_float, default=1.0, help="readings per tire per second")
    t.add_argument("--duration", type=_positive_float, default=None, help="seconds to simulate")
    t.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    t.add_argument("--late-fraction", type=_fraction, default=0.02, help="share of readings delivered 5-180 s late")
    t.add_argument("--episode-rate", type=float, default=3.0, help="planted episodes per vehicle per hour")
    t.add_argument("--fleet", default="fleet", type=_safe_id, help="fleet id, the prefix of vehicle ids")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--fast", action="store_true", help="publish the last --duration seconds as fast as possible "
                                                        "instead of in real time")
    t.set_defaults(fn=cmd_simulate)

    f = ssub.add_parser("f1", help="an F1 session at Silverstone: 100 Hz telemetry on f1.telemetry, events on "
                                   "f1.sessions")
    f.add_argument("--laps", type=_positive_int, default=5, help="flying laps after the out-lap")
    f.add_argument("--session", default=None, type=_session_id, help="session id (default: silverstone-<time>)")
    pace = f.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="pace at wall-clock speed (the demo, aero watch f1)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (the default), timestamps ending now")
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--samples-per-message", type=_positive_int, default=10,
                   help="samples per Kafka message (1 = one JSON object per sample, as the seed's car sent)")
    f.add_argument("--no-out-lap", action="store_true", help="start on a flying lap instead of leaving the pits")
    f.set_defaults(fn=cmd_simulate)

    r = ssub.add_parser("rig", help="propulsion test rigs on rig.readings (JSON), with planted faults and ground truth")
    r.add_argument("--rigs", type=_positive_int, default=2)
    r.add_argument("--interval", type=_interval, default=360.0, help="reading cadence per rig: 6m (the seed's), 30s...")
    r.add_argument("--hours", type=_positive_float, default=12.0, help="hours of rig time simulated")
    r.add_argument("--backfill", type=float, default=None,
                   help="hours of that span in the past, published at once (default: all); the rest in real time")
    r.add_argument("--faults", action="store_true", help="plant nulls, outliers, duplicates, drift, impossible values")
    r.add_argument("--seed", type=int, default=None)
    r.set_defaults(fn=cmd_simulate)

    we = ssub.add_parser("weather", help="a NOAA-like weather station (calm) or a temperature-only one with a "
                                         "heatwave at a known onset, JSON on weather.observations")
    we.add_argument("--station", required=True, type=_station_id, help="station id (the message key)")
    we.add_argument("--mode", choices=["calm", "heatwave"], default="calm")
    we.add_argument("--heatwave-start", type=_onset, default=None,
                    help="onset: an offset from the simulated start (+10d, +36h) or an ISO time with an offset "
                         "(default: the simulator's, 40-60%% into --days)")
    we.add_argument("--days", type=_positive_float, default=28.0, help="simulated days (the span)")
    we.add_argument("--history-days", type=_non_negative_float, default=None,
                    help="days of the span published at once as history (default: all of it; with --speed, 28)")
    we.add_argument("--speed", type=_positive_float, default=None,
                    help="after the history, simulated time runs X times faster than real time (3600: an hour per "
                         "second); default 1 (real time)")
    we.add_argument("--start", type=_utc_time, default=None,
                    help="simulated start, ISO with an offset (default: now minus the history)")
    we.add_argument("--interval", type=_interval, default=3600.0, help="observation cadence: 1h (default), 10m...")
    we.add_argument("--forever", action="store_true", help="keep going after --days (ten simulated years) until "
                                                           "Ctrl-C")
    we.add_argument("--temperature-only", action="store_true", default=None,
                    help="no windspeed/pressure (default: only the heatwave station is temperature-only)")
    we.add_argument("--faults", action="store_true", help="plant duplicates and a gap (landed) and a NaN, a Kelvin "
                                                          "and a Fahrenheit temperature (DLQ); counts in the ground "
                                                          "truth")
    we.add_argument("--seed", type=int, default=None)
    we.set_defaults(fn=cmd_simulate)

    lo = sub.add_parser("load", help="publish files of real observations to Kafka")
    losub = lo.add_subparsers(dest="domain", required=True)
    lw = losub.add_parser("weather", help="a CSV of a station's observations to weather.observations")
    lw.add_argument("--csv", required=True, help="the CSV file")
    lw.add_argument("--station", required=True, type=_station_id, help="station id (the message key)")
    lw.add_argument("--ts-column", default=None, help="time column (default: found by name: ts, timestamp, DATE...)")
    lw.add_argument("--temperature-column", default=None,
                    help="temperature column (default: found by name: temperature, TMP, ...)")
    lw.add_argument("--windspeed-column", default=None, help="windspeed column (optional; found by name)")
    lw.add_argument("--pressure-column", default=None, help="pressure column (optional; found by name)")
    lw.add_argument("--unit", type=str.upper, choices=["C", "F"], default=None,
                    help="temperature unit in the file (default: C, or F when the column's name says so)")
    lw.set_defaults(fn=cmd_load)

    st = sub.add_parser("stream", help="long-running stream services (own consumer group; Ctrl-C stops)")
    st.add_argument("name", choices=["tires-alerts"], help="tires-alerts: alert episodes on tires.alerts within a "
                                                          "second of the reading")
    st.set_defaults(fn=cmd_stream)

    wa = sub.add_parser("watch", help="live views in the terminal (own consumer group, commits nothing)")
    wa.add_argument("what", choices=["f1"], help="f1: the pit wall - speed, gear, pedals, g, sector, delta to best")
    wa.add_argument("--session", default=None, type=_session_id, help="follow this session (default: the newest)")
    wa.add_argument("--duration", type=_positive_float, default=None, help="stop after S seconds (default: Ctrl-C)")
    wa.add_argument("--refresh", type=_positive_float, default=12.0, help="screen refreshes per second")
    wa.add_argument("--plain", action="store_true", help="print a text line per refresh instead of a live panel")
    wa.set_defaults(fn=cmd_watch)

    d = sub.add_parser("demo", help="broker + simulator + Dagster UI on 127.0.0.1 (Ctrl-C stops all)")
    d.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    d.add_argument("--runs", type=int, default=3, help="runs published right after start")
    d.add_argument("--duration", type=float, default=10.0, help="seconds per simulated run")
    d.add_argument("--interval", type=float, default=60.0, help="seconds between further runs (0: none)")
    d.add_argument("--fault-rate", type=float, default=0.02, help="fault probability per channel of ordinary runs")
    d.add_argument("--reuse-broker", action="store_true",
                   help="use a broker already serving AERO_KAFKA_BOOTSTRAP's port (its topics may hold earlier "
                        "data); without it the demo refuses to start on one it did not start")
    d.add_argument("--vehicles", type=int, default=20, help="tire fleet size (0: no tire fleet)")
    d.add_argument("--f1-laps", type=int, default=10, help="flying laps per F1 session at real time (0: no car)")
    d.add_argument("--rigs", type=int, default=2, help="simulated propulsion rigs (0: none, and no CSV)")
    d.add_argument("--weather-speed", type=float, default=1800.0,
                   help="simulated weather time per real second (1800: an hour every 2 s; 0: no weather stations)")
    d.add_argument("--api-port", type=int, default=8000, help="port of the read API and explorer (0: not started)")
    d.set_defaults(fn=cmd_demo)

    bf = sub.add_parser("backfill", help="re-run a domain's chain over a range of partitions (one Dagster backfill, "
                                         "run by the daemon)")
    bf.add_argument("domain", choices=["tires", "rig", "windtunnel", "forecast", "forecast-training"])
    bf.add_argument("--from", dest="start", help="first partition: a day (2026-03-01) or an hour (2026-03-01-05:00)")
    bf.add_argument("--to", dest="end", help="last partition, inclusive (default: --from)")
    bf.add_argument("--partitions", help="named partitions (runs, stations), comma-separated")
    bf.add_argument("--all", action="store_true", help="every partition of a named (dynamic) domain")
    bf.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to this long for the backfill to finish (exit code 1 unless it succeeded)")
    bf.set_defaults(fn=cmd_backfill)

    dr = sub.add_parser("doctor", help="check broker, instance storage, lake, disk, versions and stale processes on "
                                       "Aero's ports; exit code 1 when something must be fixed")
    dr.add_argument("--ui-port", type=int, default=3000, help="the Dagster UI port to check")
    dr.add_argument("--json", action="store_true", help="the findings as JSON")
    dr.set_defaults(fn=cmd_doctor)

    sv = sub.add_parser("serve", help="the read API (FastAPI; OpenAPI docs at /docs) over the lake, read-only")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.set_defaults(fn=cmd_serve)

    be = sub.add_parser("bench", help="measure Aero against its baseline; last line is JSON")
    be.add_argument("name", choices=["ingest", "qc", "windtunnel", "tires", "f1", "rig", "forecast", "serve"])
    be.add_argument("--samples", type=int, default=5_000_000, help="ingest: samples landed by Aero")
    be.add_argument("--baseline-samples", type=int, default=200_000, help="ingest: samples landed by the baseline")
    be.add_argument("--runs", type=int, default=40, help="qc: simulated runs scored")
    be.add_argument("--duration", type=float, default=None, help="qc: s per run (10); windtunnel, serve: run s (60)")
    be.add_argument("--readings", type=int, default=10_000_000, help="tires: readings in the window benchmark")
    be.add_argument("--input", default=None,
                    help="tires: Parquet file (vehicle_id, tire, ts, pressure_kpa, temperature_c); f1: Parquet file "
                         "with the f1.telemetry columns; instead of a generated one")
    be.add_argument("--latency-seconds", type=float, default=30.0,
                    help="tires: seconds of paced live traffic (0: skip)")
    be.add_argument("--laps", type=_positive_int, default=5000, help="f1: laps in the summary benchmark's file")
    be.add_argument("--sim-laps", type=_positive_int, default=20, help="f1: laps the simulator publishes (fast)")
    be.add_argument("--rows", type=_positive_int, default=10_000_000, help="rig: simulated readings processed")
    be.add_argument("--seeds", type=_positive_int, default=6,
                    help="forecast: simulated calm and heatwave stations (one of each per seed)")
    be.add_argument("--clients", type=_positive_int, default=20, help="serve: concurrent keep-alive clients")
    be.add_argument("--requests", type=_positive_int, default=400, help="serve: requests per endpoint measured")
    be.set_defaults(fn=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SettingsError as exc:
        print(f"aero: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
