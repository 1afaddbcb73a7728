"""The production files are what the README says: compose validates, the image is CPU-only and not root,
every long-running service has a healthcheck and waits for what it needs, the Helm values mirror dagster.yaml."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker" / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "example", "GRAFANA_ADMIN_PASSWORD": "example"}
PROMETHEUS = REPO / "docker" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "docker" / "grafana"
# what `aero serve` exports on /metrics; a histogram also exports its _bucket, _sum and _count series
API_METRICS = {"aero_landing_lag_messages", "aero_dlq_messages", "aero_windtunnel_runs", "aero_tires_open_alerts",
               "aero_f1_laps_summarised", "aero_rig_anomalies", "aero_forecast_drifted",
               "aero_forecast_last_retrain_timestamp_seconds", "aero_forecast_champion_info",
               "aero_api_requests_total", "aero_api_request_seconds"}
HISTOGRAMS = {"aero_api_request_seconds"}


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
    assert {"postgres", "kafka", "aero-code", "webserver", "daemon", "tires-alerts", "api", "prometheus",
            "grafana"} <= set(cfg["services"])
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


def _hosts(service: dict) -> set[tuple[str, str, str]]:
    out = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.add((port.get("host_ip", ""), str(port.get("published")), str(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            out.add(tuple(parts) if len(parts) == 3 else ("", *parts))
    return out


def test_the_api_service_is_local_only_healthchecked_and_keeps_the_shared_environment():
    services = _config()["services"]
    api = services["api"]
    assert api["command"] == ["aero", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert _hosts(api) == {("127.0.0.1", "8000", "8000")}, "the API is not published on every interface"
    check = " ".join(api["healthcheck"]["test"])
    assert "urllib" in check and "http://127.0.0.1:8000/healthz" in check
    env = api["environment"]
    assert env["AERO_ENV"] == "production" and env["AERO_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["AERO_DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
    assert env["AERO_DAGSTER_PG_URL"] == services["webserver"]["environment"]["AERO_DAGSTER_PG_URL"]
    assert "AERO_API_TOKEN" in env and env["AERO_API_TOKEN"] in ("", None), "no token unless one is given"
    assert {d: api["depends_on"][d]["condition"] for d in api["depends_on"]} == {
        "postgres": "service_healthy", "kafka": "service_healthy"}
    assert any(v.get("target") == "/data" if isinstance(v, dict) else ":/data" in v for v in api["volumes"])


def test_the_token_reaches_the_api_when_it_is_set():
    exe = shutil.which("docker-compose")
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], env={**os.environ, **SECRETS, "AERO_API_TOKEN": "t0k"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["services"]["api"]["environment"]["AERO_API_TOKEN"] == "t0k"


def test_prometheus_scrapes_the_api_metrics_and_grafana_waits_for_it():
    services = _config()["services"]
    prom = services["prometheus"]
    image, _, tag = prom["image"].partition(":")
    assert image == "prom/prometheus" and tag not in ("", "latest"), "pin the Prometheus version"
    assert _hosts(prom) == {("127.0.0.1", "9090", "9090")}
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in prom["volumes"]]
    assert any(m.split(":")[0].endswith("prometheus/prometheus.yml")
               and m.split(":")[1] == "/etc/prometheus/prometheus.yml" for m in mounts), mounts
    assert "prometheus" in services["grafana"]["depends_on"]

    text = PROMETHEUS.read_text()
    cfg = yaml.safe_load(text)
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    job = jobs["aero-api"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", cfg["global"]["scrape_interval"]) == "15s"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["api:8000"]
    # the default works without a token: a credentials_file that is not mounted fails every scrape
    assert "authorization" not in job
    assert "credentials_file: /etc/prometheus/api-token" in text and "/etc/prometheus/api-token:ro" in text


def _dashboard_datasource_uids() -> set[str]:
    uids = set()
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yaml"):
        uids |= {ds["uid"] for ds in yaml.safe_load(path.read_text())["datasources"]}
    return uids


def test_the_api_dashboard_uses_the_provisioned_datasources_and_only_exported_metrics():
    provisioned = _dashboard_datasource_uids()
    assert {"aero-prometheus", "aero-pg"} <= provisioned
    prom = next(ds for p in (GRAFANA / "provisioning" / "datasources").glob("*.yaml")
                for ds in yaml.safe_load(p.read_text())["datasources"] if ds["uid"] == "aero-prometheus")
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"

    dash = json.loads((GRAFANA / "dashboards" / "aero-api.json").read_text())
    assert dash["uid"] and 36 <= dash["schemaVersion"] <= 41 and dash["panels"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    used = set()
    for panel in dash["panels"]:
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]:
            assert ds and ds["uid"] in {"aero-prometheus", "aero-pg"}, panel["title"]
        for target in panel["targets"]:
            if target["datasource"]["uid"] != "aero-prometheus":
                continue
            for name in re.findall(r"\baero_[a-z0-9_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in API_METRICS or base in HISTOGRAMS, f"{panel['title']!r} queries unknown {name}"
                used.add(base if base in HISTOGRAMS else name)
    assert used == API_METRICS, f"no panel for {API_METRICS - used}"
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert "histogram_quantile(0.95" in exprs and "aero_api_request_seconds_bucket" in exprs
