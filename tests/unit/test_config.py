from pathlib import Path

import pytest

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError


def test_defaults_follow_the_contract():
    s = Settings.from_env({})
    assert s.http_port == 6066
    assert s.topic_prefix == "lifecycle."
    assert s.kafka_bootstrap is None and s.postgres_dsn is None
    assert s.topic("tombstones") == "lifecycle.tombstones"


def test_reads_prefixed_variables_only():
    s = Settings.from_env(
        {
            "LIFECYCLE_KAFKA_BOOTSTRAP": "k:9092",
            "LIFECYCLE_TOPIC_PREFIX": "",
            "LIFECYCLE_HTTP_PORT": "7000",
            "LIFECYCLE_STATE_DIR": "/x",
            "KAFKA_BOOTSTRAP": "ignored:1",
        }
    )
    assert s.kafka_bootstrap == "k:9092"
    assert s.topic("accounts") == "accounts"
    assert s.http_port == 7000
    assert s.state_dir == Path("/x")


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"LIFECYCLE_HTTP_PORT": "http"}, "LIFECYCLE_HTTP_PORT"),
        ({"LIFECYCLE_HTTP_PORT": "70000"}, "LIFECYCLE_HTTP_PORT"),
        ({"LIFECYCLE_KAFKA_IDEMPOTENCE": "maybe"}, "LIFECYCLE_KAFKA_IDEMPOTENCE"),
        ({"LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "LIFECYCLE_KAFKA_SECURITY_PROTOCOL"),
        ({"LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "LIFECYCLE_KAFKA_SASL_MECHANISM"),
        ({"LIFECYCLE_FETCH_WAIT_MS": "0"}, "LIFECYCLE_FETCH_WAIT_MS"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_secrets_stay_out_of_repr():
    s = Settings.from_env(
        {
            "LIFECYCLE_HTTP_TOKEN": "tok-SECRET",
            "LIFECYCLE_KAFKA_SASL_PASSWORD": "pw-SECRET",
            "LIFECYCLE_POSTGRES_DSN": "postgresql://u:dsn-SECRET@h/db",
        }
    )
    assert "SECRET" not in repr(s)


def test_to_env_round_trips():
    s = Settings.from_env({"LIFECYCLE_KAFKA_BOOTSTRAP": "k:1", "LIFECYCLE_KAFKA_IDEMPOTENCE": "false",
                           "LIFECYCLE_TOPIC_PREFIX": "p.", "LIFECYCLE_FETCH_WAIT_MS": "25"})
    assert s.fetch_wait_ms == 25
    assert Settings.from_env(s.to_env()) == s


def test_sasl_settings_reach_kafka_clients():
    s = Settings.from_env({"LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LIFECYCLE_KAFKA_SASL_MECHANISM": "PLAIN",
                           "LIFECYCLE_KAFKA_SASL_USERNAME": "u", "LIFECYCLE_KAFKA_SASL_PASSWORD": "p",
                           "LIFECYCLE_KAFKA_SSL_CAFILE": "/ca.pem"})
    kw = s.kafka_client_kwargs()
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_plain_username"] == "u" and kw["ssl_cafile"] == "/ca.pem"


def test_sasl_and_tls_settings_reach_the_intake_consumer(tmp_path):
    import ssl

    import trustme

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    s = Settings.from_env({"LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LIFECYCLE_KAFKA_SASL_MECHANISM": "PLAIN",
                           "LIFECYCLE_KAFKA_SASL_USERNAME": "u", "LIFECYCLE_KAFKA_SASL_PASSWORD": "p",
                           "LIFECYCLE_KAFKA_SSL_CAFILE": str(ca)})
    kw = s.aiokafka_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "PLAIN"
    assert kw["sasl_plain_username"] == "u" and kw["sasl_plain_password"] == "p"
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["ssl_context"].cert_store_stats()["x509_ca"] == 1
    assert Settings.from_env({}).aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
