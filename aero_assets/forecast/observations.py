"""Landing weather observations (`forecast/observations`) and reading them back per station.

The landing is the shared `land_topic` with `WeatherDecoder`: append-only, exactly once by offset range,
bad observations to `<topic>.dlq` with their reason. Gaps and duplicate timestamps land as they came;
`read_observations` returns rows in landing order (files by partition and offset, rows within a file by
offset), so `dataset.hourly(..., keep="last")` lets a re-delivered reading win over the earlier one.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aero_assets.forecast.decoder import SCHEMA, WeatherDecoder
from aero_assets.forecast.weather_settings import WeatherLimits, load_weather_limits
from aero_assets.keys import FORECAST, WEATHER_LANDING_POOL, WEATHER_OBSERVATIONS, WEATHER_TOPIC_ASSET
from aero_assets.landing import land_topic
from aero_assets.landing_state import landed_files
from resources import KafkaResource, LakeResource, Topics

COLUMNS = list(SCHEMA.names)
DEFAULT_TOPIC = Topics.weather_observations


def observation_files(lake_root: Path | str, topic: str = DEFAULT_TOPIC) -> list[Path]:
    """The landed files of the weather topic in landing order (partition, then offset)."""
    return landed_files(Path(lake_root) / "landing" / topic)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"station": pd.Series(dtype=object), "ts": pd.Series(dtype=np.int64),
                         **{c: pd.Series(dtype=np.float64) for c in COLUMNS[2:]}})


def read_observations(source: Path | str | Sequence[Path | str], station: str | None = None, *,
                      topic: str = DEFAULT_TOPIC) -> pd.DataFrame:
    """Landed observations (of one `station`, or all) as station, ts (int64 ns UTC), temperature_c,
    windspeed_ms, pressure_hpa (NaN where null), in landing order.

    `source` is the lake root (the topic's landed files are found in it) or a list of landed files. The
    station filter goes to pyarrow's dataset scan: row groups whose `station` statistics exclude it are
    skipped unread, so one station's history costs its own bytes, not the whole topic's.
    """
    files = observation_files(source, topic) if isinstance(source, str | Path) else [Path(p) for p in source]
    if not files:
        return _empty_frame()
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=SCHEMA)
    cond = None if station is None else ds.field("station") == station
    # to_table keeps the order of the files and of the rows within them (landing order)
    table = dataset.to_table(columns=COLUMNS, filter=cond)
    if table.num_rows == 0:
        return _empty_frame()
    frame = pd.DataFrame({
        "station": table["station"].to_numpy(zero_copy_only=False).astype(object),
        "ts": np.asarray(table["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64),
    })
    for c in COLUMNS[2:]:
        frame[c] = np.asarray(pc.fill_null(table[c], np.nan).to_numpy(), dtype=np.float64)
    return frame


def stations_of(files: Iterable[Path]) -> dict[str, int]:
    """{station: rows} in landed files (their `station` column only)."""
    counts: dict[str, int] = {}
    for f in files:
        vc = pc.value_counts(pq.read_table(f, columns=["station"])["station"].combine_chunks())
        for s, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            counts[s] = counts.get(s, 0) + int(n)
    return dict(sorted(counts.items()))


def _ts_span(files: Sequence[Path]) -> tuple[str, str]:
    if not files:
        return "", ""
    ts = ds.dataset([str(f) for f in files], format="parquet", schema=SCHEMA).to_table(columns=["ts"])["ts"]
    if len(ts) == 0:
        return "", ""
    lo, hi = pc.min_max(ts).values()
    return lo.as_py().isoformat(), hi.as_py().isoformat()


def build_observation_assets(topics: Topics, limits: WeatherLimits | None = None) -> list:
    """The weather topic (an external AssetSpec) and its landing, `forecast/observations`.

    `limits` default to `AERO_WEATHER_*` (read here, so a bad value fails the code location's load).
    """
    topic = topics.weather_observations
    limits = limits or load_weather_limits()

    spec = dg.AssetSpec(WEATHER_TOPIC_ASSET, group_name=FORECAST, kinds={"kafka"},
                        description=f"Kafka topic `{topic}`: JSON weather observations, key = station id.")

    @dg.asset(key=WEATHER_OBSERVATIONS, group_name=FORECAST, deps=[WEATHER_TOPIC_ASSET], pool=WEATHER_LANDING_POOL,
              kinds={"parquet"},
              description=f"Weather observations landed exactly once from `{topic}` (append by offset range); "
                          f"physically impossible values (outside {limits.temperature_min_c:g} to "
                          f"{limits.temperature_max_c:g} °C, 0-{limits.windspeed_max_ms:g} m/s, "
                          f"{limits.pressure_min_hpa:g}-{limits.pressure_max_hpa:g} hPa), unit mistakes and "
                          f"malformed messages go to `{topic}.dlq` with their reason. Gaps and duplicates land "
                          "and are resolved by the hourly series.")
    def observations(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource):
        res = land_topic(kafka, lake.path, topic, WeatherDecoder(limits))
        stations = stations_of(res.files)
        first, last = _ts_span(res.files)
        context.log.info(f"landed {res.messages} messages ({res.rows} observations) from {topic}; stations: "
                         f"{list(stations)}"
                         + (f"; {res.dlq_messages} to the DLQ: {dict(res.dlq_reasons)}" if res.dlq_messages else ""))
        return dg.MaterializeResult(metadata={
            **{k: v for k, v in res.metadata().items() if not isinstance(v, dict)},
            "landing": dg.MetadataValue.json(res.metadata()),
            "dagster/row_count": int(res.rows),
            "observations_per_s": round(res.rows / res.seconds, 1) if res.seconds else 0.0,
            "stations_touched": dg.MetadataValue.json(list(stations)),
            "rows_per_station": dg.MetadataValue.json(stations),
            "first_ts": first,
            "last_ts": last,
        })

    return [spec, observations]


__all__ = ["build_observation_assets", "observation_files", "read_observations", "stations_of"]
