"""Ordered, idempotent ClickHouse migrations, tracked in ``gpumeter_migrations``.

Each migration (:mod:`schemas.clickhouse.migration`) applies once, in number order;
re-running is a no-op. An applied migration whose file has changed since is refused (fix
forward with a new migration instead). With a cluster, every statement is first translated
by :mod:`schemas.clickhouse.cluster`.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as DriverError

from schemas.clickhouse.cluster import SHARDING_KEYS, ClusterDDL, ShardedTable
from schemas.clickhouse.migration import MIGRATIONS_DIR, Migration, MigrationError, discover

__all__ = [
    "MIGRATIONS_DIR",
    "SHARDING_KEYS",
    "ClusterDDL",
    "Migration",
    "MigrationError",
    "ShardedTable",
    "cluster_plan",
    "discover",
    "migrate",
]


#: The raw archives and the time column their retention (GPUMETER_RAW_TTL_DAYS) counts from.
RAW_ARCHIVES = (("usage_seconds", "ts"), ("usage_frames", "minute"))


def migrate(
    client: Client, *, raw_ttl_days: int | None = None, cluster: str | None = None
) -> list[Migration]:
    """Apply pending migrations in order; return those applied now.

    ``cluster``: apply them to every node of that ClickHouse cluster (Replicated tables behind
    Distributed ones, see "cluster mode" below). Without it the statements run exactly as
    written in the files. A database is migrated in one mode for good: the other is refused.
    """
    _refuse_other_mode(client, cluster)
    if cluster:
        _check_cluster(client, cluster)
    ddl = ClusterDDL(cluster, _current_database(client)) if cluster else None
    _run(
        client,
        "the migrations table",
        ddl.migrations_table()
        if ddl
        else "CREATE TABLE IF NOT EXISTS gpumeter_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version",
    )
    applied = {
        int(v): c
        for v, c in client.query("SELECT version, checksum FROM gpumeter_migrations").result_rows
    }
    done = []
    for m in discover():
        # In cluster mode every statement goes through the transformer, applied or not: it
        # learns which names are sharded tables for the ALTERs and DROPs of later migrations.
        statements = m.statements()
        if ddl:
            statements = [s for stmt in statements for s in ddl.transform(stmt)]
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for stmt in statements:
            _run(client, f"migration {m.version:04d}_{m.name}", stmt)
        client.insert(
            "gpumeter_migrations",
            [[m.version, m.name, m.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(m)
    if raw_ttl_days is not None:
        # Re-applied every time so the setting, not the migration, decides retention; both
        # raw archives (v1's usage_seconds, v2's usage_frames) keep the same number of days.
        for table, column in RAW_ARCHIVES:
            _run(
                client,
                f"the raw archive TTL of {table}",
                ddl.ttl(table, column, raw_ttl_days)
                if ddl
                else f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {int(raw_ttl_days)} DAY",
            )
    return done


def _run(client: Client, what: str, stmt: str) -> None:
    """Run one statement; a server error names the migration and statement and keeps the
    server's code and name (in the message: ``Code: N. DB::Exception: ... (NAME)``)."""
    try:
        client.command(stmt)
    except DriverError as exc:
        head = " ".join(stmt.split())[:120]
        raise MigrationError(f"{what} failed at `{head}...`: {exc}") from exc


def _check_cluster(client: Client, cluster: str) -> None:
    """Refuse early, with every missing piece named, what would fail half-way through."""
    problems = []
    if not client.query(
        "SELECT count() FROM system.clusters WHERE cluster = {c:String}", parameters={"c": cluster}
    ).result_rows[0][0]:
        problems.append(
            f"cluster {cluster!r} is not defined (<remote_servers> in the server config)"
        )
    macros = {str(r[0]) for r in client.query("SELECT macro FROM system.macros").result_rows}
    for macro in ("shard", "replica"):
        if macro not in macros:
            problems.append(f"macro {{{macro}}} is not defined (<macros> in the server config)")
    if problems:
        raise MigrationError(
            "cannot migrate in cluster mode: " + "; ".join(problems) + " (infra/OPERATIONS.md)"
        )


def _current_database(client: Client) -> str:
    return str(client.query("SELECT currentDatabase()").result_rows[0][0])


def _refuse_other_mode(client: Client, cluster: str | None) -> None:
    rows = client.query(
        "SELECT engine FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'gpumeter_migrations'"
    ).result_rows
    if not rows:
        return
    replicated = str(rows[0][0]).startswith("Replicated")
    if cluster and not replicated:
        raise MigrationError(
            "this database was migrated for a single node (gpumeter_migrations is not "
            "replicated); cluster mode cannot take it over in place: migrate a new database "
            "with --cluster and copy the data (infra/OPERATIONS.md, 'Moving to a cluster')"
        )
    if not cluster and replicated:
        raise MigrationError(
            "this database was migrated in cluster mode: run `gpumeter db migrate --cluster NAME`"
        )


def cluster_plan(
    cluster: str, database: str
) -> tuple[ClusterDDL, list[tuple[Migration, list[str]]]]:
    """Every migration with its cluster statements, in order (pure: no client needed)."""
    ddl = ClusterDDL(cluster, database)
    return ddl, [
        (m, [s for stmt in m.statements() for s in ddl.transform(stmt)]) for m in discover()
    ]
