"""``gpumeter sql``: ask ClickHouse a question and read the answer as a table, CSV or JSON.

Three ways in:

- one-shot: ``gpumeter sql "SELECT ..." [--format table|csv|json] [--database DB]``;
- interactive: no query and stdin is a terminal gives a small REPL (``\\q`` quits, ``\\d`` lists
  tables, ``\\d NAME`` describes one);
- tenant-scoped: ``--tenant T`` lets a tenant's analyst read only the ``tenant_*`` views, with
  the tenant bound as a server-side query parameter (rules in :func:`check_tenant_query`).

A query read from a pipe (no query argument, stdin not a terminal) is run one-shot, so
``echo "SELECT 1" | gpumeter sql`` works in scripts.
"""

from __future__ import annotations

import argparse
import sys

from gpumeter.prompt import repl
from gpumeter.query import execute
from gpumeter.render import render
from kernel.clickhouse import ClickHouseError, connect_configured
from kernel.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="run SQL against ClickHouse (one-shot or interactive)",
        description="Run a query against the configured ClickHouse (GPUMETER_CLICKHOUSE_DSN, "
        "default: the embedded engine under GPUMETER_DATA_DIR) and print the result. "
        "Without a query and on a terminal, start an interactive prompt (\\q quits, \\d lists "
        "tables). Table and column meanings: schemas/clickhouse/README.md.",
        epilog='examples:\n  gpumeter sql "SELECT * FROM usage_daily ORDER BY day DESC LIMIT 10"\n'
        '  gpumeter sql --format csv "SELECT * FROM fleet_daily" > fleet.csv\n'
        '  gpumeter sql --tenant acme "SELECT day, gpu_hours FROM tenant_usage_daily"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="?", help="SQL to run; omit for interactive mode")
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (default, readable), csv (header row + rows), json (one array of objects)",
    )
    p.add_argument("--database", default=None, help="database to use (default: the DSN's)")
    p.add_argument(
        "--tenant",
        default=None,
        help="tenant-scoped mode: only SELECT over the tenant_* views, bound to this tenant",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        client = connect_configured(settings, args.database)
    except ClickHouseError as exc:
        print(f"gpumeter sql: {exc}", file=sys.stderr)
        return 1
    if args.query is None:
        # Piped input runs like a script (same statement and \\ rules as the prompt, exit 1 on
        # the first failure); a terminal gets the prompt.
        piped = None if sys.stdin.isatty() else sys.stdin.read().splitlines()
        return repl(client, fmt=args.format, tenant=args.tenant, lines=piped)
    query: str = args.query
    try:
        result = execute(client, query, tenant=args.tenant)
    except ClickHouseError as exc:
        print(f"gpumeter sql: {exc.render()}", file=sys.stderr)
        return 1
    sys.stdout.write(render(result, args.format))
    return 0
