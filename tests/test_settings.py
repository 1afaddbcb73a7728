"""Settings: defaults give the embedded local stack; bad values fail fast naming the variable to fix."""

import re

import pytest

from resources.settings import DEFAULT_BOOTSTRAP, SettingsError, load_settings


def test_defaults_point_at_the_embedded_stack_under_dot_aero():
    s = load_settings({})
    assert s.env == "local"
    assert s.kafka.bootstrap_servers == DEFAULT_BOOTSTRAP
    assert s.home.name == ".aero"
    assert s.lake_dir == s.home / "lake"
    assert s.warehouse_path == s.home / "warehouse.duckdb"
    assert s.topics.windtunnel_samples == "windtunnel.samples"


def test_topic_names_can_be_overridden_per_topic():
    s = load_settings({"AERO_TOPIC_WINDTUNNEL_RUNS": "rig7.runs"})
    assert s.topics.windtunnel_runs == "rig7.runs"
    assert s.topics.dlq("rig7.runs") == "rig7.runs.dlq"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"AERO_ENV": "prod"}, "AERO_ENV"),
        ({"AERO_ENV": "production"}, "AERO_KAFKA_BOOTSTRAP"),
        ({"AERO_KAFKA_BOOTSTRAP": "localhost"}, "host:port"),
        ({"AERO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "AERO_KAFKA_SASL_MECHANISM"),
        (
            {"AERO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AERO_KAFKA_SASL_MECHANISM": "PLAIN"},
            "AERO_KAFKA_SASL_PASSWORD",
        ),
        ({"AERO_KAFKA_SSL_CA_LOCATION": "/nope/ca.pem"}, "AERO_KAFKA_SSL_CA_LOCATION"),
        ({"AERO_KAFKA_PARTITIONS": "many"}, "AERO_KAFKA_PARTITIONS"),
        ({"AERO_KAFKA_PARTITIONS": "0"}, "out of range"),
        ({"AERO_TOPIC_TIRES_RAW": "bad topic!"}, "AERO_TOPIC_TIRES_RAW"),
        ({"AERO_DAGSTER_PG_URL": "mysql://x"}, "postgresql+psycopg2"),
        ({"AERO_DAGSTER_PG_USER": "dagster"}, "AERO_DAGSTER_PG_HOST"),
        ({"AERO_DAGSTER_PG_HOST": "db", "AERO_DAGSTER_PG_PORT": "99999"}, "AERO_DAGSTER_PG_PORT"),
    ],
)
def test_bad_settings_fail_fast_with_a_message_naming_what_to_fix(env, names):
    with pytest.raises(SettingsError, match=re.escape(names)):
        load_settings(env)


def test_sasl_settings_are_accepted_and_the_password_is_not_in_repr():
    s = load_settings({
        "AERO_ENV": "production", "AERO_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
        "AERO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AERO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AERO_KAFKA_SASL_USERNAME": "aero", "AERO_KAFKA_SASL_PASSWORD": "s3cret",
    })
    assert s.kafka.sasl_username == "aero"
    assert "s3cret" not in repr(s)


def test_dagster_postgres_storage_can_be_given_in_parts_and_the_url_wins():
    parts = {"AERO_DAGSTER_PG_HOST": "db.internal", "AERO_DAGSTER_PG_USER": "dag ster",
             "AERO_DAGSTER_PG_PASSWORD": "p@ss/word", "AERO_DAGSTER_PG_DB": "dagster_prod"}
    url = load_settings(parts).dagster_pg_url
    assert url == "postgresql+psycopg2://dag%20ster:p%40ss%2Fword@db.internal:5432/dagster_prod"
    assert "p@ss" not in repr(load_settings(parts))
    whole = "postgresql+psycopg2://u@h:5433/d"
    assert load_settings({**parts, "AERO_DAGSTER_PG_URL": whole}).dagster_pg_url == whole
    assert load_settings({}).dagster_pg_url is None
