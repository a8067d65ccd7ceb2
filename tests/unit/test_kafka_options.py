"""Settings -> Kafka client options (kernel/kafka.py): the agent (kafka-python) and the worker
(Faust) get the same security and timeouts from the same variables."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from kernel.kafka import faust_broker_options, kafka_python_options, topic_config
from kernel.settings import EMBEDDED_GROUP_TIMEOUTS, load_settings

# A self-signed test CA (public certificate only; its key was discarded), so the TLS context
# really loads a CA bundle. Made with: openssl req -x509 -newkey ec -days 36500 -nodes.
_TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUKaShlEzg9dvH1OhLBHQFsMHxFoQwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQZ3B1bWV0ZXItdGVzdC1jYTAgFw0yNjExMjgxNzQzMzBaGA8y
MTI2MTEwNDE3NDMzMFowGzEZMBcGA1UEAwwQZ3B1bWV0ZXItdGVzdC1jYTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABOXIcHE9PwYtXiTT2THIfIOV2TkjYKvmg5R+
w62z+FiFJ50xi2Lyi4uSxzOCORcUVZwSQYtEPx8O2nEE+x6suNujUzBRMB0GA1Ud
DgQWBBQTDcy7Env86NLoUAbqqoSTXRY0mzAfBgNVHSMEGDAWgBQTDcy7Env86NLo
UAbqqoSTXRY0mzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDi
0eXovVzKf0nmtsBmFTh51AbSiuduT9dYZkAqDXD1+QIgXkeGfNInYFzoQ7ZbsiJV
EZGQVqcQKtX7LGtu13TCCkQ=
-----END CERTIFICATE-----
"""


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text(_TEST_CA_PEM)
    return path


def _settings(**overrides: object):
    return load_settings(environ={}, **overrides)


def test_plaintext_gives_only_the_protocol() -> None:
    assert kafka_python_options(_settings()) == {"security_protocol": "PLAINTEXT"}
    options = faust_broker_options(_settings())
    assert "broker_credentials" not in options


def test_sasl_ssl_with_scram_maps_to_kafka_python_keys(ca_file: Path) -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca_file,
    )
    assert kafka_python_options(settings) == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca_file),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "meter",
        "sasl_plain_password": "s3cret",
    }


def test_kafka_python_clients_accept_every_key_we_produce(ca_file: Path) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca_file,
    )
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(kafka_python_options(settings)) <= set(client.DEFAULT_CONFIG), client


def test_sasl_ssl_maps_to_faust_sasl_credentials_with_a_tls_context(ca_file: Path) -> None:
    import faust
    from faust.types.auth import AuthProtocol, SASLMechanism

    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca_file,
    )
    creds = faust_broker_options(settings)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol == AuthProtocol.SASL_SSL
    assert creds.mechanism == SASLMechanism.SCRAM_SHA_256
    assert (creds.username, creds.password) == ("meter", "s3cret")
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname
    assert creds.ssl_context.cert_store_stats()["x509_ca"] == 1  # exactly our CA, loaded
    assert "s3cret" not in repr(creds)


def test_sasl_plaintext_maps_to_faust_sasl_credentials_without_tls() -> None:
    from faust.types.auth import AuthProtocol, SASLMechanism

    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
    )
    creds = faust_broker_options(settings)["broker_credentials"]
    assert creds.protocol == AuthProtocol.SASL_PLAINTEXT and creds.ssl_context is None
    assert creds.mechanism == SASLMechanism.PLAIN
    assert kafka_python_options(settings)["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_cafile" not in kafka_python_options(settings)


def test_ssl_maps_to_faust_ssl_credentials_using_the_system_store_without_a_ca_file() -> None:
    import faust
    from faust.types.auth import AuthProtocol

    settings = _settings(kafka_security_protocol="SSL")
    creds = faust_broker_options(settings)["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol == AuthProtocol.SSL
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert kafka_python_options(settings) == {
        "security_protocol": "SSL",
        "ssl_check_hostname": True,
    }


def test_faust_gets_the_group_timeouts_and_replication_factor() -> None:
    options = faust_broker_options(_settings(kafka_replication_factor=1, **EMBEDDED_GROUP_TIMEOUTS))
    assert options["broker_rebalance_timeout"] == 6.0
    assert options["broker_session_timeout"] == 6.0
    assert options["broker_heartbeat_interval"] == 1.0
    assert options["topic_replication_factor"] == 1


def test_faust_app_accepts_the_options() -> None:
    import faust

    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="meter",
        kafka_sasl_password="s3cret",
    )
    app = faust.App(
        "options-check", broker="kafka://localhost:9092", **faust_broker_options(settings)
    )
    assert app.conf.broker_credentials.username == "meter"
    assert app.conf.broker_session_timeout == 45.0


def test_topic_config_keeps_a_billing_period() -> None:
    assert topic_config(_settings())["retention.ms"] == str(35 * 86_400_000)
