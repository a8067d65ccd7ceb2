"""Cluster mode of the migrations: single-node statements turned into cluster DDL.

The migration files are written for one node and are checksummed, so they are never edited
for a cluster. `migrate(client, cluster=NAME)` transforms each statement instead:

  CREATE TABLE t (...) ENGINE = XMergeTree(args) ...
    -> CREATE TABLE t_local ON CLUSTER c (...)
           ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/{table}',
                                         '{replica}', args) ...        (data, per shard)
       CREATE TABLE t ON CLUSTER c AS t_local
           ENGINE = Distributed(c, db, t_local, <sharding key>)       (what everyone reads)
  CREATE VIEW v ...            -> CREATE VIEW v ON CLUSTER c ...  (reads the Distributed t)
  ALTER TABLE t <ops>          -> every op on t_local (TTL, indexes, sorting key and settings
                                  live with the data); its column ops alone on t as well
  DROP TABLE t                 -> DROP t ON CLUSTER, then t_local ON CLUSTER

Every reader and writer keeps using the unsuffixed names, so no code changes for a cluster.
Anything else (materialized views, RENAME, ...) is refused rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.clickhouse.migration import MigrationError

#: The sharding rule: every version of a row must land on the same shard, because
#: ReplacingMergeTree collapses versions (and FINAL reads them) only within one shard; so a key
#: is an expression over columns of the table's ORDER BY (the row's identity) only. Within
#: that rule each key is chosen for the queries that table serves. A table missing here gets
#: cityHash64(<its whole ORDER BY>), which is always correct, and is listed by `db migrate`.
SHARDING_KEYS: dict[str, tuple[str, str]] = {
    "usage_seconds": (
        "cityHash64(gpu_uuid)",
        "a GPU's samples (and its MIG slices') on one shard: drill-down 'what did GPU X do' "
        "hits one shard; 100k GPUs spread evenly; time is not in the key, so a period scan "
        "runs on every shard in parallel",
    ),
    "usage_minutely": (
        "cityHash64(gpu_uuid)",
        "the ledger: all versions of a (minute, gpu, mig, tenant, job) row meet on one shard "
        "(FINAL is exact); a GPU's minutes stay together for the worker's state reload; by "
        "GPU, not tenant, so one large tenant cannot fill one shard",
    ),
    "usage_conflicts": ("cityHash64(gpu_uuid)", "next to the same GPU's ledger rows"),
    "usage_frames": (
        "cityHash64(gpu_uuid)",
        "the v2 raw archive, placed as usage_seconds: a GPU's frames (and its MIG slices') on "
        "one shard, so 'what did GPU X do' and the usage_raw_seconds view hit one shard",
    ),
    "usage_rejected": (
        "cityHash64(topic, partition, offset)",
        "a record's rejected samples together, keyed by source position like its identity",
    ),
    "usage_readmitted": (
        "cityHash64(topic, partition, offset)",
        "the same shard as the rejected row it re-admits",
    ),
    "invoices": (
        "cityHash64(tenant)",
        "a tenant's invoices and their lines on one shard (same key as invoice_lines)",
    ),
    "invoice_lines": ("cityHash64(tenant)", "with their invoice"),
    "billing_period_closes": ("cityHash64(period)", "a period's closes read together"),
    "billing_reservations": (
        "cityHash64(scope)",
        "every claim of one scope on one shard, so 'read every live claim back' sees them all "
        "(with synchronous distributed inserts, see infra/OPERATIONS.md)",
    ),
    "work_units": ("cityHash64(tenant, job)", "a job's work next to itself"),
    "asset_rates": ("cityHash64(gpu_model)", "a few rows; the identity"),
}

MIGRATIONS_TABLE_CLUSTER_DDL = (
    "CREATE TABLE IF NOT EXISTS gpumeter_migrations ON CLUSTER {cluster} (version UInt32, "
    "name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    # No {shard} in the path: one replica set spanning every node, so whichever node the next
    # `db migrate` connects to sees the same history. {replica} must be unique per node.
    "ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{{database}}/gpumeter_migrations', "
    "'{{replica}}') ORDER BY version"
)

_CREATE_TABLE = re.compile(
    r"^CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s*(?P<body>\(.*)$",
    re.S | re.I,
)
_ENGINE = re.compile(r"^ENGINE\s*=\s*(?P<engine>\w*MergeTree)\b", re.M | re.I)
_ORDER_BY = re.compile(r"^ORDER\s+BY\s+(?P<key>.+?)\s*$", re.M | re.I)
_CREATE_VIEW = re.compile(
    r"^CREATE\s+VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+(?P<rest>AS\b.*)$",
    re.S | re.I,
)
_ALTER = re.compile(r"^ALTER\s+TABLE\s+(?P<name>\w+)\s+(?P<rest>.*)$", re.S | re.I)
_COLUMN_OP = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.I)


def _alter_ops(rest: str) -> list[str]:
    """The comma-separated operations of one ALTER, split at top level (not inside brackets
    or quotes)."""
    ops, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            ops.append(rest[start:i].strip())
            start = i + 1
    ops.append(rest[start:].strip())
    return [op for op in ops if op]


_DROP = re.compile(r"^DROP\s+(?P<kind>TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>\w+)\s*$", re.I)


@dataclass(frozen=True)
class ShardedTable:
    name: str
    sharding_key: str
    reason: str

    @property
    def local(self) -> str:
        return f"{self.name}_local"


class ClusterDDL:
    """Turns single-node migration statements into cluster DDL, statement by statement, in
    migration order (it remembers which names are sharded tables for later ALTER/DROP)."""

    def __init__(self, cluster: str, database: str) -> None:
        for what, value in (("cluster", cluster), ("database", database)):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                raise MigrationError(f"invalid {what} name {value!r}")
        self.cluster = cluster
        self.database = database
        self.tables: dict[str, ShardedTable] = {}

    def migrations_table(self) -> str:
        return MIGRATIONS_TABLE_CLUSTER_DDL.format(cluster=self.cluster)

    def ttl(self, table: str, column: str, raw_ttl_days: int) -> str:
        local = self.tables[table].local if table in self.tables else table
        return (
            f"ALTER TABLE {local} ON CLUSTER {self.cluster} "
            f"MODIFY TTL {column} + INTERVAL {int(raw_ttl_days)} DAY"
        )

    def transform(self, stmt: str) -> list[str]:
        on = f"ON CLUSTER {self.cluster}"
        if m := _CREATE_TABLE.match(stmt):
            return self._create_table(m.group("name"), m.group("ine") or "", m.group("body"))
        if m := _CREATE_VIEW.match(stmt):
            return [f"CREATE VIEW {m.group('ine') or ''}{m.group('name')} {on} {m.group('rest')}"]
        if m := _ALTER.match(stmt):
            name, rest = m.group("name"), m.group("rest")
            table = self.tables.get(name)
            if table is None:
                return [f"ALTER TABLE {name} {on} {rest}"]
            out = [f"ALTER TABLE {table.local} {on} {rest}"]
            # the Distributed table mirrors the columns (only: no sorting key, TTL, ...)
            columns = [op for op in _alter_ops(rest) if _COLUMN_OP.match(op)]
            if columns:
                out.append(f"ALTER TABLE {name} {on} {', '.join(columns)}")
            return out
        if m := _DROP.match(stmt):
            kind, ie, name = m.group("kind").upper(), m.group("ie") or "", m.group("name")
            out = [f"DROP {kind} {ie}{name} {on}"]
            if name in self.tables:
                out.append(f"DROP TABLE {ie}{self.tables.pop(name).local} {on}")
            return out
        if re.match(r"^INSERT\s+INTO\b", stmt, re.I):
            return [stmt]  # through the Distributed table: rows go to their shards
        raise MigrationError(
            f"cluster mode cannot translate this statement (extend ClusterDDL.transform in "
            f"schemas/clickhouse/cluster.py): {stmt.splitlines()[0][:100]}"
        )

    def _create_table(self, name: str, ine: str, body: str) -> list[str]:
        engine = _ENGINE.search(body)
        if engine is None:
            raise MigrationError(
                f"cluster mode: table {name} is not a MergeTree-family table; only those can be "
                "replicated and sharded"
            )
        order_by = _ORDER_BY.search(body)
        if order_by is None:
            raise MigrationError(f"cluster mode: table {name} has no ORDER BY line")
        key, reason = SHARDING_KEYS.get(name) or (
            f"cityHash64{_as_tuple(order_by.group('key'))}",
            "default: its whole ORDER BY (the row identity)",
        )
        table = ShardedTable(name, key, reason)
        args_start = engine.end()
        args = ""
        if body[args_start : args_start + 1] == "(":
            close = body.index(")", args_start)
            args = body[args_start + 1 : close].strip()
            args_end = close + 1
        else:
            args_end = args_start
        path = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
        replicated = f"Replicated{engine.group('engine')}({path}{', ' + args if args else ''})"
        local_body = body[: engine.start()] + f"ENGINE = {replicated}" + body[args_end:]
        on = f"ON CLUSTER {self.cluster}"
        self.tables[name] = table
        return [
            f"CREATE TABLE {ine}{table.local} {on}\n{local_body}",
            f"CREATE TABLE {ine}{name} {on} AS {table.local}\n"
            f"ENGINE = Distributed({self.cluster}, {self.database}, {table.local}, {key})",
        ]


def _as_tuple(key: str) -> str:
    key = key.strip()
    return key if key.startswith("(") else f"({key})"
