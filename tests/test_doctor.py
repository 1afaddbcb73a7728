"""`aero doctor` finds what would stop Aero, with real processes: a stale broker, a stopped Postgres."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aero_assets import doctor
from resources.embedded_broker import broker_binary, free_port, port_is_open, stop_process_group
from resources.settings import load_settings

AERO = str(Path(sys.executable).with_name("aero"))


def _doctor(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AERO, "doctor", "--ui-port", str(free_port()), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def stale_broker():
    """An embedded Tansu broker whose `aero` parent is gone: started directly, as one outliving a killed demo."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([broker_binary(), "broker", "--cluster-id", "aero-stale0000001", "--listener-url", url,
                             "--advertised-listener-url", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while not port_is_open("127.0.0.1", port):
        assert time.monotonic() < deadline and proc.poll() is None, "the planted broker did not start"
        time.sleep(0.05)
    yield port, proc
    stop_process_group(proc)


def test_doctor_names_a_stale_broker_by_pid_and_fails(stale_broker, tmp_path):
    port, proc = stale_broker
    out = _doctor({"AERO_HOME": str(tmp_path), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert out.returncode == 1, out.stdout
    line = next(ln for ln in out.stdout.splitlines() if f"port {port}" in ln)
    assert "FAIL" in line and "stale embedded broker" in line and f"pid {proc.pid}" in line
    assert f"fix: kill {proc.pid}" in out.stdout
    assert "problem(s) to fix" in out.stdout.splitlines()[-1]


def test_a_broker_of_a_running_aero_broker_is_not_stale(tmp_path):
    port = free_port()
    env = {**os.environ, "AERO_HOME": str(tmp_path)}
    proc = subprocess.Popen([AERO, "broker", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        ready = proc.stdout.readline()  # "aero broker: listening on ..." once its topics exist (or EOF if it died)
        assert "listening on" in ready, ready
        finding = doctor.check_port(port, "Kafka broker")
        assert finding.status == doctor.OK and "aero broker" in finding.detail, finding
    finally:
        stop_process_group(proc)


def test_doctor_fails_on_a_stopped_postgres_and_passes_on_a_running_one(tmp_path):
    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/dagster"  # nothing listens there
    out = _doctor({"AERO_HOME": str(tmp_path), "AERO_DAGSTER_PG_URL": dead, "AERO_KAFKA_BOOTSTRAP":
                   f"127.0.0.1:{free_port()}", "AERO_ENV": "local"}, "--json")
    findings = {f["check"]: f for f in json.loads(out.stdout)}
    assert out.returncode == 1
    storage = findings["instance storage"]
    assert storage["status"] == "FAIL" and "does not accept connections" in storage["detail"]
    assert "start Postgres" in storage["fix"]
    live = doctor._check_postgres("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    assert live.status == doctor.OK and "Postgres" in live.detail


def test_doctor_reports_a_bad_instance_file_and_low_disk(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_monitoring:\n  enabled: maybe\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = load_settings({"AERO_HOME": str(tmp_path)})
    (bad,) = [f for f in doctor.check_instance(settings) if f.check == "DAGSTER_HOME"]
    assert bad.status == doctor.FAIL and "invalid" in bad.detail
    # a full disk cannot be made on demand here: the one mocked fault
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: type("U", (), {"free": 10**8, "total": 10**11})())
    (disk,) = [f for f in doctor.check_lake(settings) if f.check == "disk"]
    assert disk.status == doctor.FAIL and "0.1 GiB free" in disk.detail
    text, code = doctor.report([bad, disk])
    assert code == 1 and text.splitlines()[-1] == "aero doctor: 2 problem(s) to fix"


def test_a_long_install_path_does_not_hide_which_command_holds_a_port():
    long = "/tmp/" + "x" * 90 + "/aero/.venv/bin"
    assert doctor.short_command(f"{long}/python3 {long}/aero broker --port 9092") == "aero broker --port 9092"
    assert doctor.short_command("/usr/bin/tansu broker --cluster-id aero-1") == "tansu broker --cluster-id aero-1"
    assert len(doctor.short_command("a " * 200)) == 100
