"""Settings -> Kafka client options, for the two clients gpumeter uses.

- :func:`kafka_python_options`: keyword arguments for kafka-python's ``KafkaProducer`` (the
  node agent) and ``KafkaConsumer`` / ``KafkaAdminClient``: security only, the keys all three
  accept (``KafkaProducer`` refuses unknown keys).
- :func:`faust_broker_options`: keyword arguments for ``faust.App`` (the stream worker):
  ``broker_credentials`` plus the consumer-group timeouts.

Pure functions of the settings (the one side effect: a TLS context reads the CA file), so the
worker and the agent get the same security from the same variables, and tests can check the
mapping without a broker.
"""

from __future__ import annotations

import ssl
from typing import Any

from kernel.settings import Settings


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """``KafkaProducer(bootstrap_servers=..., **kafka_python_options(settings))``.

    PLAINTEXT gives ``{"security_protocol": "PLAINTEXT"}`` only; TLS adds ``ssl_cafile`` when
    a CA bundle is configured (otherwise kafka-python uses the system trust store, and checks
    the broker's host name either way); SASL adds the mechanism and the credentials.
    """
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_check_hostname"] = True
        if settings.kafka_ssl_cafile is not None:
            options["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # Settings refuses SASL without it
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """``faust.App(id, broker=..., **faust_broker_options(settings))``.

    Faust's documented way (faust-streaming, "Authentication"): ``broker_credentials`` is a
    ``faust.SSLCredentials(context)`` for SSL, or a ``faust.SASLCredentials(username=...,
    password=..., mechanism=..., ssl_context=...)`` whose protocol is SASL_SSL when it has an
    ``ssl_context`` and SASL_PLAINTEXT otherwise. The TLS context is built here, not by
    ``SSLCredentials(cafile=...)``: that path calls ``ssl.create_default_context(purpose=None)``
    in the installed faust-streaming, which raises ``TypeError``.
    """
    import faust

    options: dict[str, Any] = {
        "broker_rebalance_timeout": settings.kafka_rebalance_timeout_s,
        "broker_session_timeout": settings.kafka_session_timeout_s,
        "broker_heartbeat_interval": settings.kafka_heartbeat_interval_s,
        # Faust's own topics (table changelogs) get the same durability as ours.
        "topic_replication_factor": settings.kafka_replication_factor,
    }
    protocol = settings.kafka_security_protocol
    context = _tls_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        options["broker_credentials"] = faust.SSLCredentials(context)
    elif protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # Settings refuses SASL without it
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return options


def topic_config(settings: Settings) -> dict[str, str]:
    """Topic-level configs for the usage topic (``NewTopic(topic_configs=...)``): retention
    long enough to rebuild a billing period; never deleted by size."""
    return {
        "retention.ms": str(settings.kafka_retention_days * 86_400_000),
        "retention.bytes": "-1",
    }


def _tls_context(settings: Settings) -> ssl.SSLContext:
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    # SERVER_AUTH: we are the client verifying the broker (host name checked, cert required).
    return ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=cafile)
