"""Kafka access for every Aero process: clients, topic creation and topic identity.

Everything that talks to Kafka goes through `KafkaResource`, so the embedded Tansu broker and a
real Kafka/Redpanda cluster (SASL/TLS) are one configuration apart.

Topic identity ("incarnation"): the embedded broker forgets everything when it restarts and a
real topic can be deleted and recreated; offsets from the old one mean nothing for the new one.
We identify a topic by the cluster id and the topic id the broker reports, never by comparing
watermarks (Tansu reports them too low, see DESIGN.md).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import dagster as dg
from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from resources.settings import KafkaSettings

# librdkafka logs every refused connection to stderr; route it into Python logging instead, where
# it is visible at DEBUG and our own code reports the failure once, clearly.
_RDKAFKA_LOG = logging.getLogger("aero.rdkafka")


class BrokerUnavailable(RuntimeError):
    """The broker did not answer in time; callers skip or retry rather than fail a run."""


@dataclass(frozen=True)
class TopicIdentity:
    """Which incarnation of a topic we are looking at."""

    topic: str
    cluster_id: str
    topic_id: str
    partitions: tuple[int, ...]

    @property
    def incarnation(self) -> str:
        """A short, stable token for (cluster, topic id): used in run keys and landing file names."""
        digest = hashlib.sha1(f"{self.cluster_id}/{self.topic}/{self.topic_id}".encode()).hexdigest()
        return digest[:10]


class KafkaResource(dg.ConfigurableResource):
    """Kafka connection settings; defaults point at the embedded broker on 127.0.0.1:9092."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    client_id: str = "aero"
    default_partitions: int = 1

    @classmethod
    def from_settings(cls, s: KafkaSettings) -> KafkaResource:
        return cls(
            bootstrap_servers=s.bootstrap_servers,
            security_protocol=s.security_protocol,
            sasl_mechanism=s.sasl_mechanism,
            sasl_username=s.sasl_username,
            sasl_password=s.sasl_password,
            ssl_ca_location=s.ssl_ca_location,
            default_partitions=s.partitions,
        )

    # -- configuration -------------------------------------------------------------------------
    def common_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "logger": _RDKAFKA_LOG,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def producer(self, **overrides: Any) -> Producer:
        conf = {
            **self.common_config(),
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "message.max.bytes": 8_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            **overrides,
        }
        return Producer(conf)

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer for explicit `assign()`: no auto-commit, EOF events mark the partition end."""
        conf = {
            **self.common_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            # Tansu holds every fetch for the full wait; at the default 500 ms a landing of 1,250 blocks
            # spent 1 s of 2 waiting. 10 ms keeps the round trips short on any broker.
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 16_777_216,
            # When its prefetch queue is over queued.max.messages.kbytes (64 MB: less than one landing
            # chunk of JSON), the client postpones the partition's next fetch by this much, 1 s by
            # default, even if the queue drains meanwhile: landings of 1 M readings stalled 0.4 s in
            # consume() every other run. 10 ms costs a few more wake-ups of the fetch thread.
            "fetch.queue.backoff.ms": 10,
            **overrides,
        }
        return Consumer(conf)

    def admin(self) -> AdminClient:
        return AdminClient(self.common_config())

    # -- topics ------------------------------------------------------------------------------
    def ensure_topics(self, topics: list[str], partitions: int | None = None, timeout: float = 10.0) -> None:
        """Create the topics that do not exist yet (idempotent)."""
        admin = self.admin()
        existing = self._metadata(admin, timeout).topics
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        n = partitions or self.default_partitions
        futures = admin.create_topics([NewTopic(t, n, 1) for t in missing], operation_timeout=timeout)
        for _topic, fut in futures.items():
            try:
                fut.result(timeout)
            except KafkaException as exc:  # created by someone else meanwhile: fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    def cluster(self, timeout: float = 5.0) -> tuple[str, list[str]]:
        """(cluster id, topic names) as the broker reports them; BrokerUnavailable when it does not answer."""
        md = self._metadata(self.admin(), timeout)
        return str(md.cluster_id), sorted(t for t in md.topics if not t.startswith("__"))

    def identity(self, topic: str, timeout: float = 5.0) -> TopicIdentity | None:
        """The topic's current incarnation, or None when the topic does not exist (yet)."""
        admin = self.admin()
        md = self._metadata(admin, timeout)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            return None
        try:
            desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout)
        except (KafkaException, TimeoutError) as exc:
            # Never guess: an identity without the topic id would look like a new incarnation, and
            # sensors and landings would start the topic over. Treat it as the broker being unavailable.
            raise BrokerUnavailable(
                f"Kafka broker at {self.bootstrap_servers} did not describe topic {topic} "
                f"within {timeout:.0f}s ({exc}); try again when it answers."
            ) from exc
        topic_id = str(desc.topic_id) if desc.topic_id is not None else ""  # None: broker without topic ids
        return TopicIdentity(topic, str(md.cluster_id), topic_id, tuple(sorted(tmd.partitions)))

    def _metadata(self, admin: AdminClient, timeout: float):
        try:
            return admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"Kafka broker at {self.bootstrap_servers} did not answer within {timeout:.0f}s ({exc}). "
                "Start it with `aero broker` or point AERO_KAFKA_BOOTSTRAP at a running cluster."
            ) from exc
