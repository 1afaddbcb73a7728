"""`aero load weather --csv FILE --station ID`: a CSV of real observations published to `weather.observations`.

Columns are found by name when not given: the time in `ts`, `timestamp`, `time`, `datetime`, `date`,
`valid_time`, `DATE` (NOAA ISD/LCD); the temperature in `temperature_c`, `temperature`, `temp`, `tmp`,
`air_temperature`, `HourlyDryBulbTemperature` (NOAA LCD, °F), `TAVG`, or a name starting with
`temperature` (Open-Meteo's `temperature_2m (°C)`); windspeed and pressure likewise (optional). NOAA ISD's
coded fields (`TMP` "+0056,1" in tenths of °C, `SLP` "10132,1" in tenths of hPa, `WND` "160,1,N,0046,1" with
tenths of m/s, 9999 = missing) are decoded. Times without an offset are taken as UTC (NOAA publishes UTC);
all-digit times as epoch milliseconds. °F (`--unit F`, or a column named with °F/_f/fahrenheit) becomes °C.

Parsing is vectorised (pandas/Arrow kernels). Rows whose time or temperature does not parse are counted,
shown (the first few, with their line numbers) and not published; windspeed/pressure that do not parse are
sent as null. Values that parse but are physically impossible are published and refused by the landing
(they go to the DLQ with the unit hint); the summary counts them in advance.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from aero_assets.forecast.weather_settings import WeatherLimits, load_weather_limits
from aero_assets.ids import validate_id
from aero_assets.simulators.weather_publish import flush_observations, observation_messages, publish_observations
from resources.kafka import KafkaResource
from resources.settings import Settings

TS_NAMES = ("ts", "timestamp", "time", "datetime", "date_time", "date", "valid_time", "observation_time", "valid")
TEMPERATURE_NAMES = ("temperature_c", "temperature", "temp_c", "temp", "tmp", "air_temperature", "air_temp",
                     "hourlydrybulbtemperature", "drybulbtemperature", "tavg", "t2m")
WINDSPEED_NAMES = ("windspeed_ms", "windspeed", "wind_speed", "wind_speed_ms", "wnd", "wspd", "sknt",
                   "wind_speed_10m", "hourlywindspeed")
PRESSURE_NAMES = ("pressure_hpa", "pressure", "slp", "sea_level_pressure", "pressure_msl", "mslp",
                  "surface_pressure", "station_pressure", "pres")
# names that say the temperature is in Fahrenheit (NOAA LCD publishes °F)
_FAHRENHEIT_NAME = re.compile(r"(°f|\(f\)|_f$|degf|fahrenheit|^hourlydrybulbtemperature$)", re.IGNORECASE)
_NOAA_CODED = re.compile(r"^\s*([+-]?\d{4,5}),[0-9A-Za-z]\s*$")  # TMP / SLP: value in tenths, quality code
EXAMPLES = 5


class CsvLoadError(ValueError):
    """The CSV cannot be loaded at all (no file, no usable columns, no usable row); the text says why."""


@dataclass
class WeatherCsv:
    """What a CSV held: the rows to publish and the report of what was left out and why."""

    frame: pd.DataFrame  # station, ts (int64 ns), temperature_c, windspeed_ms, pressure_hpa (NaN = null)
    rows_read: int
    columns: dict[str, str | None]  # role -> the CSV column used
    unit: str
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)
    out_of_range_rows: int = 0
    optional_unparsed: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict:
        return {"rows_read": self.rows_read, "rows_usable": len(self.frame), "bad_rows": self.bad_rows,
                "bad_examples": self.bad_examples, "columns": self.columns, "unit": self.unit,
                "out_of_range_rows (will go to the DLQ)": self.out_of_range_rows,
                "optional_values_unparsed (sent as null)": self.optional_unparsed}


def _norm(name: str) -> str:
    return re.sub(r"\s*[\(\[].*$", "", name.strip().lower()).replace(" ", "_").replace("-", "_")


def _find(columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, *, prefix: str | None = None,
          required: bool = True) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise CsvLoadError(f"--{role}-column {wanted!r} is not a column of the CSV (it has: {', '.join(columns)})")
        return wanted
    normed = {_norm(c): c for c in reversed(columns)}
    for n in names:
        if n in normed:
            return normed[n]
    if prefix:
        for c in columns:
            if _norm(c).startswith(prefix):
                return c
    if required:
        raise CsvLoadError(f"no {role} column found among {', '.join(columns)}: name it with --{role}-column "
                           f"(recognised names: {', '.join(names[:6])}, ...)")
    return None


def _coded_tenths(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """NOAA ISD 'value,quality' cells -> (value / 10 with 9999 as NaN, whether the cell had that form)."""
    m = text.str.extract(_NOAA_CODED, expand=False)
    coded = m.notna()
    raw = pd.to_numeric(m, errors="coerce")
    value = (raw / 10.0).where(~raw.abs().isin([9999, 99999]))  # TMP's and SLP's missing
    return value, coded


def _wnd_speed(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """NOAA ISD WND 'dir,q,type,speed,q' -> speed in m/s (tenths; 9999 missing)."""
    parts = text.str.split(",", expand=True)
    if parts.shape[1] != 5:
        return pd.Series(np.nan, index=text.index), pd.Series(False, index=text.index)
    raw = pd.to_numeric(parts[3], errors="coerce")
    return (raw / 10.0).where(raw < 9999), raw.notna()


def _numbers(text: pd.Series, role: str) -> pd.Series:
    value, coded = _coded_tenths(text)
    if role == "windspeed" and not coded.any():
        wnd, is_wnd = _wnd_speed(text)
        if is_wnd.mean() > 0.5:
            return wnd
    plain = pd.to_numeric(text.str.strip().str.rstrip("s*"), errors="coerce")  # LCD flags: '56s', '12*'
    return value.where(coded, plain)


def _times(text: pd.Series) -> pd.Series:
    """Epoch ns (NaN where it does not parse); naive times are UTC, all-digit ones epoch milliseconds."""
    stripped = text.str.strip()
    digits = stripped.str.fullmatch(r"-?\d{10,15}").fillna(False)
    out = pd.Series(np.nan, index=text.index, dtype="float64")
    if digits.any():
        out[digits] = pd.to_numeric(stripped[digits]).astype(np.float64) * 1e6
    rest = ~digits
    if rest.any():
        parsed = pd.to_datetime(stripped[rest], utc=True, errors="coerce", format="ISO8601").dt.as_unit("ns")
        ns = parsed.astype("int64").astype(np.float64)
        out[rest] = ns.where(parsed.notna())
    return out


def read_weather_csv(path: Path, station: str, *, ts_column: str | None = None, temperature_column: str | None = None,
                     windspeed_column: str | None = None, pressure_column: str | None = None,
                     unit: str | None = None, limits: WeatherLimits | None = None) -> WeatherCsv:
    """Parse a CSV of observations (pure: nothing is published). Raises `CsvLoadError` when nothing is usable."""
    station = validate_id(station, "station id")
    limits = limits or WeatherLimits()
    if unit is not None and unit.upper() not in ("C", "F"):
        raise CsvLoadError(f"--unit must be C or F, not {unit!r}")
    path = Path(path)
    if not path.is_file():
        raise CsvLoadError(f"{path} is not a file")
    try:
        head = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).schema.names
        types = dict.fromkeys(head, pa.string())
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                          strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise CsvLoadError(f"{path} is not a readable CSV: {exc}") from None
    columns = table.column_names
    ts_col = _find(columns, ts_column, TS_NAMES, "ts")
    t_col = _find(columns, temperature_column, TEMPERATURE_NAMES, "temperature", prefix="temperature")
    w_col = _find(columns, windspeed_column, WINDSPEED_NAMES, "windspeed", prefix="wind_speed", required=False)
    p_col = _find(columns, pressure_column, PRESSURE_NAMES, "pressure", prefix="pressure", required=False)
    if unit is None:
        unit = "F" if _FAHRENHEIT_NAME.search(t_col) else "C"
    unit = unit.upper()
    n = table.num_rows
    text = {c: table[c].to_pandas() for c in {ts_col, t_col, w_col, p_col} if c is not None}
    ts = _times(text[ts_col])
    temperature = _numbers(text[t_col], "temperature")
    if unit == "F":
        temperature = (temperature - 32.0) / 1.8
    temperature = temperature.round(3)
    bad_ts, bad_t = ts.isna().to_numpy(), ~np.isfinite(temperature.to_numpy())
    bad = bad_ts | bad_t
    examples = []
    for i in np.flatnonzero(bad)[:EXAMPLES]:  # a handful of examples for the report, not a data path
        why = " and ".join(w for w, b in (("ts", bad_ts[i]), ("temperature", bad_t[i])) if b)
        verb = "do" if bad_ts[i] and bad_t[i] else "does"
        examples.append(f"line {i + 2}: {why} {verb} not parse ({ts_col}={text[ts_col].iloc[i]!r}, "
                        f"{t_col}={text[t_col].iloc[i]!r})")
    frame = pd.DataFrame({"station": station, "ts": ts.to_numpy(), "temperature_c": temperature.to_numpy()})
    unparsed = {}
    for role, col in (("windspeed_ms", w_col), ("pressure_hpa", p_col)):
        if col is None:
            frame[role] = np.nan
            continue
        values = _numbers(text[col], role.split("_")[0])
        if role == "windspeed_ms" and _norm(col) == "sknt":
            values = values * 0.514444  # knots (METAR)
        frame[role] = values.round(3).to_numpy()
        unparsed[role] = int((values.isna() & (text[col].str.strip() != "")).sum())
    frame = frame[~bad].reset_index(drop=True)
    frame["ts"] = frame["ts"].astype(np.int64) // 1_000_000 * 1_000_000
    t = frame["temperature_c"].to_numpy()
    out_of_range = int(((t < limits.temperature_min_c) | (t > limits.temperature_max_c)).sum())
    result = WeatherCsv(frame, n, {"ts": ts_col, "temperature": t_col, "windspeed": w_col, "pressure": p_col}, unit,
                        int(bad.sum()), examples, out_of_range, unparsed)
    if frame.empty:
        raise CsvLoadError(f"{path} has no usable row: {n} rows read, {int(bad.sum())} without a parseable time or "
                           f"temperature (columns {ts_col!r}, {t_col!r}). "
                           + ("; ".join(examples) if examples else "The file has a header and no data."))
    return result


def load_weather_csv(settings: Settings, path: Path, station: str, *, ts_column: str | None = None,
                     temperature_column: str | None = None, windspeed_column: str | None = None,
                     pressure_column: str | None = None, unit: str | None = None,
                     kafka: KafkaResource | None = None, progress: bool = True,
                     stop: threading.Event | None = None) -> dict:
    """Parse the CSV, publish its usable rows (key = station) and return the summary with the report."""
    t0 = time.monotonic()
    parsed = read_weather_csv(path, station, ts_column=ts_column, temperature_column=temperature_column,
                              windspeed_column=windspeed_column, pressure_column=pressure_column, unit=unit,
                              limits=load_weather_limits())
    kafka = kafka or KafkaResource.from_settings(settings.kafka)
    topic = settings.topics.weather_observations
    kafka.ensure_topics([topic])
    producer = kafka.producer(**{"linger.ms": 20})
    stop = stop or threading.Event()
    messages = observation_messages(parsed.frame)
    key = parsed.frame["station"].iloc[0].encode()
    with tqdm(total=len(messages), desc=f"load weather {station}", unit="obs", disable=not progress) as bar:
        sent = publish_observations(producer, topic, key, messages, bar, stop)
    flush_observations(producer)
    ts = parsed.frame["ts"].to_numpy()
    return {"station": station, "topic": topic, "file": str(path), "published": sent,
            "first_ts": pd.Timestamp(int(ts.min()), tz="UTC").isoformat(),
            "last_ts": pd.Timestamp(int(ts.max()), tz="UTC").isoformat(),
            **parsed.report(), "seconds": round(time.monotonic() - t0, 2)}


__all__ = ["CsvLoadError", "WeatherCsv", "load_weather_csv", "read_weather_csv"]
