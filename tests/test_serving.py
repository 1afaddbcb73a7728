"""Serving tables in real PostgreSQL: idempotent bulk upserts, hostile ids kept as they are, Grafana panels answer."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
import yaml

from aero_assets.tires.episodes import Thresholds, detect_episodes, episodes_table
from aero_assets.tires.serving_tables import DDL, serve_alerts, serve_windows
from aero_assets.tires.windows import window_aggregates
from resources import ServingResource, ServingUnavailable
from resources.settings import SettingsError, load_settings
from tests.conftest import REPO
from tests.tires_data import S, fleet

psycopg2 = pytest.importorskip("psycopg2")
pytestmark = pytest.mark.postgres
T0 = 1_767_607_200 * S
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "tires.json"


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _sample() -> tuple[pa.Table, pa.Table]:
    readings = fleet(T0, 480, vehicles=3, overheat_at=400)  # the overheat is still open at the end
    log = readings.append_column("_partition", pa.array(np.zeros(readings.num_rows, np.int32))) \
                  .append_column("_offset", pa.array(np.arange(readings.num_rows)))
    return window_aggregates(readings), episodes_table(detect_episodes(log, Thresholds()))


def test_upserting_twice_never_duplicates_and_the_newer_values_win(serving_pg_url):
    serving = ServingResource(url=serving_pg_url)
    windows, alerts = _sample()
    assert serve_windows(serving, windows) == windows.num_rows
    serve_windows(serving, windows)
    assert _rows(serving_pg_url, "SELECT count(*) FROM tire_aggregations")[0][0] == windows.num_rows
    changed = windows.set_column(windows.schema.get_field_index("reading_count"), "reading_count",
                                 pa.array(np.full(windows.num_rows, 99)))
    serve_windows(serving, changed)
    assert _rows(serving_pg_url, "SELECT DISTINCT reading_count FROM tire_aggregations") == [(99,)]
    serve_alerts(serving, alerts)
    serve_alerts(serving, pa.concat_tables([alerts, alerts]))  # one key twice in a batch
    assert _rows(serving_pg_url, "SELECT count(*) FROM tire_alerts")[0][0] == alerts.num_rows >= 3


@pytest.mark.parametrize("hostile", ["x'); DROP TABLE tire_alerts;--", 'quo"te,comma', "tab\tnew\nline",
                                     "back\\slash", "ünïcødé ✓", ""])
def test_hostile_values_are_stored_verbatim_and_nan_becomes_null(serving_pg_url, hostile):
    serving = ServingResource(url=serving_pg_url)
    windows, _ = _sample()
    one = windows.slice(0, 1)
    one = one.set_column(0, "vehicle_id", pa.array([hostile])).set_column(
        one.schema.get_field_index("avg_pressure_kpa"), "avg_pressure_kpa", pa.array([float("nan")]))
    serve_windows(serving, one)
    [(vid, avg, start)] = _rows(serving_pg_url,
                                "SELECT vehicle_id, avg_pressure_kpa, window_start FROM tire_aggregations")
    assert vid == hostile and avg is None
    assert int(start.timestamp()) * S == one["window_start"].cast(pa.int64())[0].as_py()
    assert _rows(serving_pg_url, "SELECT to_regclass('tire_alerts') IS NOT NULL")[0][0]


def _expand(sql: str, lo: str, hi: str) -> str:
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{lo}' AND '{hi}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{lo}'").replace("$__timeTo()", f"'{hi}'")
    unknown = re.findall(r"\$__\w+", sql)
    assert not unknown, f"the test does not know how Grafana expands {unknown}: add it"
    return sql


def test_every_grafana_panel_query_returns_rows_from_the_real_tables(serving_pg_url):
    serving = ServingResource(url=serving_pg_url)
    windows, alerts = _sample()
    serve_windows(serving, windows)
    serve_alerts(serving, alerts)
    dash = json.loads(DASHBOARD.read_text())
    lo, hi = "2026-01-05T09:30:00Z", "2026-01-05T10:08:00Z"  # the sample spans 10:00-10:08
    assert len(dash["panels"]) >= 6
    for panel in dash["panels"]:
        for target in panel["targets"]:
            rows = _rows(serving_pg_url, _expand(target["rawSql"], lo, hi))
            assert rows, f"panel {panel['title']!r} returned nothing"
            assert rows[0][0] not in (0, None), f"panel {panel['title']!r} returned {rows[0]}"


def test_the_provisioned_datasource_is_the_one_every_panel_uses():
    prov = yaml.safe_load((REPO / "docker/grafana/provisioning/datasources/aero-postgres.yaml").read_text())
    uid = prov["datasources"][0]["uid"]
    dash = json.loads(DASHBOARD.read_text())
    assert {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} == {uid}


def test_a_bad_or_unreachable_serving_url_says_what_to_fix():
    with pytest.raises(SettingsError, match="AERO_SERVING_PG_URL"):
        load_settings({"AERO_SERVING_PG_URL": "mysql://x"})
    dead = ServingResource(url="postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(ServingUnavailable, match="AERO_SERVING_PG_URL"):
        dead.ensure_tables(DDL)
    assert not ServingResource().enabled
