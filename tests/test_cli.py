"""The `aero` command line as a user runs it: the broker starts, serves and stops on Ctrl-C; bad config exits 2."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resources import KafkaResource
from resources.embedded_broker import free_port, port_is_open
from tests.conftest import REPO, wait_for

AERO = str(Path(sys.executable).with_name("aero"))


@pytest.mark.broker
def test_aero_broker_creates_the_topics_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "AERO_HOME": str(tmp_path)}
    proc = subprocess.Popen([AERO, "broker", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: port_is_open("127.0.0.1", port), timeout=15, what="the broker port")
        kafka = KafkaResource(bootstrap_servers=f"127.0.0.1:{port}")
        wait_for(lambda: kafka.identity("windtunnel.samples") is not None, timeout=15, what="topics")
        assert kafka.identity("tires.raw") is not None
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "listening on 127.0.0.1" in out and "stopped" in out
    assert not port_is_open("127.0.0.1", port)


def test_a_bad_setting_exits_2_with_a_message_that_says_what_to_fix(tmp_path):
    env = {**os.environ, "AERO_HOME": str(tmp_path), "AERO_KAFKA_BOOTSTRAP": "no-port-here"}
    out = subprocess.run([AERO, "simulate", "windtunnel", "--runs", "1"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "AERO_KAFKA_BOOTSTRAP" in out.stderr and "host:port" in out.stderr


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (["qc", "--runs", "2", "--duration", "5"], {"precision", "recall", "runs", "faults"}),
        (["windtunnel", "--duration", "5"], {"realtime_factor", "baseline_realtime_factor", "samples"}),
    ],
)
def test_benchmarks_print_their_figures_as_a_final_json_line(args, keys):
    out = subprocess.run([AERO, "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys <= set(figures)
    if args[0] == "windtunnel":
        assert figures["baseline_agrees"] is True, "the pandas baseline reaches the same QC answers"
