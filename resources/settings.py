"""Aero settings: one place that turns environment variables into validated values.

Everything configurable comes from `AERO_*` variables so that the same code runs on a laptop
(embedded broker, files under ./.aero) and in production (a real Kafka cluster, Postgres for
Dagster, a shared volume) with no code change. `AERO_ENV` is the one switch: `local` (default)
fills in the embedded stack; `production` refuses to guess and asks for what is missing.

Errors name the variable and say what to put in it, because a bad setting should fail the
first command that reads it, not a run an hour later.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENVIRONMENTS = ("local", "production")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which variable and how to fix it."""


@dataclass(frozen=True)
class Topics:
    """Kafka topic names (DESIGN.md wire formats); each can be renamed with `AERO_TOPIC_<NAME>`."""

    windtunnel_samples: str = "windtunnel.samples"
    windtunnel_runs: str = "windtunnel.runs"
    tires_raw: str = "tires.raw"
    tires_alerts: str = "tires.alerts"
    f1_telemetry: str = "f1.telemetry"
    f1_sessions: str = "f1.sessions"
    f1_analytics: str = "f1.analytics"
    rig_readings: str = "rig.readings"
    weather_observations: str = "weather.observations"

    def all(self) -> list[str]:
        return list(self.__dict__.values())

    @staticmethod
    def dlq(topic: str) -> str:
        return f"{topic}.dlq"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    partitions: int = 1

    @property
    def first_port(self) -> int:
        """Port of the first bootstrap server: where `aero broker` / `aero demo` start the embedded one."""
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    kafka: KafkaSettings
    topics: Topics
    dagster_pg_url: str | None = field(default=None, repr=False)
    serving_pg_url: str | None = field(default=None, repr=False)
    nightly_timezone: str = "UTC"  # the `nightly_reprocessing` schedule's clock (02:00 there)

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def ground_truth_dir(self) -> Path:
        """Where simulators write the faults they injected, for QC scoring and tests."""
        return self.home / "ground_truth"


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip()
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not valid: use one of {', '.join(allowed)}.")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number: set it to an integer from {lo} to {hi}.") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range: set it to an integer from {lo} to {hi}.")
    return value


def bounded_floats(env: Mapping[str, str], variables: Mapping[str, tuple[str, float, float]]) -> dict[str, float]:
    """{field: value} for each set variable of `variables` ({VAR: (field, lo, hi)}), each a finite number in
    [lo, hi]; a bad one raises `SettingsError` naming the variable and the range. Unset ones are left out,
    so the caller's dataclass keeps its defaults."""
    values = {}
    for var, (name, lo, hi) in variables.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a number: set it between {lo:g} and {hi:g}.") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise SettingsError(f"{var}={raw} is out of range: set it between {lo:g} and {hi:g}.")
        values[name] = value
    return values


_PG_PARTS = ("AERO_DAGSTER_PG_HOST", "AERO_DAGSTER_PG_PORT", "AERO_DAGSTER_PG_USER", "AERO_DAGSTER_PG_PASSWORD",
             "AERO_DAGSTER_PG_DB")


def _dagster_pg_url_from_parts(env: Mapping[str, str]) -> str | None:
    """AERO_DAGSTER_PG_URL built from AERO_DAGSTER_PG_HOST/_PORT/_USER/_PASSWORD/_DB, as Helm charts and
    secret stores hand them out; None when none is set. The host is required once any part is."""
    given = {name: env[name] for name in _PG_PARTS if env.get(name)}
    if not given:
        return None
    if "AERO_DAGSTER_PG_HOST" not in given:
        raise SettingsError(
            f"{', '.join(sorted(given))} set but AERO_DAGSTER_PG_HOST is not: set the host too (or the whole "
            "AERO_DAGSTER_PG_URL=postgresql+psycopg2://user:password@host:5432/dagster)."
        )
    port = _int(env, "AERO_DAGSTER_PG_PORT", 5432, 1, 65535)
    user = quote(given.get("AERO_DAGSTER_PG_USER", "postgres"), safe="")
    password = given.get("AERO_DAGSTER_PG_PASSWORD")
    userinfo = f"{user}:{quote(password, safe='')}" if password else user
    db = quote(given.get("AERO_DAGSTER_PG_DB", "dagster"), safe="")
    return f"postgresql+psycopg2://{userinfo}@{given['AERO_DAGSTER_PG_HOST']}:{port}/{db}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate all settings; raise `SettingsError` that says what to fix."""
    env = os.environ if env is None else env
    mode = _choice(env, "AERO_ENV", "local", ENVIRONMENTS)

    bootstrap = env.get("AERO_KAFKA_BOOTSTRAP", "").strip()
    if not bootstrap:
        if mode == "production":
            raise SettingsError(
                "AERO_KAFKA_BOOTSTRAP is not set and AERO_ENV=production: set it to the cluster's "
                "bootstrap servers, e.g. 'kafka-1:9092,kafka-2:9092'."
            )
        bootstrap = DEFAULT_BOOTSTRAP
    for hostport in bootstrap.split(","):
        if not _HOSTPORT.match(hostport.strip()):
            raise SettingsError(
                f"AERO_KAFKA_BOOTSTRAP={bootstrap!r}: {hostport!r} is not host:port; "
                "use a comma-separated list such as '127.0.0.1:9092'."
            )

    protocol = _choice(env, "AERO_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS)
    mechanism = env.get("AERO_KAFKA_SASL_MECHANISM") or None
    username = env.get("AERO_KAFKA_SASL_USERNAME") or None
    password = env.get("AERO_KAFKA_SASL_PASSWORD") or None
    if protocol.startswith("SASL"):
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"AERO_KAFKA_SECURITY_PROTOCOL={protocol} needs AERO_KAFKA_SASL_MECHANISM set to one of "
                f"{', '.join(SASL_MECHANISMS)} (got {mechanism!r})."
            )
        if not username or not password:
            raise SettingsError(
                f"AERO_KAFKA_SECURITY_PROTOCOL={protocol} needs AERO_KAFKA_SASL_USERNAME and "
                "AERO_KAFKA_SASL_PASSWORD (put the password in the environment or a secret store, never in the repo)."
            )
    ca = env.get("AERO_KAFKA_SSL_CA_LOCATION") or None
    if ca and not Path(ca).is_file():
        raise SettingsError(f"AERO_KAFKA_SSL_CA_LOCATION={ca!r} does not exist: point it at a PEM CA file.")

    topic_overrides = {}
    for name in Topics.__dataclass_fields__:
        var = f"AERO_TOPIC_{name.upper()}"
        if var in env:
            value = env[var].strip()
            if not _TOPIC.match(value):
                raise SettingsError(f"{var}={value!r} is not a valid Kafka topic name (letters, digits, . _ -).")
            topic_overrides[name] = value

    pg_url = env.get("AERO_DAGSTER_PG_URL") or _dagster_pg_url_from_parts(env)
    if pg_url and not pg_url.startswith(("postgresql://", "postgresql+psycopg2://")):
        raise SettingsError(
            "AERO_DAGSTER_PG_URL must start with postgresql+psycopg2:// (or postgresql://), "
            f"got {pg_url.split(':', 1)[0]!r}."
        )

    serving_url = env.get("AERO_SERVING_PG_URL") or None
    if serving_url and not serving_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(
            "AERO_SERVING_PG_URL must be a libpq URL starting with postgresql://, e.g. "
            f"postgresql://grafana@127.0.0.1:5432/aero (got one starting {serving_url.split(':', 1)[0]!r})."
        )

    nightly_tz = (env.get("AERO_NIGHTLY_TIMEZONE") or "UTC").strip()
    try:
        ZoneInfo(nightly_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"AERO_NIGHTLY_TIMEZONE={nightly_tz!r} is not an IANA time zone; use a name such as UTC, "
            "Europe/London or America/New_York."
        ) from exc

    return Settings(
        env=mode,
        home=Path(env.get("AERO_HOME") or ".aero").expanduser().absolute(),
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_ca_location=ca,
            partitions=_int(env, "AERO_KAFKA_PARTITIONS", 1, 1, 1024),
        ),
        topics=Topics(**topic_overrides),
        dagster_pg_url=pg_url,
        serving_pg_url=serving_url,
        nightly_timezone=nightly_tz,
    )
