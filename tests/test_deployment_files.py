"""The production files are what the README says: compose validates, the image is CPU-only and not root,
every long-running service has a healthcheck and waits for what it needs, the Helm values mirror dagster.yaml."""

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker" / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "example", "GRAFANA_ADMIN_PASSWORD": "example"}


def _config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: .ci/run installs Debian's docker-compose (it validates "
                    "without an engine); locally: apt-get install docker-compose")
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], env={**os.environ, **SECRETS}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_the_compose_file_validates_and_refuses_to_start_without_its_secrets():
    cfg = _config()
    assert {"postgres", "kafka", "aero-code", "webserver", "daemon", "tires-alerts"} <= set(cfg["services"])
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    out = subprocess.run([shutil.which("docker-compose"), "-f", str(COMPOSE), "config"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    services = _config()["services"]
    for name in ("postgres", "kafka", "aero-code", "webserver", "daemon"):
        assert "healthcheck" in services[name], name
    for name in ("webserver", "daemon"):
        deps = services[name]["depends_on"]
        assert {d: deps[d]["condition"] for d in deps} == {
            "postgres": "service_healthy", "kafka": "service_healthy", "aero-code": "service_healthy"}, name
    assert services["tires-alerts"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("aero-code", "webserver", "daemon", "tires-alerts"):
        env = services[name]["environment"]
        assert env["AERO_ENV"] == "production" and env["AERO_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env["AERO_DAGSTER_PG_URL"].startswith("postgresql+psycopg2://"), name
    port = services["webserver"]["ports"][0]
    host = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
    assert host == "127.0.0.1", "the UI is not published on every interface"


def test_the_image_installs_dependencies_before_the_source_cpu_torch_and_runs_as_a_user():
    lines = [ln.strip() for ln in (REPO / "docker" / "Dockerfile").read_text().splitlines()]
    deps = next(i for i, ln in enumerate(lines) if "pip install ." in ln and "--no-deps" not in ln)
    source = next(i for i, ln in enumerate(lines) if ln.startswith("COPY aero_assets"))
    assert deps < source, "dependencies first, so a source change reuses the cached layer"
    assert any("download.pytorch.org/whl/cpu" in ln for ln in lines) and any("torch==2.13.0" in ln for ln in lines)
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] != "USER root"


def test_the_helm_values_mirror_the_instance_settings():
    values = yaml.safe_load((REPO / "docker" / "helm" / "values.yaml").read_text())
    local = yaml.safe_load((REPO / "docker" / "dagster.postgres.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "aero_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    daemon = values["dagsterDaemon"]
    assert daemon["runRetries"]["maxRetries"] == local["run_retries"]["max_retries"]
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is local["run_retries"]["retry_on_asset_or_op_failure"]
    assert daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    extra = values["additionalInstanceConfig"]
    assert extra["concurrency"]["pools"] == local["concurrency"]["pools"] and extra["nux"] == {"enabled": False}
    assert values["telemetry"]["enabled"] is False
