"""What `aero broker` and `aero demo` start dies with them, even on kill -9; a broker the demo did not
start is refused unless the user says to reuse it, and named when it is reused.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aero_assets.stack import DemoRefused, demo_broker
from resources import load_settings
from resources.embedded_broker import free_port, port_is_open, stop_process_group
from tests.conftest import REPO, wait_for

AERO = str(Path(sys.executable).with_name("aero"))
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone; a zombie counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[1]))


def descendants(root: int) -> dict[int, str]:
    """Live descendants of `root`: pid -> command line."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            parents[int(d.name)] = st[1]
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(child)
    return found


def alive(pids) -> dict[int, str]:
    return {p: cmd for p, cmd in pids.items() if _stat(p) is not None}


@linux_only
@pytest.mark.broker
def test_a_sigkilled_aero_broker_takes_its_tansu_process_with_it(tmp_path):
    port = free_port()
    proc = subprocess.Popen([AERO, "broker", "--port", str(port)], env={**os.environ, "AERO_HOME": str(tmp_path)},
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_is_open("127.0.0.1", port), timeout=15, what="the broker port")
        [(tansu, cmd)] = descendants(proc.pid).items()
        assert "tansu" in cmd and f":{port}" in cmd
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up by aero itself
        proc.wait()
    try:
        # the pid turns zombie when the main thread exits; the port closes when the last thread has
        wait_for(lambda: _stat(tansu) is None and not port_is_open("127.0.0.1", port), timeout=5, interval=0.05,
                 what=f"Tansu (pid {tansu}) to die with its parent and its port to close")
    finally:
        if _stat(tansu) is not None:  # only after a failure: by process id
            os.kill(tansu, signal.SIGKILL)


@linux_only
@pytest.mark.broker
@pytest.mark.daemon
def test_a_sigkilled_aero_demo_leaves_no_broker_and_no_dagster_behind(tmp_path):
    kafka_port, ui_port = free_port(), free_port()
    env = {**os.environ, "AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}"}
    proc = subprocess.Popen([AERO, "demo", "--port", str(ui_port), "--runs", "0", "--interval", "0"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tree: dict[int, str] = {}

    def whole_stack():
        tree.update(descendants(proc.pid))
        cmds = " | ".join(tree.values())
        return all(k in cmds for k in ("tansu", "dagster dev", "dagster_webserver", "dagster._daemon", "code-server"))

    try:
        wait_for(lambda: port_is_open("127.0.0.1", ui_port), timeout=120, interval=0.5, what="the Dagster UI")
        wait_for(whole_stack, timeout=30, what="the broker, dagster dev, its webserver, daemon and code server")
        proc.kill()
        proc.wait()
        # the broker goes at once (SIGKILL); dagster dev gets SIGINT and stops its children as on Ctrl-C
        wait_for(lambda: not port_is_open("127.0.0.1", kafka_port), timeout=5, what="the broker port to close")
        try:
            wait_for(lambda: not alive(tree), timeout=60, interval=0.5, what="everything the demo started to stop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still running: {alive(tree)}") from None
        wait_for(lambda: not port_is_open("127.0.0.1", ui_port), timeout=5, what="the UI port to close")
    finally:
        if proc.poll() is None:
            stop_process_group(proc)
        for pid in alive(tree):  # only after a failure: by process id, never by name
            os.kill(pid, signal.SIGKILL)


@pytest.mark.broker
def test_aero_demo_refuses_a_broker_it_did_not_start_and_says_why(tmp_path, broker):
    ui_port = free_port()
    env = {**os.environ, "AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap}
    out = subprocess.run([AERO, "demo", "--port", str(ui_port), "--runs", "0", "--interval", "0"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    msg = out.stderr
    assert f"{broker.bootstrap} is already served by a broker this demo did not start" in msg
    assert broker.cluster_id in msg and "earlier `aero demo` or `aero broker`" in msg
    assert "earlier session's data" in msg and "--reuse-broker" in msg
    assert not port_is_open("127.0.0.1", ui_port), "Dagster was not started"
    assert not (tmp_path / "aero" / "dagster-dev.log").exists()


@pytest.mark.broker
def test_reusing_a_broker_is_explicit_and_named(tmp_path, broker, kafka):
    settings = load_settings({"AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap})
    with pytest.raises(DemoRefused, match="did not start"):
        demo_broker(settings, reuse_broker=False)
    started, client, note = demo_broker(settings, reuse_broker=True)
    assert started is None and client.bootstrap_servers == broker.bootstrap
    assert note.startswith("aero demo: WARNING: using the Kafka broker at")
    assert broker.cluster_id in note and "did not start" in note and "earlier session's data" in note
    assert f"{len(settings.topics.all())} of Aero's {len(settings.topics.all())} topics exist there" in note


@pytest.mark.broker
def test_the_demo_starts_its_own_broker_on_a_free_port_and_says_so(tmp_path):
    port = free_port()
    settings = load_settings({"AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    started, client, note = demo_broker(settings, reuse_broker=False)
    try:
        assert started is not None and started.port == port
        assert note.startswith(f"aero demo: embedded broker on 127.0.0.1:{port} (cluster id {started.cluster_id}")
        assert client.cluster(timeout=5)[0] == started.cluster_id
    finally:
        started.stop()


def test_aero_demo_refuses_a_ui_port_that_is_already_served(tmp_path):
    with socket.socket() as s:  # e.g. a Dagster UI left running: the demo would mistake it for its own
        s.bind(("127.0.0.1", 0))
        s.listen()
        ui_port = s.getsockname()[1]
        out = subprocess.run([AERO, "demo", "--port", str(ui_port), "--runs", "0", "--interval", "0"],
                             env={**os.environ, "AERO_HOME": str(tmp_path / "aero")}, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"port {ui_port} is already in use" in out.stderr and "--port" in out.stderr
    assert not (tmp_path / "aero" / "broker.log").exists(), "no broker was started"
