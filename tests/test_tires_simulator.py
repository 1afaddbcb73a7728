"""The tire fleet simulator: plausible physics, planted episodes that cross their thresholds, late delivery."""

import json

import numpy as np
import pyarrow as pa
import pytest

from aero_assets.simulators.tires import simulate_table
from aero_assets.simulators.tires_publish import read_ground_truth, simulate_tires
from aero_assets.tires.episodes import Thresholds, detect_episodes
from aero_assets.tires.scoring import score

T0 = 1_767_607_200 * 1_000_000_000


@pytest.fixture(scope="module")
def sim():
    return simulate_table(12, 1.0, 3600, seed=5, start_ns=T0, late_fraction=0.03)


def _in_episode(table: pa.Table, gt: list[dict]) -> np.ndarray:
    vid = table["vehicle_id"].cast(pa.string()).to_numpy(zero_copy_only=False)
    tire = table["tire"].cast(pa.string()).to_numpy(zero_copy_only=False)
    ts = table["ts"].cast(pa.int64()).to_numpy()
    mask = np.zeros(table.num_rows, dtype=bool)
    for g in gt:  # a handful of episodes: vectorised per episode
        mask |= (vid == g["vehicle_id"]) & (tire == g["tire"]) & (ts >= g["start_ns"]) & (ts <= g["end_ns"] + 900e9)
    return mask


def test_normal_driving_stays_inside_the_alert_thresholds(sim):
    table, gt = sim
    normal = ~_in_episode(table, gt)
    p, t = table["pressure_kpa"].to_numpy()[normal], table["temperature_c"].to_numpy()[normal]
    assert p.min() > 205 and p.max() < 330
    assert t.min() > 0 and t.max() < 85


def test_every_kind_of_planted_episode_is_detected_and_nothing_else_alerts(sim):
    table, gt = sim
    assert {g["kind"] for g in gt} == {"slow_leak", "puncture", "overheat"}
    log = table.drop_columns(["deliver_ns"]).append_column("_partition", pa.array(np.zeros(table.num_rows, np.int32)))
    log = log.append_column("_offset", pa.array(np.arange(table.num_rows)))
    result = score(gt, detect_episodes(log, Thresholds()), T0 + 3600 * 1_000_000_000)
    assert result["recall"] >= 0.95 and result["false_alerts"] == 0, result


def test_a_fraction_of_readings_arrives_late_and_out_of_order(sim):
    table, _ = sim
    late = (table["deliver_ns"].to_numpy() - table["ts"].cast(pa.int64()).to_numpy()) > 4e9
    assert 0.02 < late.mean() < 0.04
    ts = table["ts"].cast(pa.int64()).to_numpy()
    assert (np.diff(ts) < 0).sum() > 100  # delivery order is not event order


def test_a_seed_reproduces_the_simulation():
    a, ga = simulate_table(3, 1.0, 120, seed=9, start_ns=T0)
    b, gb = simulate_table(3, 1.0, 120, seed=9, start_ns=T0)
    assert a.equals(b) and ga == gb


@pytest.mark.broker
def test_simulate_tires_publishes_keyed_json_readings_and_writes_ground_truth(settings, kafka):
    from confluent_kafka import KafkaError, TopicPartition

    summary = simulate_tires(settings, vehicles=3, rate_hz=2.0, duration_s=60, fast=True, seed=2, progress=False)
    assert summary["readings"] == 3 * 4 * 2 * 60 and summary["episodes"] >= 1
    consumer = kafka.consumer("test")
    consumer.assign([TopicPartition(settings.topics.tires_raw, 0, 0)])
    readings = 0
    while True:
        [m] = consumer.consume(1, timeout=5) or [None]
        assert m is not None
        if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
            break
        for line in m.value().decode().splitlines():
            obj = json.loads(line)
            assert set(obj) == {"vehicle_id", "tire", "pressure_kpa", "temperature_c", "ts"}
            assert obj["vehicle_id"].encode() == m.key()
            readings += 1
    consumer.close()
    assert readings == summary["readings"]
    gt = read_ground_truth(settings.ground_truth_dir / "tires" / "fleet.jsonl")
    assert len(gt) == summary["episodes"] and gt[0]["kind"] == "puncture"
