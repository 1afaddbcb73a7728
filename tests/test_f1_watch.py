"""`aero watch f1`: the pit wall follows a live session at >= 10 refreshes a second, in a group of its
own that commits nothing, so landing's offsets are exactly what they would be without it."""

from __future__ import annotations

import io
import threading

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import TopicPartition

from aero_assets.definitions import build_definitions
from aero_assets.f1.pitwall import PitWall, run_watch
from aero_assets.f1.track import silverstone
from aero_assets.keys import F1_TELEMETRY
from aero_assets.landing import LANDING_GROUP
from aero_assets.simulators.f1 import session_laps
from aero_assets.simulators.f1_publish import simulate_f1


def test_the_pit_wall_state_shows_the_car_and_a_delta_to_the_best_lap():
    track = silverstone()
    laps = list(session_laps("s1", 2, 1_790_000_000_000_000_000, seed=2))
    wall = PitWall(track.length_m, track.sectors_m)
    for lap in laps[:3]:
        for lo in range(0, lap.table.num_rows, 10):  # frames of 10 samples, as the car sends them
            wall.ingest(lap.table.slice(lo, 10))
    assert wall.best is not None and wall.best[0] == 1, "lap 1 is the only complete flying lap seen"
    assert wall.best[1] == pytest.approx(laps[1].lap_time_s, abs=0.02)
    d = wall.delta_s()
    assert d is not None and abs(d) < 1.0, "lap 2 vs lap 1 at the same distance: tenths, not seconds"
    text = "\n".join(wall.lines())
    for needle in ("speed", "gear", "rpm", "throttle [", "brake    [", "g lat", "sector", "delta to best: "):
        assert needle in text
    wall.add_lap_summary({"session_id": "s1", "lap": 1, "lap_time_s": 89.3, "max_speed_kph": 331.0, "flags": ""})
    assert "lap 1: 1:29.300" in "\n".join(wall.lines())


def test_a_following_pit_wall_ignores_other_sessions():
    track = silverstone()
    a = next(iter(session_laps("a", 1, 1_790_000_000_000_000_000, seed=1))).table
    b = next(iter(session_laps("b", 1, 1_790_000_000_000_000_000, seed=1))).table
    wall = PitWall(track.length_m, track.sectors_m, follow="a")
    wall.ingest(pa.concat_tables([a.slice(0, 100), b.slice(0, 300)]))
    assert wall.session == "a" and wall.samples == 100


@pytest.mark.broker
def test_watch_follows_a_realtime_session_at_ten_frames_a_second_and_commits_nothing(settings, kafka, instance):
    stop = threading.Event()
    sim = threading.Thread(target=simulate_f1, args=(settings,), kwargs=dict(
        laps=1, session_id="silverstone-live", realtime=True, kafka=kafka, progress=False, stop=stop), daemon=True)
    sim.start()
    try:
        out = io.StringIO()
        stats = run_watch(kafka, settings.topics.f1_telemetry, settings.topics.f1_analytics, duration_s=3.0,
                          plain=True, out=out)
    finally:
        stop.set()
        sim.join(10)
    assert stats["frames_per_s"] >= 10, stats
    assert stats["session"] == "silverstone-live" and stats["samples"] > 100
    lines = [ln for ln in out.getvalue().splitlines() if "speed" in ln]
    assert lines and "km/h" in lines[-1] and "gear" in lines[-1]
    speeds = {ln.split("speed")[1].split("km/h")[0] for ln in lines}
    assert len(speeds) > 5, "the screen moves with the car"

    # the watcher's group committed nothing; landing starts from the beginning as if it never ran
    tp = [TopicPartition(settings.topics.f1_telemetry, 0)]
    for group in (stats["group"], LANDING_GROUP):
        c = kafka.consumer(group)
        try:
            assert c.committed(tp, timeout=5)[0].offset < 0, group
        finally:
            c.close()
    defs = build_definitions(settings)
    res = dg.materialize([defs.get_assets_def(F1_TELEMETRY)], instance=instance, resources=defs.resources)
    meta = res.asset_materializations_for_node("f1__telemetry")[0].metadata
    assert meta["telemetry_landing"].value["start_offsets"] == {"0": 0}
    assert np.isclose(meta["dagster/row_count"].value, stats["samples"], rtol=0.5)
