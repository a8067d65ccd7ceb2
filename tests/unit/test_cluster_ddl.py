"""`gpumeter db migrate --cluster NAME`: the single-node migrations transformed into Replicated
tables behind Distributed ones (schemas/clickhouse/migrate.py, "cluster mode").

What runs where (no ClickHouse cluster and no Keeper can run here):
- pure checks of the transform over the real migration files, and a golden example;
- every generated statement parsed by ClickHouse's own parser (chDB ``formatQuery``);
- the DDL applied to chDB with only what needs a cluster substituted (ON CLUSTER dropped,
  Replicated engines without their Keeper path, Distributed -> Merge), then every view queried;
- the Distributed tables created for real, exactly as generated minus ON CLUSTER, in a chDB
  given a <remote_servers> config (a subprocess: chDB takes one configuration per process);
- the single-node path runs exactly the statements in the files.
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

from schemas.clickhouse.migrate import (
    SHARDING_KEYS,
    ClusterDDL,
    MigrationError,
    cluster_plan,
    discover,
    migrate,
)

CLUSTER, DATABASE = "gpumeter", "ledger"
_FUNCTION = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_IDENTIFIER = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\b")


def _columns_of(expression: str) -> set[str]:
    functions = set(_FUNCTION.findall(expression))
    return {name for name in _IDENTIFIER.findall(expression) if name not in functions}


def _single_node_tables() -> dict[str, str]:
    """name -> ORDER BY expression of every MergeTree table the files create."""
    out = {}
    for m in discover():
        for stmt in m.statements():
            if t := re.match(r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", stmt, re.I):
                order = re.search(r"^ORDER\s+BY\s+(.+?)\s*$", stmt, re.M | re.I)
                assert order, stmt
                out[t.group(1)] = order.group(1)
    return out


# --- pure: the transform over the real migration files ---------------------------------------


def test_every_table_becomes_a_replicated_local_table_behind_a_distributed_one() -> None:
    ddl, plan = cluster_plan(CLUSTER, DATABASE)
    statements = [s for _, stmts in plan for s in stmts]
    for name in _single_node_tables():
        if name not in ddl.tables:
            continue  # created and dropped by the migrations (0003's copy of the ledger)
        local = [s for s in statements if re.match(rf"CREATE TABLE IF NOT EXISTS {name}_local ", s)]
        front = [s for s in statements if re.match(rf"CREATE TABLE IF NOT EXISTS {name} ", s)]
        # one pair per creation (0003 drops the 0001 ledger and creates it again, union-merged)
        assert len(local) == len(front) >= 1, name
        assert f"ON CLUSTER {CLUSTER}" in local[-1]
        assert re.search(
            r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{shard\}/\{database\}/\{table\}', '\{replica\}'",
            local[-1],
        ), name
        assert front[-1].endswith(
            f"AS {name}_local\nENGINE = Distributed({CLUSTER}, {DATABASE}, {name}_local, "
            f"{ddl.tables[name].sharding_key})"
        )


def test_engine_arguments_and_table_clauses_survive_the_transform() -> None:
    _, plan = cluster_plan(CLUSTER, DATABASE)
    by_head: dict[str, list[str]] = {}
    for _, stmts in plan:
        for s in stmts:
            by_head.setdefault(s.split("\n", 1)[0], []).append(s)
    for m in discover():
        for stmt in m.statements():
            t = re.match(r"^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", stmt)
            if not t:
                continue
            engine = re.search(r"^ENGINE = (\w+)(?:\((.*)\))?$", stmt, re.M)
            assert engine
            args = f", {engine.group(2)}" if engine.group(2) else ""
            # the local table made of this statement (a name may be created more than once)
            locals_ = by_head[f"CREATE TABLE IF NOT EXISTS {t.group(1)}_local ON CLUSTER {CLUSTER}"]
            columns = stmt.split("ENGINE =")[0].split("\n", 1)[1]
            [local] = [candidate for candidate in locals_ if columns in candidate]
            assert (
                f"Replicated{engine.group(1)}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}'{args})"
                in local
            )
            # the PARTITION BY, ORDER BY, TTL and comments are untouched
            assert stmt.split("\n", stmt.count("\n"))[-1] in local


def test_every_sharding_key_uses_only_columns_of_the_row_identity() -> None:
    # Every version of a row must reach the same shard, or ReplacingMergeTree/FINAL cannot
    # collapse them: the key may only read ORDER BY columns.
    ddl, _ = cluster_plan(CLUSTER, DATABASE)
    for name, order_by in _single_node_tables().items():
        if name not in ddl.tables:
            continue  # created and dropped by the migrations
        key = ddl.tables[name].sharding_key
        assert _columns_of(key) <= _columns_of(order_by), (name, key, order_by)
        assert key.startswith("cityHash64("), key  # an integer, spread evenly


def test_stated_keys_name_existing_tables_and_the_ledger_is_sharded_by_gpu() -> None:
    tables = _single_node_tables()
    stale = [name for name in SHARDING_KEYS if name not in tables]
    assert not stale, f"sharding keys stated for tables no migration creates: {stale}"
    assert SHARDING_KEYS["usage_minutely"][0] == "cityHash64(gpu_uuid)"


def test_views_go_on_the_cluster_and_read_the_distributed_names() -> None:
    _, plan = cluster_plan(CLUSTER, DATABASE)
    views = [s for _, stmts in plan for s in stmts if s.startswith("CREATE VIEW")]
    assert views and all(f" ON CLUSTER {CLUSTER} AS" in v for v in views)
    assert not any("_local" in v for v in views)


def test_golden_example_of_each_statement_kind() -> None:
    # given a migration history in the style of the files
    ddl = ClusterDDL("c1", "db")
    create = textwrap.dedent("""\
        CREATE TABLE IF NOT EXISTS t
        (
            k   String,
            ts  DateTime('UTC'),   -- a comment (with parentheses)
            v   UInt64,
            del UInt8 DEFAULT 0
        )
        ENGINE = ReplacingMergeTree(v, del)
        PARTITION BY toYYYYMM(ts)
        ORDER BY (k, ts)
        TTL ts + INTERVAL 30 DAY""")
    # when each statement is transformed, then
    assert ddl.transform(create) == [
        create.replace(
            "CREATE TABLE IF NOT EXISTS t\n", "CREATE TABLE IF NOT EXISTS t_local ON CLUSTER c1\n"
        ).replace(
            "ENGINE = ReplacingMergeTree(v, del)",
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', v, del)",
        ),
        "CREATE TABLE IF NOT EXISTS t ON CLUSTER c1 AS t_local\n"
        "ENGINE = Distributed(c1, db, t_local, cityHash64(k, ts))",  # default: whole ORDER BY
    ]
    assert ddl.transform("ALTER TABLE t ADD COLUMN IF NOT EXISTS x String") == [
        "ALTER TABLE t_local ON CLUSTER c1 ADD COLUMN IF NOT EXISTS x String",
        "ALTER TABLE t ON CLUSTER c1 ADD COLUMN IF NOT EXISTS x String",
    ]
    assert ddl.transform("ALTER TABLE t MODIFY TTL ts + INTERVAL 1 DAY") == [
        "ALTER TABLE t_local ON CLUSTER c1 MODIFY TTL ts + INTERVAL 1 DAY",
    ]
    assert ddl.transform("CREATE VIEW IF NOT EXISTS v AS\nSELECT k FROM t FINAL") == [
        "CREATE VIEW IF NOT EXISTS v ON CLUSTER c1 AS\nSELECT k FROM t FINAL",
    ]
    assert ddl.transform("DROP TABLE IF EXISTS t") == [
        "DROP TABLE IF EXISTS t ON CLUSTER c1",
        "DROP TABLE IF EXISTS t_local ON CLUSTER c1",
    ]
    assert ddl.ttl("t", 7) == "ALTER TABLE t ON CLUSTER c1 MODIFY TTL ts + INTERVAL 7 DAY"


@pytest.mark.parametrize(
    "stmt",
    [
        "CREATE MATERIALIZED VIEW mv TO t AS SELECT 1",
        "CREATE TABLE m (a UInt8) ENGINE = Memory",
        "RENAME TABLE a TO b",
    ],
)
def test_what_cluster_mode_cannot_translate_is_refused_not_guessed(stmt: str) -> None:
    with pytest.raises(MigrationError, match="cluster mode"):
        ClusterDDL("c1", "db").transform(stmt)


def test_cluster_and_database_names_are_identifiers() -> None:
    with pytest.raises(MigrationError, match="invalid cluster name"):
        ClusterDDL("c1; DROP", "db")


# --- the single-node path is unchanged -------------------------------------------------------


class _RecordingClient:
    """Just enough of a clickhouse-connect client to record what migrate() runs."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.inserted: list[list[object]] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str, parameters: object = None) -> object:
        class _Result:
            result_rows: list[tuple[object, ...]] = []

        return _Result()

    def insert(self, table: str, rows: list[list[object]], column_names: list[str]) -> None:
        self.inserted.extend(rows)


def test_single_node_migrate_runs_exactly_the_statements_in_the_files() -> None:
    client = _RecordingClient()
    migrate(client, raw_ttl_days=400)  # type: ignore[arg-type]
    expected = [
        "CREATE TABLE IF NOT EXISTS gpumeter_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version",
        *[s for m in discover() for s in m.statements()],
        "ALTER TABLE usage_seconds MODIFY TTL ts + INTERVAL 400 DAY",
    ]
    assert client.commands == expected
    assert [r[2] for r in client.inserted] == [m.checksum for m in discover()]


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
    assert int(run.stdout.strip()) == len(_single_node_tables())


def test_migrate_with_a_cluster_refuses_a_server_without_one(chdb_database) -> None:
    client, _ = chdb_database
    with pytest.raises(
        MigrationError, match="cluster 'gpumeter' is not defined.*macro \\{shard\\}"
    ):
        migrate(client, cluster=CLUSTER)


def test_a_single_node_database_is_not_taken_over_by_cluster_mode(clickhouse) -> None:
    with pytest.raises(MigrationError, match="migrated for a single node"):
        migrate(clickhouse, cluster=CLUSTER)
