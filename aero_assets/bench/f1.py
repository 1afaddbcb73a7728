"""`aero bench f1`: the simulator's speed, lap summaries from a big Parquet file, and the realism figures.

Each figure is measured next to its baseline in the same run:
- simulator in fast mode on the embedded broker: simulated seconds per wall second;
- 5,000 laps (45 M rows at 100 Hz) in one Parquet file -> lap summaries: Aero's reduceat pass vs a
  plain pandas groupby over the same file and columns, both timed from the file to the summaries;
- the car model's lap time, top speed and peak g next to the realism targets.
`--input` takes any Parquet file with the telemetry columns, so other engines can run the same data.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aero_assets.f1.laps import FULL_THROTTLE, Telemetry, summarise_parquet

SUMMARY_COLUMNS = list(Telemetry.COLUMNS)
TARGETS = {"lap_time_s": (84, 100), "vmax_kph": (300, 345), "peak_lat_g": (3.5, 6), "peak_braking_g": (4, 6),
           "full_throttle_share": (0.55, 0.80), "fuel_per_lap_kg": (1.5, 2.0)}


def bench_file(path: Path, laps: int, *, template_laps: int = 50, progress: bool = True) -> Path:
    """A Parquet file of `laps` laps: `template_laps` simulated laps per session, sessions laid end to end.

    The simulator makes ~100 laps a second, so 5,000 distinct laps would take a minute; sessions
    reuse one template session with their own ids and times (what the summaries see is the same:
    contiguous laps, 100 Hz, realistic channels).
    """
    from aero_assets.simulators.f1 import session_laps

    if path.exists() and pq.ParquetFile(path).metadata.num_rows > 0:
        meta = pq.ParquetFile(path).schema_arrow.metadata or {}
        if meta.get(b"aero_laps") == str(laps).encode():
            return path
    template = pa.concat_tables([lap.table for lap in session_laps("template", template_laps, 0, seed=11,
                                                                   out_lap=False)])
    span_ns = int(template["ts"].cast(pa.int64()).to_numpy()[-1]) + 10_000_000
    sessions = -(-laps // template_laps)
    start = (time.time_ns() // 86_400_000_000_000 - 30) * 86_400_000_000_000
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = template.schema.with_metadata({"aero_laps": str(laps)})
    lap_col = template["lap"].to_numpy()
    with pq.ParquetWriter(tmp, schema, compression="lz4", use_dictionary=["session_id"]) as w:
        for s in tqdm(range(sessions), desc="bench f1: writing the input file", unit="session", disable=not progress):
            take = template if (s + 1) * template_laps <= laps else template.filter(
                pa.array(lap_col <= laps - s * template_laps))
            ts = take["ts"].cast(pa.int64()).to_numpy() + start + s * (span_ns + 3_600_000_000_000)
            t = take.set_column(0, "session_id", pa.array(np.full(take.num_rows, f"bench-{s:04d}", dtype=object),
                                                          pa.string()))
            t = t.set_column(1, "ts", pa.array(ts).cast(take.schema.field("ts").type))
            w.write_table(t.replace_schema_metadata(schema.metadata), row_group_size=1_000_000)
    tmp.replace(path)
    return path


def aero_summaries(path: Path, track_length_m: float, sectors_m: tuple[float, float]) -> pa.Table:
    out, _ = summarise_parquet(path, track_length_m, sectors_m)
    return out


def pandas_summaries(path: Path) -> pd.DataFrame:
    """The same statistics the way a pandas user writes them: one groupby over the file."""
    df = pd.read_parquet(path, columns=SUMMARY_COLUMNS)
    df["full"] = df["throttle"] >= FULL_THROTTLE
    df["braking"] = df["brake"] > 0.05
    df["abs_lat"] = df["g_lat"].abs()
    df["shift"] = df.groupby(["session_id", "lap"], observed=True)["gear"].diff().fillna(0).ne(0)
    g = df.groupby(["session_id", "lap"], observed=True)
    return g.agg(samples=("ts", "size"), t_first=("ts", "min"), t_last=("ts", "max"),
                 avg_speed_kph=("speed_kph", "mean"), max_speed_kph=("speed_kph", "max"),
                 throttle_pct=("throttle", "mean"), full_throttle=("full", "mean"), brake=("braking", "mean"),
                 fuel_first=("fuel_kg", "first"), fuel_last=("fuel_kg", "last"), peak_lat_g=("abs_lat", "max"),
                 peak_long=("g_long", "max"), peak_brake=("g_long", "min"), gear_changes=("shift", "sum"))


def bench_summaries(path: Path, repeats: int = 3) -> dict:
    from aero_assets.f1.track import silverstone

    track = silverstone()
    rows = pq.ParquetFile(path).metadata.num_rows
    aero_s, base_s = [], []
    out = ref = None
    for _ in tqdm(range(repeats), desc="bench f1: summaries (aero, pandas)", unit="round"):
        t0 = time.perf_counter()
        out = aero_summaries(path, track.length_m, track.sectors_m)
        aero_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = pandas_summaries(path)
        base_s.append(time.perf_counter() - t0)
    agree = bool(len(ref) == out.num_rows and np.allclose(
        np.sort(out["max_speed_kph"].to_numpy()), np.sort(ref["max_speed_kph"].to_numpy()), rtol=1e-6)
        and int(ref["samples"].sum()) == int(out["samples"].to_numpy().sum()))
    best = min(aero_s)
    return {"summary_seconds": round(best, 3), "summary_rows_per_s": round(rows / best, 1),
            "baseline_summary_seconds": round(min(base_s), 3), "summary_ratio": round(min(base_s) / best, 2),
            "summary_rows": rows, "summary_laps": out.num_rows, "summaries_agree_with_pandas": agree}


def bench_simulator(laps: int) -> dict:
    """Fast mode to the embedded broker, end to end (simulate, format, produce, flush)."""
    from aero_assets.simulators.f1_publish import simulate_f1
    from resources import KafkaResource, load_settings
    from resources.embedded_broker import EmbeddedBroker, free_port

    with tempfile.TemporaryDirectory() as home, EmbeddedBroker(port=free_port()) as broker:
        settings = load_settings({"AERO_HOME": home, "AERO_KAFKA_BOOTSTRAP": broker.bootstrap})
        kafka = KafkaResource.from_settings(settings.kafka)
        summary = simulate_f1(settings, laps=laps, session_id="bench-sim", seed=1, kafka=kafka, progress=True)
    return {"sim_realtime_factor": summary["realtime_factor"], "sim_laps": laps + 1, "sim_samples": summary["samples"],
            "sim_seconds": summary["seconds"]}


def bench_f1(laps: int = 5000, input_path: Path | None = None, sim_laps: int = 20,
             cache_dir: Path | None = None) -> dict:
    from aero_assets.f1.car import realism_figures

    figures: dict = {}
    figures.update(bench_simulator(sim_laps))
    if input_path is None:
        cache_dir = cache_dir or Path(tempfile.gettempdir()) / "aero-bench"
        input_path = bench_file(cache_dir / f"f1_{laps}_laps.parquet", laps)
    figures.update(bench_summaries(input_path))
    real = realism_figures(laps=10, seed=0)
    figures.update({k: round(v, 3) for k, v in real.items()})
    figures["realism_targets"] = {k: list(v) for k, v in TARGETS.items()}
    figures["realism_met"] = all(lo <= real[k] <= hi for k, (lo, hi) in TARGETS.items())
    return figures
