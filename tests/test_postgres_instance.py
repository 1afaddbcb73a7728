"""Production instance storage: runs, materialisations and check results kept in real Postgres.

Uses the server on 127.0.0.1:5432 (`.ci/run` starts it) with a throw-away database.
"""

import os
import uuid

import dagster as dg
import pytest
import yaml

from aero_assets.definitions import build_definitions
from aero_assets.keys import RAW_RUN, windtunnel_runs
from aero_assets.simulators.publish import publish_run
from aero_assets.simulators.windtunnel import simulate_run
from aero_assets.windtunnel.assets import COUNT_CHECK
from tests.conftest import REPO

psycopg2 = pytest.importorskip("psycopg2")
pytestmark = [pytest.mark.postgres, pytest.mark.broker]
PG = os.environ.get("AERO_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@pytest.fixture
def pg_url():
    name = f"aero_test_{uuid.uuid4().hex[:8]}"
    admin_dsn = PG.replace("postgresql+psycopg2://", "postgresql://") + "/postgres"
    try:
        conn = psycopg2.connect(admin_dsn, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {admin_dsn} ({exc}); start it: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    conn.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    conn.close()


def test_materialisations_and_checks_are_stored_in_postgres(tmp_path, settings, kafka, pg_url, monkeypatch):
    monkeypatch.setenv("AERO_DAGSTER_PG_URL", pg_url)
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "docker" / "dagster.postgres.yaml").read_text())
    cfg = yaml.safe_load((home / "dagster.yaml").read_text())
    assert cfg["storage"]["postgres"]["postgres_url"] == {"env": "AERO_DAGSTER_PG_URL"}

    run = simulate_run("pg-run001", duration_s=0.3, started_ns=1_767_225_600 * 10**9, seed=1)
    publish_run(kafka, run, samples_topic=settings.topics.windtunnel_samples,
                runs_topic=settings.topics.windtunnel_runs, session_id="pg", baseline_run_id=None)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        instance.add_dynamic_partitions(windtunnel_runs.name, [run.run_id])
        defs = build_definitions(settings)
        result = dg.materialize(list(defs.assets), selection=[RAW_RUN], partition_key=run.run_id,
                                instance=instance, resources=defs.resources)
        assert result.success
    # a fresh instance on the same database sees what the run recorded
    with dg.DagsterInstance.from_config(str(home)) as again:
        [rec] = again.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW_RUN), limit=1).records
        assert rec.partition_key == run.run_id
        assert rec.asset_materialization.metadata["dagster/row_count"].value == run.sample_count
        check = again.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(RAW_RUN, COUNT_CHECK))
        assert check.event.asset_check_evaluation.passed
        assert again.has_dynamic_partition(windtunnel_runs.name, run.run_id)
