"""Pure tire numerics: windows equal pandas' on any input order; episodes depend only on the log."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aero_assets.tires.episodes import (
    HIGH_TEMPERATURE,
    LOW_PRESSURE,
    RAPID_PRESSURE_LOSS,
    Thresholds,
    detect_episodes,
)
from aero_assets.tires.windows import window_aggregates, windows_pandas
from tests.tires_data import S, fleet

T0 = 1_767_607_200 * S  # 2026-01-05 10:00 UTC


def _with_log(table: pa.Table) -> pa.Table:
    return table.append_column("_partition", pa.array(np.zeros(table.num_rows, np.int32))) \
                .append_column("_offset", pa.array(np.arange(table.num_rows)))


def test_windows_equal_pandas_and_do_not_depend_on_arrival_order_or_chunking(monkeypatch):
    table = fleet(T0 + 30 * S, 500, vehicles=3)
    shuffled = table.take(pa.array(np.random.default_rng(3).permutation(table.num_rows)))
    expected = windows_pandas(table).sort_by([("window_start", "ascending"), ("vehicle_id", "ascending"),
                                              ("tire", "ascending")])
    import aero_assets.tires.windows as w
    monkeypatch.setattr(w, "CHUNK_ROWS", 997)  # many chunks sharing windows at their edges
    for got in (window_aggregates(table), window_aggregates(shuffled)):
        assert got.column_names == expected.column_names
        assert got["window_start"].equals(expected["window_start"])
        assert got["vehicle_id"].equals(expected["vehicle_id"]) and got["tire"].equals(expected["tire"])
        assert got["reading_count"].equals(expected["reading_count"])
        for c in ("avg_pressure_kpa", "min_pressure_kpa", "max_pressure_kpa", "avg_temperature_c",
                  "min_temperature_c", "max_temperature_c"):
            np.testing.assert_allclose(got[c].to_numpy(), expected[c].to_numpy(), rtol=1e-12)
    assert pc.sum(window_aggregates(table)["reading_count"]).as_py() == table.num_rows


def test_a_reading_on_a_minute_boundary_belongs_to_the_window_it_starts():
    t = pa.table({"vehicle_id": ["v"] * 2, "tire": ["FL"] * 2,
                  "ts": pa.array([T0 + 60 * S - 1, T0 + 60 * S]).cast(pa.timestamp("ns", "UTC")),
                  "pressure_kpa": [1.0, 2.0], "temperature_c": [1.0, 2.0]})
    w = window_aggregates(t)
    assert w["reading_count"].to_pylist() == [1, 1]
    assert w["window_start"].cast(pa.int64()).to_pylist() == [T0, T0 + 60 * S]


def test_planted_puncture_and_overheat_become_one_episode_each_with_peak_and_duration():
    eps = detect_episodes(_with_log(fleet(T0, 600, vehicles=2)), Thresholds())
    got = {(r.vehicle_id, r.tire, r.alert_type) for r in eps.itertuples()}
    assert got == {("fleet-v000", "FL", RAPID_PRESSURE_LOSS), ("fleet-v000", "FL", LOW_PRESSURE),
                   ("fleet-v001", "RR", HIGH_TEMPERATURE)}
    low = eps[eps.alert_type == LOW_PRESSURE].iloc[0]
    assert low.closed and 148 < low.peak_value < 152  # 235 - 85 kPa at the bottom
    hot = eps[eps.alert_type == HIGH_TEMPERATURE].iloc[0]
    assert 85 <= hot.duration_s <= 90 and hot.peak_value > 99


def test_episodes_from_a_window_of_the_log_equal_those_from_the_whole_log_after_its_lookback():
    th = Thresholds()
    table = _with_log(fleet(T0, 900, vehicles=2, leak_at=300))
    whole = detect_episodes(table, th)
    cut = T0 + 130 * S  # inside the puncture episode: episodes opened after cut must match exactly
    ts = table["ts"].cast(pa.int64()).to_numpy()
    part = detect_episodes(table.filter(pa.array(ts >= cut - th.lookback_ns)), th)
    after = lambda e: e[e.opened_at >= cut][["alert_id", "last_at", "readings", "peak_value"]].reset_index(drop=True)  # noqa: E731
    assert after(part).equals(after(whole))


def test_late_readings_never_open_or_close_an_episode():
    th = Thresholds()
    table = _with_log(fleet(T0, 400, vehicles=1, puncture_at=None, overheat_at=None))
    base = detect_episodes(table, th)
    assert base.empty
    late = pa.table({"vehicle_id": ["fleet-v000"], "tire": ["FL"],
                     "ts": pa.array([T0 + 100 * S + 500_000_000]).cast(pa.timestamp("ns", "UTC")),
                     "pressure_kpa": [120.0], "temperature_c": [140.0]})
    with_late = pa.concat_tables([table.drop_columns(["_partition", "_offset"]), late])
    assert detect_episodes(_with_log(with_late), th).empty  # arrived after later readings: not in order
