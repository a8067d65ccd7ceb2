"""`gpumeter db migrate --cluster NAME`: the single-node migrations transformed into Replicated
tables behind Distributed ones (schemas/clickhouse/cluster.py), checked without a server: the
transform over the real migration files, a golden example of each statement kind, what is
refused, and the single-node path running exactly the statements in the files. The same DDL
in ClickHouse's own parser and engine: test_cluster_ddl_chdb.py.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from schemas.clickhouse.migrate import (
    SHARDING_KEYS,
    ClusterDDL,
    MigrationError,
    cluster_plan,
    discover,
    migrate,
)
from tests.unit.migration_tables import CLUSTER, DATABASE, columns_of, single_node_tables

# --- pure: the transform over the real migration files ---------------------------------------


def test_every_table_becomes_a_replicated_local_table_behind_a_distributed_one() -> None:
    ddl, plan = cluster_plan(CLUSTER, DATABASE)
    statements = [s for _, stmts in plan for s in stmts]
    for name in single_node_tables():
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
    for name, order_by in single_node_tables().items():
        if name not in ddl.tables:
            continue  # created and dropped by the migrations
        key = ddl.tables[name].sharding_key
        assert columns_of(key) <= columns_of(order_by), (name, key, order_by)
        assert key.startswith("cityHash64("), key  # an integer, spread evenly


def test_stated_keys_name_existing_tables_and_the_ledger_is_sharded_by_gpu() -> None:
    tables = single_node_tables()
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
    assert ddl.ttl("t", "ts", 7) == "ALTER TABLE t ON CLUSTER c1 MODIFY TTL ts + INTERVAL 7 DAY"


def test_an_alter_mixing_column_and_table_ops_mirrors_only_the_column_ops() -> None:
    # given a sharded table and one ALTER that adds columns (commas inside their types, default
    # and comment) and extends the sorting key, as migration 0030 does
    ddl = ClusterDDL("c1", "db")
    ddl.transform("CREATE TABLE t (k String, v UInt64)\nENGINE = MergeTree\nORDER BY k")
    add_map = "ADD COLUMN m Map(String, Tuple(UInt8, UInt8)) DEFAULT map('a,b', (1, 2))"
    comment = "COMMENT COLUMN m 'x, (y'"
    sort = "MODIFY ORDER BY (k, m)"
    # when it is transformed
    out = ddl.transform(f"ALTER TABLE t {add_map}, {sort}, {comment}")
    # then the local table gets every op as written, the Distributed one the column ops only
    assert out == [
        f"ALTER TABLE t_local ON CLUSTER c1 {add_map}, {sort}, {comment}",
        f"ALTER TABLE t ON CLUSTER c1 {add_map}, {comment}",
    ]
    # and an ALTER without a column op leaves the Distributed table alone
    assert ddl.transform(f"ALTER TABLE t {sort}") == [f"ALTER TABLE t_local ON CLUSTER c1 {sort}"]


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
        "ALTER TABLE usage_frames MODIFY TTL minute + INTERVAL 400 DAY",
    ]
    assert client.commands == expected
    assert [r[2] for r in client.inserted] == [m.checksum for m in discover()]
