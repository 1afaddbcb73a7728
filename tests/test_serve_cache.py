"""The read API's caches never serve a stale answer: a re-landed file is a new version, hence a new key."""

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aero_assets.serve import lake_reader as lr
from aero_assets.serve.downsample import minmax_downsample


def _write_run(lake, run_id: str, scale: float) -> None:
    folder = lake / "windtunnel" / "raw_run" / f"run_id={run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    n = 5000
    ts = pa.array((np.arange(n) * 1_000_000 + 1_767_225_600 * 10**9).astype("datetime64[ns]")).cast(
        pa.timestamp("ns", tz="UTC"))
    table = pa.table({"ts": ts, "channel": pa.array(["FLOW_V"] * n), "value": pa.array(np.sin(np.arange(n)) * scale)})
    tmp = folder / "data.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(folder / "data.parquet")


def test_a_relanded_run_is_answered_afresh(tmp_path):
    _write_run(tmp_path, "r1", 1.0)
    first = json.loads(lr.windtunnel_series_json(tmp_path, "r1", ["FLOW_V"], None, None, 100))
    again = json.loads(lr.windtunnel_series_json(tmp_path, "r1", ["FLOW_V"], None, None, 100))
    assert first == again and max(first["series"]["FLOW_V"]["v"]) <= 1.0
    _write_run(tmp_path, "r1", 10.0)  # the landing replaces the file (tmp + rename): a new version
    later = json.loads(lr.windtunnel_series_json(tmp_path, "r1", ["FLOW_V"], None, None, 100))
    assert max(later["series"]["FLOW_V"]["v"]) > 9.0


def test_new_alert_hours_change_the_alerts_answer(tmp_path):
    def hour(h: int, ids: list[str]) -> None:
        folder = tmp_path / "tires" / "alerts" / f"hour=2026-12-01T{h:02d}"
        folder.mkdir(parents=True)
        at = pa.array([datetime(2026, 12, 1, h, tzinfo=UTC)] * len(ids), pa.timestamp("ns", tz="UTC"))
        pq.write_table(pa.table({"alert_id": ids, "vehicle_id": ["v1"] * len(ids), "opened_at": at, "last_at": at,
                                 "closed": [False] * len(ids)}), folder / "data.parquet")

    hour(1, ["a", "b"])
    assert lr.tire_alerts(tmp_path, None, None, None, False).num_rows == 2
    hour(2, ["b", "c"])  # b again (its newer state), and a new c
    table = lr.tire_alerts(tmp_path, None, None, None, False)
    assert sorted(table["alert_id"].to_pylist()) == ["a", "b", "c"]


def test_minmax_downsampling_keeps_every_spike_and_the_time_order():
    rng = np.random.default_rng(3)
    t = np.arange(100_000, dtype=float)
    v = rng.normal(size=t.size)
    spikes = rng.choice(t.size, 7, replace=False)
    v[spikes] = 50.0 + np.arange(7)
    td, vd = minmax_downsample(t, v, 2000)
    assert td.size <= 2000 and np.all(np.diff(td) > 0)
    assert set(np.round(vd[vd >= 50], 6)) == set(50.0 + np.arange(7)), "every spike survives"
    assert vd.min() == v.min()
