"""Kafka settings: the bootstrap list, consumer-group timeouts, security (SASL, TLS) and the
usage topic's retention, each refused with the variable named."""

from __future__ import annotations

import pytest

from kernel.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    "value",
    [
        "not a host",
        "kafka",
        "kafka:",
        ":9092",
        "kafka:0",
        "kafka:70000",
        "kafka:9092,",
        "kafka://kafka:9092",
        "bad_host!:9092",
        "[zz::1]:9092",
        "",
    ],
)
def test_a_bad_bootstrap_is_a_clear_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv("GPUMETER_KAFKA_BOOTSTRAP", value)
    with pytest.raises(SettingsError, match="GPUMETER_KAFKA_BOOTSTRAP"):
        load_settings()


def test_good_bootstraps_are_accepted_and_normalized(monkeypatch) -> None:
    from kernel.dsn import parse_bootstrap

    assert parse_bootstrap("kafka-0.kafka.svc:9092, 10.0.0.7:9093,[::1]:29092") == [
        ("kafka-0.kafka.svc", 9092),
        ("10.0.0.7", 9093),
        ("[::1]", 29092),
    ]
    monkeypatch.setenv("GPUMETER_KAFKA_BOOTSTRAP", "a:1, b:2")
    assert load_settings().kafka_bootstrap == "a:1,b:2"


# --- production settings --------------------------------------------------------------------


def test_group_timeout_defaults_fit_a_real_cluster_and_embedded_ones_are_explicit() -> None:
    from kernel.settings import EMBEDDED_GROUP_TIMEOUTS

    production = load_settings()
    assert (
        production.kafka_rebalance_timeout_s,
        production.kafka_session_timeout_s,
        production.kafka_heartbeat_interval_s,
    ) == (60.0, 45.0, 3.0)
    embedded = load_settings(**EMBEDDED_GROUP_TIMEOUTS)
    assert (
        embedded.kafka_rebalance_timeout_s,
        embedded.kafka_session_timeout_s,
        embedded.kafka_heartbeat_interval_s,
    ) == (6.0, 6.0, 1.0)


def test_sasl_needs_its_companions_and_all_missing_ones_are_named(monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError) as err:
        load_settings()
    for name in ("MECHANISM", "USERNAME", "PASSWORD"):
        assert f"GPUMETER_KAFKA_SASL_{name}: required with" in str(err.value)


def test_security_values_outside_the_closed_sets_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_KAFKA_SECURITY_PROTOCOL", "TLS")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "GPUMETER_KAFKA_SECURITY_PROTOCOL" in str(err.value)
    assert "GPUMETER_KAFKA_SASL_MECHANISM" in str(err.value)


def test_sasl_settings_without_a_sasl_protocol_are_a_mistake(monkeypatch, tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_USERNAME", "meter")
    monkeypatch.setenv("GPUMETER_KAFKA_SSL_CAFILE", str(ca))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "GPUMETER_KAFKA_SASL_USERNAME: set, but" in str(err.value)
    assert "GPUMETER_KAFKA_SSL_CAFILE: set, but" in str(err.value)


def test_retention_must_cover_a_billing_period_unless_explicitly_allowed(monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_KAFKA_RETENTION_DAYS", "7")
    with pytest.raises(SettingsError, match="GPUMETER_KAFKA_RETENTION_DAYS: 7 days cannot rebuild"):
        load_settings()
    monkeypatch.setenv("GPUMETER_KAFKA_ALLOW_SHORT_RETENTION", "true")
    assert load_settings().kafka_retention_days == 7


def test_heartbeat_must_fit_three_times_in_the_session(monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_KAFKA_SESSION_TIMEOUT_S", "10")
    monkeypatch.setenv("GPUMETER_KAFKA_HEARTBEAT_INTERVAL_S", "5")
    with pytest.raises(SettingsError, match="GPUMETER_KAFKA_HEARTBEAT_INTERVAL_S"):
        load_settings()
