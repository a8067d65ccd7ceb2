"""Operator commands: ``gpumeter check``, ``gpumeter db migrate``, ``gpumeter schema export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.settings import Settings, env_name

if TYPE_CHECKING:
    from schemas.clickhouse.migrate import ClusterDDL


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "check",
        help="validate the configuration (GPUMETER_* variables) and exit",
        description="Validate every GPUMETER_* setting, print the effective configuration "
        "(secrets hidden, also inside the DSN) and exit 0, or list every problem and exit 2. "
        "GPUMETER_* variables that are not settings (typos) are problems too.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.set_defaults(handler=_check)

    db = sub.add_parser("db", help="ClickHouse schema management")
    dbsub = db.add_subparsers(dest="db_command", metavar="<action>", required=True)
    mig = dbsub.add_parser(
        "migrate",
        help="apply pending ClickHouse migrations (idempotent)",
        description="Apply the ordered migrations in schemas/clickhouse/migrations that are not "
        "applied yet. Re-running is a no-op. Works on the embedded engine and on a server.",
    )
    mig.add_argument("--database", default=None, help="database to migrate (default: the DSN's)")
    mig.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="a ClickHouse cluster (remote_servers) to migrate on every node: each table T becomes "
        "a Replicated<engine> table T_local (Keeper path /clickhouse/tables/{shard}/"
        "{database}/{table}, replica {replica}: the macros must be defined on every server) "
        "behind a Distributed table with the original name, sharded by a stated key. "
        "Default: GPUMETER_CLICKHOUSE_CLUSTER. See infra/OPERATIONS.md.",
    )
    mig.add_argument(
        "--print-ddl",
        action="store_true",
        help="print the statements `--cluster` would run (with their sharding keys) and exit; "
        "needs no server",
    )
    mig.set_defaults(handler=_migrate)
    compact = dbsub.add_parser(
        "compact",
        help="merge a month of the ledger into one part, so billing's FINAL reads are cheap",
        description="OPTIMIZE ... FINAL the ledger's partition of one month (UTC). The ledger "
        "merges by union (an AggregatingMergeTree): reading it with FINAL merges every part on "
        "the fly, which costs (measured here: 1.65M rows in 2 parts, 1.27 s; after compaction "
        "0.08 s). Run it once a month is closed, before `invoices run`; it changes no total and "
        "may be re-run at any time. Example: gpumeter db compact --period 2026-01",
    )
    compact.add_argument(
        "--period", required=True, metavar="YYYY-MM", type=_month, help="the month to compact"
    )
    compact.add_argument("--database", default=None, help="database (default: the DSN's)")
    compact.set_defaults(handler=_compact)

    schema = sub.add_parser("schema", help="event contract")
    ssub = schema.add_subparsers(dest="schema_command", metavar="<action>", required=True)
    exp = ssub.add_parser(
        "export",
        help="write the JSON Schema of usage records (gpu.usage.v1, version 2 by default) or "
        "of preemption records (--topic gpu.preemptions.v1)",
        description="Write the JSON Schema that producers in other languages validate against: "
        "for gpu.usage.v1 (the default topic), schema_version 2 (frames, shares; the current "
        "version) by default, or 1 (samples; still accepted for one release) with --version 1; "
        "for gpu.preemptions.v1, its schema_version 1.",
    )
    exp.add_argument(
        "--topic",
        choices=("gpu.usage.v1", "gpu.preemptions.v1"),
        default="gpu.usage.v1",
        help="whose records (default gpu.usage.v1)",
    )
    exp.add_argument(
        "--version", type=int, choices=(1, 2), default=2, help="schema_version (default: 2)"
    )
    exp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: schemas/json/gpu.usage.v<version>.schema.json "
        "(gpu.preemptions.v1: schemas/json/gpu.preemptions.v1.schema.json)",
    )
    exp.set_defaults(handler=_export_schema)


def settings_help() -> str:
    """One line per setting: variable, default, description."""
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f" (default {field.default})"
        lines.append(f"  {env_name(name)}{default}")
        if field.description:
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    # Reaching here means every setting validated (cli.main exits 2 with the list otherwise).
    effective = settings.redacted()
    effective["clickhouse_dsn (effective)"] = str(settings.clickhouse)
    print(json.dumps(effective, indent=2))
    print("configuration OK")
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from kernel.clickhouse import connect_configured
    from schemas.clickhouse.migrate import cluster_plan, migrate

    cluster = args.cluster or settings.clickhouse_cluster
    if args.print_ddl:
        if not cluster:
            print(
                "--print-ddl shows cluster DDL: give --cluster NAME (or set "
                "GPUMETER_CLICKHOUSE_CLUSTER)",
                file=sys.stderr,
            )
            return 2
        database = args.database or settings.clickhouse.database or "default"
        ddl, plan = cluster_plan(cluster, database)
        for m, statements in plan:
            print(f"-- {m.version:04d}_{m.name}")
            for stmt in statements:
                print(stmt + ";\n")
        _print_sharding(ddl)
        return 0
    client = connect_configured(settings, args.database, cluster=cluster)
    applied = migrate(client, raw_ttl_days=settings.raw_ttl_days, cluster=cluster)
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print("up to date" if not applied else f"{len(applied)} migration(s) applied")
    if cluster:
        _print_sharding(cluster_plan(cluster, "_")[0])
    return 0


def _month(text: str) -> str:
    import re

    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a month as YYYY-MM")
    return text


def _compact(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from kernel.clickhouse import connect_configured

    cluster = settings.clickhouse_cluster
    client = connect_configured(settings, args.database, cluster=cluster)
    partition = args.period.replace("-", "")  # usage_minutely is PARTITION BY toYYYYMM(minute)
    table = f"usage_minutely_local ON CLUSTER {cluster}" if cluster else "usage_minutely"
    t0 = time.monotonic()
    client.command(f"OPTIMIZE TABLE {table} PARTITION {partition} FINAL")
    print(f"compacted the ledger of {args.period} in {time.monotonic() - t0:.1f} s")
    return 0


def _print_sharding(ddl: ClusterDDL) -> None:
    print(
        "sharding keys (every version of a row must land on one shard: keys use only "
        "ORDER BY columns):"
    )
    for table in ddl.tables.values():
        print(f"  {table.name:<24} {table.sharding_key:<40} {table.reason}")


def _export_schema(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.published import schema_path

    out: Path
    if getattr(args, "topic", "gpu.usage.v1") == "gpu.preemptions.v1":
        from schemas.preemption import render_schema as render_preemption
        from schemas.preemption import schema_file

        out = args.out or schema_file()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_preemption())
        print(f"wrote {out} (gpu.preemptions.v1, schema_version 1)")
        return 0
    out = args.out or schema_path(args.version)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_schema(args.version))
    print(f"wrote {out} (schema_version {args.version})")
    return 0


def render_schema(version: int = 2) -> str:
    from schemas.published import render_schema as render

    return render(version)
