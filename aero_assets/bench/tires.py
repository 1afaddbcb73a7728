"""`aero bench tires`: windows from a Parquet file, JSON landing from the broker, live alert latency.

Each figure is measured next to its baseline in the same run:
- file -> 1-minute window aggregates: Aero's dense scatter vs pandas' groupby on the same file;
- broker -> lake landing of `tires.raw`: the batch JSON path vs the platform's per-message path,
  both through the same `land_topic` on the same embedded broker;
- reading published -> alert on `tires.alerts`: the live consumer at a paced rate.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from aero_assets.codec import TS_TYPE
from aero_assets.tires.decoder import TIRES, TireReadingsDecoder
from aero_assets.tires.windows import CHUNK_ROWS, window_aggregates, windows_pandas

INPUT_COLUMNS = ["vehicle_id", "tire", "ts", "pressure_kpa", "temperature_c"]


def synthetic_readings(n: int, *, vehicles: int = 250, rate_hz: float = 1.0, start_ns: int | None = None,
                       seed: int = 0) -> pa.Table:
    """`n` readings of a fleet at `rate_hz` per tire, in time order (vectorised; ~10 M in a few seconds)."""
    rng = np.random.default_rng(seed)
    per_tick = vehicles * len(TIRES)
    ticks = -(-n // per_tick)
    start_ns = start_ns if start_ns is not None else (time.time_ns() // 3_600_000_000_000 - 24) * 3_600_000_000_000
    tick = np.repeat(np.arange(ticks, dtype=np.int64), per_tick)[:n]
    slot = np.tile(np.arange(per_tick), ticks)[:n]
    names = np.array([f"fleet-v{v:03d}" for v in range(vehicles)], dtype=object)
    ts = start_ns + (tick * (1e9 / rate_hz)).astype(np.int64) + rng.integers(0, 1_000_000, n)
    return pa.table({
        "vehicle_id": pa.DictionaryArray.from_arrays(pa.array(slot // len(TIRES), pa.int32()), pa.array(names)),
        "tire": pa.DictionaryArray.from_arrays(pa.array(slot % len(TIRES), pa.int8()), pa.array(TIRES)),
        "ts": pa.array(ts).cast(TS_TYPE),
        "pressure_kpa": np.round(235 + rng.normal(0, 3, n), 2),
        "temperature_c": np.round(45 + rng.normal(0, 5, n), 2),
    })


def json_lines(table: pa.Table) -> np.ndarray:
    """Each reading as its wire JSON (DESIGN.md), built column-wise by Arrow rather than json.dumps per row."""
    def text(col) -> pa.Array:
        return pc.cast(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col, pa.string())

    vid = text(table["vehicle_id"].cast(pa.string()))
    # a millisecond timestamp's %S carries the fraction: 2026-01-05T10:00:00.250Z
    ms = pc.cast(table["ts"].combine_chunks(), pa.timestamp("ms", tz="UTC"), safe=False)
    ts = pc.strftime(ms, format="%Y-%m-%dT%H:%M:%S")
    parts = ['{"vehicle_id":"', vid, '","tire":"', text(table["tire"].cast(pa.string())), '","pressure_kpa":',
             text(table["pressure_kpa"]), ',"temperature_c":', text(table["temperature_c"]), ',"ts":"', ts, 'Z"}']
    return pc.binary_join_element_wise(*parts, "").to_numpy(zero_copy_only=False)


def json_messages(table: pa.Table, per_message: int):
    """(key, value, readings) messages: `per_message` consecutive readings of one vehicle as NDJSON lines."""
    lines = json_lines(table)
    vid = table["vehicle_id"].cast(pa.string()).to_numpy(zero_copy_only=False)
    change = np.flatnonzero(np.concatenate(([True], vid[1:] != vid[:-1])))
    bounds = np.unique(np.concatenate([np.arange(a, b, per_message) for a, b in
                                       zip(change, np.append(change[1:], len(vid)), strict=True)] + [[len(vid)]]))
    for a, b in itertools.pairwise(bounds):
        yield vid[a].encode(), "\n".join(lines[a:b]).encode(), int(b - a)


def bench_windows(input_path: Path) -> dict:
    """File -> windows: Aero (streamed row groups) and pandas, best of a few repetitions each."""
    rows = pq.ParquetFile(input_path).metadata.num_rows

    def aero() -> pa.Table:
        f = pq.ParquetFile(input_path, read_dictionary=["vehicle_id", "tire"])
        return window_aggregates(f.iter_batches(batch_size=CHUNK_ROWS, columns=INPUT_COLUMNS))

    def pandas() -> pa.Table:
        return windows_pandas(pq.read_table(input_path, columns=INPUT_COLUMNS))

    aero_s, out = _best(aero, 3)
    base_s, expected = _best(pandas, 1)
    if out.num_rows != expected.num_rows or int(np.sum(out["reading_count"])) != rows:
        raise AssertionError("Aero's windows differ from pandas' on the benchmark file")
    return {"readings": rows, "windows": out.num_rows, "readings_per_s": round(rows / aero_s),
            "baseline_readings_per_s": round(rows / base_s), "ratio": round(base_s / aero_s, 2)}


def _best(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


class _PerMessage:
    """The platform's per-message JSON path: the same decoder with its batch path hidden."""

    def __init__(self, inner: TireReadingsDecoder):
        self.inner, self.schema, self.split_column = inner, inner.schema, inner.split_column

    def decode(self, value, key, content_type):
        return self.inner.decode(value, key, content_type)


def gateway_order(table: pa.Table, rate_hz: float = 10.0) -> pa.Table:
    """Readings in the order a vehicle gateway sends them: each vehicle's second of readings together."""
    ts = table["ts"].cast(pa.int64()).to_numpy()
    vehicle = table["vehicle_id"].combine_chunks().indices.to_numpy() if pa.types.is_dictionary(
        table["vehicle_id"].type) else pc.dictionary_encode(table["vehicle_id"]).combine_chunks().indices.to_numpy()
    second = (ts - ts.min()) // 1_000_000_000
    return table.take(pa.array(np.lexsort((ts, vehicle, second))))


def bench_landing(readings: int, baseline_readings: int, per_message: int = 40) -> dict:
    """Broker -> lake for `tires.raw`, batch path vs per-message path, on one embedded broker.

    Messages carry one vehicle's second of readings (4 tires at 10 Hz = 40 NDJSON lines), the way a
    telematics gateway batches them; both paths land exactly the same messages.
    """
    from aero_assets.landing import land_topic
    from aero_assets.simulators.publish import JSON_HEADERS
    from resources.embedded_broker import EmbeddedBroker, free_port
    from resources.kafka import KafkaResource

    out = {}
    with EmbeddedBroker(port=free_port()) as broker, tempfile.TemporaryDirectory() as tmp:
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        for name, n, decoder in (("aero", readings, TireReadingsDecoder()),
                                 ("baseline", baseline_readings, _PerMessage(TireReadingsDecoder()))):
            topic = f"bench.tires.{name}"
            kafka.ensure_topics([topic])
            producer = kafka.producer(**{"linger.ms": 20, "batch.size": 1_000_000})
            table = gateway_order(synthetic_readings(
                n, rate_hz=10.0, start_ns=(time.time_ns() // 3_600_000_000_000 - 2) * 3_600_000_000_000))
            with tqdm(total=n, desc=f"publish {name}", unit="reading", leave=False) as bar:
                for key, value, rows in json_messages(table, per_message):
                    while True:
                        try:
                            producer.produce(topic, value, key, headers=JSON_HEADERS)
                            break
                        except BufferError:
                            producer.poll(0.05)
                    bar.update(rows)
                producer.flush(60)
            with tqdm(total=n // per_message, desc=f"land {name}", unit="msg", leave=False) as bar:
                t0 = time.perf_counter()
                res = land_topic(kafka, Path(tmp) / name, topic, decoder, progress=bar.update)
                seconds = time.perf_counter() - t0
            if res.rows != n:
                raise AssertionError(f"{name} landed {res.rows} of {n} readings")
            out[name] = n / seconds
    return {"landing_readings_per_s": round(out["aero"]), "landing_baseline_readings_per_s": round(out["baseline"]),
            "landing_ratio": round(out["aero"] / out["baseline"], 1), "readings_per_message": per_message}


def bench_detection(vehicles: int = 20, hours: float = 4.0, seed: int = 7) -> dict:
    """Every planted episode of a simulated fleet (2 % late readings) against `detect_episodes`."""
    from aero_assets.simulators.tires import simulate_table
    from aero_assets.tires.episodes import Thresholds, detect_episodes
    from aero_assets.tires.scoring import score

    start = 1_767_225_600 * 1_000_000_000
    table, truth = simulate_table(vehicles, 1.0, hours * 3600, seed=seed, start_ns=start, late_fraction=0.02)
    log = table.drop_columns(["deliver_ns"]).append_column(
        "_partition", pa.array(np.zeros(table.num_rows, np.int32))).append_column(
        "_offset", pa.array(np.arange(table.num_rows)))
    result = score(truth, detect_episodes(log, Thresholds()), start + int(hours * 3600e9))
    return {"planted_episodes": result["planted_episodes"],
            "episodes_fully_detected": result["episodes_fully_detected"],
            "episode_alert_recall": result["recall"], "false_alerts": result["false_alerts"],
            "missed": result["misses"][:5]}


def bench_tires(*, readings: int = 10_000_000, input_path: Path | None = None, landing_readings: int = 1_000_000,
                baseline_landing_readings: int = 40_000, latency_rate: int = 10_000, latency_seconds: float = 30.0,
                ) -> dict:
    """All tire figures (DESIGN.md keys plus the new ones); the CLI prints them as the last line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = input_path
        if path is None:
            path = Path(tmp) / "readings.parquet"
            print(f"aero bench tires: generating {readings:,} readings into {path.name} ...", flush=True)
            pq.write_table(synthetic_readings(readings), path, row_group_size=CHUNK_ROWS)
        print("aero bench tires: windows, Aero then pandas ...", flush=True)
        figures = bench_windows(path)
    print("aero bench tires: planted episodes of a simulated fleet vs the alert episodes found ...", flush=True)
    figures.update(bench_detection())
    print("aero bench tires: landing from the broker, batch then per-message ...", flush=True)
    figures.update(bench_landing(landing_readings, baseline_landing_readings))
    if latency_seconds > 0:
        print(f"aero bench tires: live alert latency at {latency_rate:,} readings/s ...", flush=True)
        from aero_assets.bench.tires_live import bench_alert_latency_embedded

        figures.update(bench_alert_latency_embedded(readings_per_s=latency_rate, seconds=latency_seconds))
    return figures
