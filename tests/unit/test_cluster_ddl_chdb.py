"""`gpumeter db migrate --cluster NAME`: the cluster DDL (schemas/clickhouse/cluster.py) in
ClickHouse's own parser and engine, chDB.

What runs where (no ClickHouse cluster and no Keeper can run here):
- pure checks of the transform, and the single-node path running exactly the statements in the
  files (test_cluster_ddl.py);
- every generated statement parsed by ClickHouse's own parser (chDB ``formatQuery``);
- the DDL applied to chDB with only what needs a cluster substituted (ON CLUSTER dropped,
  Replicated engines without their Keeper path, Distributed -> Merge), then every view queried;
- the Distributed tables created for real, exactly as generated minus ON CLUSTER, in a chDB
  given a <remote_servers> config (a subprocess: chDB takes one configuration per process);
- cluster mode refused on a server without the cluster, and on a single-node database.
chDB refuses ON CLUSTER ("Replicated DDL queries are disabled") and cannot reach a Keeper, so
ON CLUSTER and the Replicated engines themselves run only in the Docker test
(tests/integration/test_docker_stack.py) where a Docker engine exists.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from schemas.clickhouse.migrate import MigrationError, cluster_plan, migrate
from tests.unit.migration_tables import CLUSTER, DATABASE, single_node_tables

# --- chDB: ClickHouse's own parser and engine ------------------------------------------------


@pytest.fixture
def chdb_database(chdb_path: Path):
    """A fresh, empty database in the session's embedded engine."""
    from kernel.clickhouse import connect

    db = f"c_{uuid.uuid4().hex[:12]}"
    client = connect(f"chdb://{chdb_path}", database=db)
    yield client, db
    client.command(f"DROP DATABASE IF EXISTS {db}")


def _formatted(client, sql: str) -> str:
    return client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]


def test_every_cluster_statement_parses_in_clickhouse(chdb_database) -> None:
    client, db = chdb_database
    _, plan = cluster_plan(CLUSTER, db)
    for _, statements in plan:
        for stmt in statements:
            formatted = _formatted(client, stmt)  # raises on a syntax error
            if not stmt.startswith("INSERT"):  # an INSERT goes through a Distributed table once
                assert f"ON CLUSTER {CLUSTER}" in formatted


def test_the_ledger_ddl_means_what_it_should(chdb_database) -> None:
    client, _ = chdb_database
    _, plan = cluster_plan(CLUSTER, DATABASE)
    front = next(
        s
        for _, ss in plan
        for s in ss
        if s.startswith("CREATE TABLE IF NOT EXISTS usage_minutely ")
    )
    assert _formatted(client, front) == _formatted(
        client,
        "CREATE TABLE IF NOT EXISTS usage_minutely ON CLUSTER gpumeter AS usage_minutely_local "
        "ENGINE = Distributed(gpumeter, ledger, usage_minutely_local, cityHash64(gpu_uuid))",
    )


def _without_cluster(stmt: str) -> tuple[str, tuple[str, str] | None]:
    """What chDB can execute: no ON CLUSTER, no Keeper path; Distributed -> Merge over the
    local table. Returns the statement and, for a Distributed one, (local table, key)."""
    stmt = re.sub(rf" ON CLUSTER {CLUSTER}\b", "", stmt)
    # one node stands for every shard: a copy between Distributed tables writes the local one
    stmt = re.sub(r"^INSERT INTO (\w+)", r"INSERT INTO \1_local", stmt)
    stmt = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?", r"\1(", stmt)
    m = re.search(r"ENGINE = Distributed\(\w+, (\w+), (\w+), (.+)\)$", stmt)
    if m is None:
        return stmt, None
    return stmt[: m.start()] + f"ENGINE = Merge({m.group(1)}, '^{m.group(2)}$')", (
        m.group(2),
        m.group(3),
    )


def test_cluster_ddl_applies_to_chdb_where_its_syntax_allows_and_the_views_read_through(
    chdb_database,
) -> None:
    # given the cluster DDL with only the cluster-only parts substituted
    client, db = chdb_database
    _, plan = cluster_plan(CLUSTER, db)
    for _, statements in plan:
        for stmt in statements:
            runnable, distributed = _without_cluster(stmt)
            client.command(runnable)
            if distributed:  # the sharding key is a valid integer expression on the local table
                local, key = distributed
                kind = client.query(f"DESCRIBE (SELECT {key} AS k FROM {local})").result_rows
                # a bad column would raise; over a LowCardinality column the hash is
                # LowCardinality(UInt64), which Distributed accepts (created for real below)
                assert kind[0][1] in ("UInt64", "LowCardinality(UInt64)"), (local, key, kind)
    # when two partial states of one ledger minute land (on the one shard the key picks)
    client.command(
        "INSERT INTO usage_minutely_local (minute, tenant, job, gpu_uuid, claimed_mask) "
        "VALUES ('2026-11-01 00:00:00', 'acme', 'j', 'GPU-1', 1073741823)"  # seconds 0-29
    )
    client.command(
        "INSERT INTO usage_minutely_local (minute, tenant, job, gpu_uuid, claimed_mask) "
        "VALUES ('2026-11-01 00:00:00', 'acme', 'j', 'GPU-1', 1152921503533105152)"  # 30-59
    )
    # then the views over the front table read their union once
    assert client.query("SELECT sum(gpu_seconds) FROM usage_daily").result_rows == [(60,)]
    assert client.query(
        "SELECT gpu_seconds FROM tenant_usage_daily(tenant = 'acme')"
    ).result_rows == [(60,)]
    assert client.query("SELECT count() FROM utilization_daily").result_rows == [(1,)]


def test_distributed_tables_are_created_as_generated_in_a_chdb_with_a_cluster_config(
    tmp_path: Path,
) -> None:
    # given a chDB whose configuration defines the cluster and the macros (own process: chDB
    # takes one configuration and data directory per process)
    config = tmp_path / "cluster.xml"
    config.write_text(
        f"<clickhouse><remote_servers><{CLUSTER}><shard><replica><host>localhost</host>"
        f"<port>9000</port></replica></shard></{CLUSTER}></remote_servers>"
        "<macros><shard>01</shard><replica>r1</replica></macros></clickhouse>"
    )
    # chDB refuses ON CLUSTER and has no Keeper: the local tables go in without replication;
    # the Distributed statements run exactly as generated otherwise
    _, plan = cluster_plan(CLUSTER, DATABASE)
    creates = [
        re.sub(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?", r"\1(", stmt).replace(
            f" ON CLUSTER {CLUSTER}", ""
        )
        for _, statements in plan
        for stmt in statements
        if stmt.startswith("CREATE TABLE")
    ]
    (tmp_path / "ddl.json").write_text(json.dumps(creates))
    script = textwrap.dedent(f"""
        import json
        from chdb import session
        s = session.Session("{tmp_path / "data"}?config-file={config}")
        s.query("CREATE DATABASE {DATABASE}")
        s.query("USE {DATABASE}")
        for stmt in json.loads(open("{tmp_path / "ddl.json"}").read()):
            s.query(stmt)
        print(s.query("SELECT count() FROM system.tables WHERE database = '{DATABASE}' "
                      "AND engine = 'Distributed'", "CSV").bytes().decode().strip())
    """)
    # when the statements run
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    # then every Distributed table exists with the engine clause as generated
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.strip()) == len(single_node_tables())


def test_migrate_with_a_cluster_refuses_a_server_without_one(chdb_database) -> None:
    client, _ = chdb_database
    with pytest.raises(
        MigrationError, match="cluster 'gpumeter' is not defined.*macro \\{shard\\}"
    ):
        migrate(client, cluster=CLUSTER)


def test_a_single_node_database_is_not_taken_over_by_cluster_mode(clickhouse) -> None:
    with pytest.raises(MigrationError, match="migrated for a single node"):
        migrate(clickhouse, cluster=CLUSTER)
