"""The production images of infra/compose.yaml, started by testcontainers: our clients work
against real Apache Kafka (KRaft) and a real ClickHouse server, not only the embedded runtime.

Skips, saying why, where no Docker engine answers (development and CI machines here have none).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.integration]

# The same images as infra/compose.yaml: what is tested is what is deployed.
KAFKA_IMAGE = "apache/kafka:3.9.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.3"


def _docker_unavailable() -> str | None:
    """Why Docker cannot be used here, or None when an engine answers."""
    try:
        import docker
        import requests
    except ImportError:
        return "the docker SDK is not installed (pip install -e '.[test]')"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    # "No engine" arrives as any of these, depending on socket, TLS and SDK version.
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
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
    from kernel.clickhouse import connect
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


# --- ClickHouse cluster mode on a real server ------------------------------------------------

#: One server that is its own cluster: one shard, one replica, Keeper embedded. Enough to run
#: every ON CLUSTER statement, the Replicated engines (they need Keeper) and the Distributed
#: tables for real, which chDB cannot (tests/unit/test_cluster_ddl.py says what it covers).
CLUSTER_CONFIG = """<clickhouse>
  <remote_servers>
    <gpumeter><shard><replica><host>localhost</host><port>9000</port></replica></shard></gpumeter>
  </remote_servers>
  <macros><shard>01</shard><replica>r1</replica></macros>
  <keeper_server>
    <tcp_port>9181</tcp_port>
    <server_id>1</server_id>
    <log_storage_path>/var/lib/clickhouse/coordination/log</log_storage_path>
    <snapshot_storage_path>/var/lib/clickhouse/coordination/snapshots</snapshot_storage_path>
    <raft_configuration><server><id>1</id><hostname>localhost</hostname><port>9234</port></server></raft_configuration>
  </keeper_server>
  <zookeeper><node><host>localhost</host><port>9181</port></node></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</clickhouse>
"""


@pytest.fixture(scope="module")
def clickhouse_cluster_server(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(dsn, password) of a ClickHouse server configured as the one-node cluster `gpumeter`."""
    from testcontainers.community.clickhouse import ClickHouseContainer

    config = tmp_path_factory.mktemp("ch-cluster") / "gpumeter-cluster.xml"
    config.write_text(CLUSTER_CONFIG)
    container = ClickHouseContainer(
        CLICKHOUSE_IMAGE, username="gpumeter", password="it-secret"
    ).with_volume_mapping(str(config), "/etc/clickhouse-server/config.d/gpumeter-cluster.xml")
    with container as ch:
        host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
        yield f"http://gpumeter@{host}:{port}", "it-secret"


def test_cluster_migrations_create_replicated_and_distributed_tables(
    clickhouse_cluster_server: tuple[str, str],
) -> None:
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate

    dsn, password = clickhouse_cluster_server
    database = f"it_{uuid.uuid4().hex[:10]}"
    # given a database created on every node of the cluster
    client = connect(dsn, database=database, password=password, cluster="gpumeter")
    # when the migrations run in cluster mode, twice
    applied = migrate(client, raw_ttl_days=400, cluster="gpumeter")
    again = migrate(client, raw_ttl_days=400, cluster="gpumeter")
    # then every table is a Replicated *_local table behind a Distributed one
    assert applied and again == []
    engines = dict(
        client.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    )
    assert engines["usage_minutely_local"] == "ReplicatedAggregatingMergeTree"  # union ledger
    assert engines["usage_minutely"] == "Distributed"
    assert engines["gpumeter_migrations"] == "ReplicatedMergeTree"
    # and a ledger row written through the Distributed table reads back exactly via the views
    client.command(
        "INSERT INTO usage_minutely (minute, tenant, job, gpu_uuid, claimed_mask) "
        "SETTINGS distributed_foreground_insert = 1 "
        "VALUES ('2026-11-01 00:00:00', 'acme', 'j', 'GPU-1', 1152921504606846975)"
    )
    assert client.query("SELECT sum(gpu_seconds) FROM usage_daily").result_rows == [(60,)]


# --- the pipeline end to end on the production images ----------------------------------------


def test_agent_and_worker_meter_exactly_on_real_kafka_and_clickhouse(
    kafka_bootstrap: str, clickhouse_server: tuple[str, str], tmp_path: Path
) -> None:
    """The demo's check on the deployed components: 2 simulated GPUs for 10 minutes through
    `gpumeter agent` and `gpumeter worker` end up as exactly 1,200 GPU-seconds in the ledger."""
    from kernel.clickhouse import connect

    dsn, password = clickhouse_server
    database = f"it_{uuid.uuid4().hex[:10]}"
    connect(dsn, database=database, password=password).close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPUMETER_")},
        "GPUMETER_DATA_DIR": str(tmp_path),
        "GPUMETER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "GPUMETER_CLICKHOUSE_DSN": f"{dsn}/{database}",
        "GPUMETER_CLICKHOUSE_PASSWORD": password,
        "GPUMETER_KAFKA_REPLICATION_FACTOR": "1",
        # the broker auto-creates the topic with its default of one partition
        "GPUMETER_USAGE_PARTITIONS": "1",
        # a test: short group timeouts, as on the embedded broker
        "GPUMETER_KAFKA_REBALANCE_TIMEOUT_S": "6",
        "GPUMETER_KAFKA_SESSION_TIMEOUT_S": "6",
        "GPUMETER_KAFKA_HEARTBEAT_INTERVAL_S": "1",
    }
    gpumeter = [sys.executable, "-m", "gpumeter.cli"]
    agent = subprocess.run(
        [
            *gpumeter,
            "agent",
            "--simulate",
            "--nodes",
            "1",
            "--gpus",
            "2",
            "--duration",
            "10m",
            "--speed",
            "max",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert agent.returncode == 0, agent.stderr[-2000:]
    worker = subprocess.run(
        [*gpumeter, "worker", "--exit-when-idle", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    client = connect(f"{dsn}/{database}", password=password)
    assert client.query("SELECT sum(gpu_seconds) FROM usage_minutely FINAL").result_rows == [
        (1200,)
    ]
