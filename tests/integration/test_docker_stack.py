"""The production images of infra/compose.yaml, started by testcontainers: our clients work
against real Apache Kafka (KRaft) and a real ClickHouse server, not only the embedded runtime.

Skips, saying why, where no Docker engine answers (development and CI machines here have none).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.integration]

# The same images as infra/compose.yaml: what is tested is what is deployed.
KAFKA_IMAGE = "apache/kafka:3.9.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.3"


def _docker_unavailable() -> str | None:
    """Why Docker cannot be used here, or None when an engine answers."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed (pip install -e '.[test]')"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="module")
def docker_engine() -> None:
    reason = _docker_unavailable()
    if reason:
        pytest.skip(f"needs a Docker engine for testcontainers: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kafka_bootstrap(docker_engine: None) -> Iterator[str]:
    """A single-node KRaft broker from the official apache/kafka image.

    testcontainers' KafkaContainer drives Confluent's image through Confluent's start scripts,
    so it cannot start apache/kafka; a DockerContainer does. The advertised listener must be
    the address the test dials, known before start: bind one free host port to the same
    container port (a local Docker engine is assumed, as everywhere in this suite).
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = _free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://:{port},CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{port}")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )
    with container:
        yield f"localhost:{port}"


@pytest.fixture(scope="module")
def clickhouse_server(docker_engine: None) -> Iterator[tuple[str, str]]:
    """(dsn, password) of a ClickHouse server from the official image."""
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(CLICKHOUSE_IMAGE, username="gpumeter", password="it-secret") as ch:
        host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
        yield f"http://gpumeter@{host}:{port}", "it-secret"


def test_kafka_python_produces_and_consumes_one_lz4_record(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    # given a fresh topic on the real broker
    topic = f"it.{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    # when one record is produced the way the agent produces (lz4, acks=all)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", compression_type="lz4")
    producer.send(topic, key=b"node-1", value=b'{"schema_version": 1}').get(timeout=30)
    producer.close()
    # then a consumer reads it back unchanged
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    records = [(r.key, r.value) for r in consumer]
    consumer.close()
    assert records == [(b"node-1", b'{"schema_version": 1}')]


def test_migrations_apply_on_a_clickhouse_server_and_are_idempotent(
    clickhouse_server: tuple[str, str],
) -> None:
    from gpumeter.clickhouse import connect
    from schemas.clickhouse.migrate import migrate

    dsn, password = clickhouse_server
    # given a fresh database on the real server, through the project's own connector
    client = connect(dsn, database=f"it_{uuid.uuid4().hex[:10]}", password=password)
    # when the migrations run twice
    applied = migrate(client)
    again = migrate(client)
    # then all applied the first time, none the second, and the ledger tables exist
    assert applied and again == []
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert "gpumeter_migrations" in tables and len(tables) > 1
