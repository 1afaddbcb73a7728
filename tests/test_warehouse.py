"""The warehouse is a convenience: an analyst holding the DuckDB file never slows a landing or fails an asset."""

import logging
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from aero_assets.definitions import build_definitions
from aero_assets.keys import RAW_RUN, WINDTUNNEL
from tests.test_raw_run import _check, _materialize, _publish

pytestmark = pytest.mark.broker
HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); time.sleep(600)"


@pytest.fixture
def analyst(settings):
    """Another process with the warehouse file open read-write, as DuckDB's UI or a notebook holds it."""
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(settings.warehouse_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "holding"
    yield proc
    proc.kill()
    proc.wait()


def _views_tick(settings, instance, defs):
    sensor = defs.resolve_sensor_def("warehouse_views_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=dict(defs.resources)) as ctx:
        return sensor.evaluate_tick(ctx)


def test_a_landing_does_not_touch_the_warehouse(settings):
    raw_run = build_definitions(settings).resolve_assets_def(RAW_RUN)
    assert "warehouse" not in raw_run.required_resource_keys


def test_an_analyst_holding_the_warehouse_neither_stalls_nor_fails_the_run_and_views_follow_later(
        settings, instance, kafka, analyst):
    run = _publish(settings, kafka)
    t0 = time.monotonic()
    result = _materialize(settings, instance, run.run_id)
    landing_s = time.monotonic() - t0
    assert result.success and _check(result).passed
    assert landing_s < 30, f"landing took {landing_s:.0f}s with the warehouse held (dagster-duckdb waits ~100 s)"

    # a non-landing asset's refresh gives up fast and leaves the view to the sensor
    wh = build_definitions(settings).resources["warehouse"]
    t0 = time.monotonic()
    assert wh.try_refresh_view(WINDTUNNEL, "raw_run", settings.lake_dir / "windtunnel" / "raw_run",
                               logging.getLogger("test")) is False
    assert time.monotonic() - t0 < 10
    assert wh.pending() == ["windtunnel.raw_run"]

    defs = build_definitions(settings)
    busy = _views_tick(settings, instance, defs)
    assert "locked by another process" in busy.skip_message

    analyst.kill()
    analyst.wait()
    done = _views_tick(settings, instance, defs)
    assert "windtunnel.raw_run" in done.skip_message and "windtunnel.run_events" in done.skip_message
    assert wh.pending() == []
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        assert con.execute("select count(*) from windtunnel.raw_run").fetchone()[0] == run.sample_count
    finally:
        con.close()
    assert "Every view" in _views_tick(settings, instance, defs).skip_message


def test_a_corrupt_warehouse_file_is_reported_as_corrupt_not_as_locked(settings, instance, kafka):
    run = _publish(settings, kafka)
    assert _materialize(settings, instance, run.run_id).success
    settings.warehouse_path.write_bytes(b"not a duckdb file" * 100)
    skipped = _views_tick(settings, instance, build_definitions(settings))
    assert "cannot be opened" in skipped.skip_message and "not a valid DuckDB database" in skipped.skip_message
    assert "locked" not in skipped.skip_message
