"""Weather ingest: the decoder's verdicts (batch = per message), the simulator on the real broker landed by the
asset and read back per station, the CSV loader, and the CLI's argument errors."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from aero_assets.cli import main
from aero_assets.codec import JSON, DecodeError
from aero_assets.forecast.csv_load import CsvLoadError, load_weather_csv, read_weather_csv
from aero_assets.forecast.decoder import WeatherDecoder
from aero_assets.forecast.observations import build_observation_assets, read_observations
from aero_assets.forecast.weather_settings import WeatherLimits, load_weather_limits
from aero_assets.keys import WEATHER_OBSERVATIONS
from aero_assets.landing import land_topic
from aero_assets.simulators.weather_publish import parse_onset, simulate_weather
from resources import SettingsError

GOOD = {"station": "st-1", "ts": "2026-06-01T12:00:00+02:00", "temperature_c": 21.5, "windspeed_ms": 3.2,
        "pressure_hpa": 1013.1}


def msg(**over) -> bytes:
    return json.dumps({**GOOD, **over}).encode()


def batch(values, keys=None, limits=None):
    keys = keys or [b"st-1"] * len(values)
    return WeatherDecoder(limits).decode_batch(values, keys, [JSON] * len(values))


def test_good_rows_land_with_iso_and_epoch_ms_times_and_nulls_for_a_temperature_only_station():
    out = batch([msg(), msg(ts=1780308000000), msg(windspeed_ms=None, pressure_hpa=None),
                 json.dumps({"station": "st-1", "ts": "2026-06-01T10:00:00Z", "temperature_c": 20}).encode()])
    assert not out.bad
    rows = out.table.to_pylist()
    ns = out.table["ts"].cast("int64").to_pylist()
    assert ns[0] == ns[1] == ns[3] == 1780308000 * 10**9  # +02:00, epoch ms and Z name one instant
    assert rows[2]["windspeed_ms"] is None and rows[2]["pressure_hpa"] is None and rows[3]["temperature_c"] == 20.0
    assert str(out.table.schema.field("ts").type) == "timestamp[ns, tz=UTC]"


def test_duplicates_are_kept_for_downstream():
    out = batch([msg(), msg(temperature_c=22.0), msg()])
    assert out.table.num_rows == 3 and not out.bad


@pytest.mark.parametrize(("over", "needle"), [
    ({"temperature_c": 293.1}, "looks like Kelvin"),
    ({"temperature_c": 98.6}, "looks like Fahrenheit"),
    ({"temperature_c": -120.0}, "outside -90 to 60 °C"),
    ({"temperature_c": None}, "temperature_c is missing or NaN"),
    ({"temperature_c": float("nan")}, "temperature_c is missing or NaN"),
    ({"temperature_c": "21.5"}, "temperature_c must be a number"),
    ({"windspeed_ms": -1.0}, "windspeed_ms is NaN or outside 0-120 m/s"),
    ({"windspeed_ms": 150}, "windspeed_ms is NaN or outside"),
    ({"pressure_hpa": 101310.0}, "looks like Pa"),
    ({"pressure_hpa": 700.0}, "pressure_hpa is NaN or outside 850-1100 hPa"),
    ({"station": "st-2"}, "message key must be the station id"),
    ({"station": None}, "station is missing"),
    ({"station": "../etc"}, "station is missing or not a safe id"),
    ({"station": 7}, "station must be a string"),
    ({"ts": "2026-06-01T12:00:00"}, "has no UTC offset"),
    ({"ts": "yesterday"}, "is not ISO-8601"),
    ({"ts": None}, "ts is missing"),
])
def test_bad_observations_go_to_the_dlq_with_a_clear_reason_the_same_in_batch_and_alone(over, needle):
    value = msg(**over)
    out = batch([msg(), value, msg()])
    assert out.table.num_rows == 2 and [i for i, _ in out.bad] == [1]
    assert needle in out.bad[0][1]
    with pytest.raises(DecodeError) as alone:
        WeatherDecoder().decode(value, b"st-1", JSON)
    assert str(alone.value) == out.bad[0][1]


def test_messages_without_a_key_or_empty_or_not_json_are_refused():
    d = WeatherDecoder()
    for value, key, needle in [(msg(), None, "message key"), (b"", b"st-1", "empty"), (b"{x", b"st-1", "JSON")]:
        with pytest.raises(DecodeError, match=needle):
            d.decode(value, key, JSON)


def test_an_observation_dated_far_ahead_of_the_landing_clock_goes_to_the_dlq():
    """One reading stamped 2100 would stretch a station's hourly grid by 70 years; 30 days ahead (a fast
    simulation) is fine. Both paths give the same verdict and reason."""
    now = 1_796_000_000 * 1_000_000_000  # 2026-12-01
    decoder = WeatherDecoder(load_weather_limits({"AERO_WEATHER_MAX_AHEAD_DAYS": "400"}), clock_ns=lambda: now)
    soon, far = msg(ts="2026-12-31T00:00:00Z"), msg(ts="2100-01-01T00:00:00Z")
    out = decoder.decode_batch([msg(), soon, far], [b"st-1"] * 3, [JSON] * 3)
    assert out.table.num_rows == 2 and [i for i, _ in out.bad] == [2]
    assert "more than 400 days ahead" in out.bad[0][1] and "AERO_WEATHER_MAX_AHEAD_DAYS" in out.bad[0][1]
    with pytest.raises(DecodeError, match="more than 400 days ahead"):
        decoder.decode(far, b"st-1", JSON)
    assert decoder.decode(soon, b"st-1", JSON).table.num_rows == 1


def test_limits_come_from_the_environment_and_bad_ones_fail_fast():
    limits = load_weather_limits({"AERO_WEATHER_TEMPERATURE_MAX_C": "70"})
    assert limits.temperature_max_c == 70.0
    assert not batch([msg(temperature_c=65.0)], limits=limits).bad
    with pytest.raises(SettingsError, match="AERO_WEATHER_WINDSPEED_MAX_MS"):
        load_weather_limits({"AERO_WEATHER_WINDSPEED_MAX_MS": "fast"})
    with pytest.raises(SettingsError, match="not below"):
        load_weather_limits({"AERO_WEATHER_PRESSURE_MIN_HPA": "1200", "AERO_WEATHER_PRESSURE_MAX_HPA": "1100"})
    assert WeatherLimits() == load_weather_limits({})


@pytest.mark.broker
def test_simulated_stations_land_through_the_asset_and_read_back_per_station(settings, kafka, lake, instance,
                                                                             publisher):
    calm = simulate_weather(settings, "calm-1", days=3, seed=1, faults=True, kafka=kafka, progress=False)
    hot = simulate_weather(settings, "hot-1", mode="heatwave", heatwave_start_ns="+2d", days=4, seed=2,
                           kafka=kafka, progress=False)
    truth = json.loads((settings.ground_truth_dir / "weather" / "hot-1.json").read_text())
    assert truth["mode"] == "heatwave" and truth["heatwave_start_ns"] == truth["start_ns"] + 2 * 86_400 * 10**9
    assert truth["heatwave_start"] == hot["heatwave_start"] and truth["shift_c"] > 0
    assert calm["dlq_expected"] == 3 and hot["dlq_expected"] == 0
    topic = settings.topics.weather_observations
    publisher.send(topic, msg(station="calm-1", temperature_c=294.0), "calm-1", [("content-type", JSON.encode())])

    defs = dg.Definitions(assets=build_observation_assets(settings.topics),
                          resources={"kafka": kafka, "lake": lake})
    res = dg.materialize([defs.get_assets_def(WEATHER_OBSERVATIONS)], instance=instance, resources=defs.resources)
    meta = res.asset_materializations_for_node("forecast__observations")[0].metadata
    published = calm["published"] + hot["published"] + 1
    assert meta["messages"].value == published and meta["dlq_messages"].value == 4
    assert meta["dagster/row_count"].value == published - 4
    assert meta["stations_touched"].data == ["calm-1", "hot-1"]

    everything = read_observations(lake.path)
    assert len(everything) == published - 4
    one = read_observations(lake.path, station="hot-1")
    assert len(one) == hot["published"] and set(one["station"]) == {"hot-1"}
    assert one["ts"].dtype == np.int64 and one["windspeed_ms"].isna().all()  # temperature-only
    c = read_observations(lake.path, station="calm-1")
    assert c.duplicated(["station", "ts"]).sum() == 5  # re-deliveries landed, after the originals
    assert np.all(np.diff(c["ts"].to_numpy()) >= -3600 * 10**9)

    # landing again takes nothing twice
    again = land_topic(kafka, lake.path, topic, WeatherDecoder())
    assert again.rows == 0 and len(read_observations(lake.path)) == published - 4


def test_the_csv_loader_converts_fahrenheit_and_reports_bad_rows(tmp_path):
    f = tmp_path / "obs.csv"
    f.write_text("timestamp,temperature,wind_speed\n2024-01-01T00:00:00Z,50,3.2\n2024-01-01T01:00:00+01:00,68,x\n"
                 "not-a-time,70,1\n2024-01-01T03:00:00Z,NaN,1\n1704081600000,98.6,\n")
    r = read_weather_csv(f, "st-1", unit="F")
    assert r.columns == {"ts": "timestamp", "temperature": "temperature", "windspeed": "wind_speed", "pressure": None}
    assert r.frame["temperature_c"].tolist() == [10.0, 20.0, 37.0]
    assert r.frame["ts"].tolist() == [1704067200 * 10**9] * 2 + [1704081600 * 10**9]
    assert r.bad_rows == 2 and "line 4: ts does not parse" in r.bad_examples[0]
    assert "line 5: temperature does not parse" in r.bad_examples[1]
    assert np.isnan(r.frame["windspeed_ms"][1]) and r.optional_unparsed["windspeed_ms"] == 1


def test_the_csv_loader_detects_noaa_columns_and_units(tmp_path):
    f = tmp_path / "isd.csv"
    f.write_text('DATE,TMP,WND,SLP\n2024-01-01T00:00:00,"+0056,1","160,1,N,0046,1","10132,1"\n'
                 '2024-01-01T01:00:00,"+9999,9","160,1,N,0046,1","10132,1"\n')
    r = read_weather_csv(f, "isd-1")
    assert r.columns == {"ts": "DATE", "temperature": "TMP", "windspeed": "WND", "pressure": "SLP"}
    assert r.frame.iloc[0][["temperature_c", "windspeed_ms", "pressure_hpa"]].tolist() == [5.6, 4.6, 1013.2]
    assert r.bad_rows == 1 and r.unit == "C"
    g = tmp_path / "lcd.csv"
    g.write_text("DATE,HourlyDryBulbTemperature\n2024-01-01T00:00:00,212\n")
    assert read_weather_csv(g, "lcd-1").unit == "F" and read_weather_csv(g, "lcd-1").out_of_range_rows == 1


def test_a_csv_without_usable_rows_or_columns_fails_with_a_clear_message(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("timestamp,temperature\nnope,abc\n")
    with pytest.raises(CsvLoadError, match="no usable row"):
        read_weather_csv(f, "st-1")
    g = tmp_path / "cols.csv"
    g.write_text("when,what\n2024-01-01T00:00:00Z,1\n")
    with pytest.raises(CsvLoadError, match="no ts column found"):
        read_weather_csv(g, "st-1")
    with pytest.raises(CsvLoadError, match="not a column"):
        read_weather_csv(g, "st-1", ts_column="when", temperature_column="temp")


@pytest.mark.broker
def test_load_weather_publishes_the_usable_rows(settings, kafka, lake, tmp_path):
    f = tmp_path / "obs.csv"
    f.write_text("time,temperature_2m (°C)\n2024-01-01T00:00,1.5\n2024-01-01T01:00,x\n2024-01-01T02:00,2.5\n")
    summary = load_weather_csv(settings, f, "om-1", kafka=kafka, progress=False)
    assert summary["published"] == 2 and summary["bad_rows"] == 1
    res = land_topic(kafka, lake.path, settings.topics.weather_observations, WeatherDecoder())
    assert res.rows == 2 and res.dlq_messages == 0
    assert read_observations(lake.path, "om-1")["temperature_c"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("argv", [
    ["simulate", "weather"],
    ["simulate", "weather", "--station", "a/b"],
    ["simulate", "weather", "--station", "s", "--mode", "storm"],
    ["simulate", "weather", "--station", "s", "--speed", "0"],
    ["simulate", "weather", "--station", "s", "--days", "-1"],
    ["simulate", "weather", "--station", "s", "--heatwave-start", "soon"],
    ["simulate", "weather", "--station", "s", "--start", "2026-01-01T00:00:00"],
    ["simulate", "weather", "--station", "s", "--interval", "often"],
    ["load", "weather", "--station", "s"],
    ["load", "weather", "--csv", "x.csv", "--station", "s", "--unit", "K"],
])
def test_cli_argument_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_cli_refuses_an_onset_without_heatwave_and_a_csv_that_cannot_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AERO_HOME", str(tmp_path / "aero"))
    assert main(["simulate", "weather", "--station", "s", "--heatwave-start", "+2d"]) == 2
    assert "needs --mode heatwave" in capsys.readouterr().err
    assert main(["load", "weather", "--csv", str(tmp_path / "missing.csv"), "--station", "s"]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_onsets_are_offsets_from_the_start_or_absolute_times():
    assert parse_onset("+10d") == ("offset", 10 * 86_400 * 10**9)
    assert parse_onset("+36h") == ("offset", 36 * 3600 * 10**9)
    assert parse_onset("2026-07-01T00:00:00Z") == ("at", 1782864000 * 10**9)
    with pytest.raises(ValueError, match="offset"):
        parse_onset("2026-07-01")


@pytest.mark.broker
def test_after_the_history_simulated_time_runs_speed_times_faster_than_real_time(settings, kafka):
    import time

    t0 = time.monotonic()
    s = simulate_weather(settings, "fast-1", days=1, history_days=0.5, speed=36_000, seed=3, kafka=kafka,
                         progress=False)
    wall = time.monotonic() - t0
    assert (s["history_published"], s["paced_published"]) == (12, 12)
    assert 1.0 <= wall < 10  # 11 simulated hours after the first paced one, 0.1 s each
