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
import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from kernel.clickhouse import ClickHouseError, connect_configured
from kernel.settings import Settings

OutputFormat = Literal["table", "csv", "json"]

#: Statements that return rows; anything else is sent as a command (DDL, INSERT, OPTIMIZE).
_ROW_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS", "(")

_CODE = re.compile(r"Code:\s*(\d+)")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


@dataclass(frozen=True)
class ResultSet:
    """Rows as the driver returned them, with column names, ready to render."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


class SqlError(RuntimeError):
    """A query failed or was refused; ``code``/``name`` are the server's when it answered."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name

    def render(self) -> str:
        if self.code is None:
            return str(self)
        label = f"{self.code} {self.name}" if self.name else str(self.code)
        return f"ClickHouse error {label}: {self}"


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
        "--format", choices=("table", "csv", "json"), default="table",
        help="table (default, readable), csv (header row + rows), json (one array of objects)",
    )
    p.add_argument("--database", default=None, help="database to use (default: the DSN's)")
    p.add_argument(
        "--tenant", default=None,
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
    except SqlError as exc:
        print(f"gpumeter sql: {exc.render()}", file=sys.stderr)
        return 1
    sys.stdout.write(render(result, args.format))
    return 0


def execute(client: Client, query: str, *, tenant: str | None = None) -> ResultSet:
    """Run one statement; with ``tenant``, only a checked SELECT over the tenant views."""
    if tenant is not None:
        return run_tenant_query(client, query, tenant)
    stmt = query.strip().rstrip(";").strip()
    if not stmt:
        raise SqlError("empty query")
    try:
        if _returns_rows(stmt):
            r = client.query(stmt)
            return ResultSet(tuple(r.column_names), tuple(tuple(row) for row in r.result_rows))
        summary = client.command(stmt)
    except DriverError as exc:
        raise server_error(exc) from exc
    written = getattr(summary, "written_rows", None)
    text = f"OK, {written} rows written" if written else "OK"
    if isinstance(summary, str | int) and summary != "":
        text = str(summary)
    return ResultSet(("result",), ((text,),))


def server_error(exc: Exception) -> SqlError:
    """Keep the server's code and name (e.g. ``60 UNKNOWN_TABLE``) and its own message."""
    msg = str(exc)
    code = getattr(exc, "code", None)
    if code is None and (m := _CODE.search(msg)):
        code = int(m.group(1))
    name_match = _NAME.search(msg)
    # The HTTP driver wraps the server text in its own preamble; keep from "Code:" on.
    start = msg.find("Code:")
    body = msg[start:] if start >= 0 else msg
    body = body.split("\n")[0].strip()
    return SqlError(body, code=int(code) if code is not None else None,
                    name=name_match.group(1) if name_match else None)


def _returns_rows(stmt: str) -> bool:
    head = re.sub(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", "", stmt, flags=re.S)
    return head.upper().startswith(_ROW_STATEMENTS)


# -- rendering ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON/CSV-safe value: Decimal and datetimes become strings so nothing is rounded."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def render(result: ResultSet, fmt: OutputFormat | str) -> str:
    if fmt == "json":
        objs = [dict(zip(result.columns, map(_plain, row), strict=True)) for row in result.rows]
        return json.dumps(objs, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(result.columns)
        for row in result.rows:
            w.writerow(["" if v is None else _cell(v) for v in row])
        return buf.getvalue()
    return _table(result)


def _cell(value: Any) -> str:
    plain = _plain(value)
    if isinstance(plain, list | dict):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def _table(result: ResultSet) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    numeric = [
        all(isinstance(r[i], int | float | Decimal) for r in result.rows if r[i] is not None)
        and bool(result.rows)
        for i in range(len(result.columns))
    ]
    for name, right in zip(result.columns, numeric, strict=True):
        table.add_column(name, justify="right" if right else "left")
    for row in result.rows:
        table.add_row(*("NULL" if v is None else _cell(v) for v in row))
    buf = io.StringIO()
    # A fixed width keeps piped output stable; on a terminal rich would use the terminal's.
    width = None if sys.stdout.isatty() else 200
    Console(file=buf, width=width, force_terminal=False, no_color=True).print(table)
    n = len(result.rows)
    return buf.getvalue() + f"{n} row{'s' if n != 1 else ''}\n"


# -- interactive -------------------------------------------------------------------------------

_HELP = "\\q quit   \\d list tables   \\d NAME describe   \\f table|csv|json   \\? help"


def repl(
    client: Client, *, fmt: str = "table", tenant: str | None = None,
    lines: Sequence[str] | None = None,
) -> int:
    """A small prompt: statements end with ``;`` or a blank line; backslash commands act at once.

    ``lines`` replaces the terminal (piped input, tests): then the first failing statement
    stops the run with exit status 1, as a script should."""
    scripted = lines is not None
    source = iter([*lines, ""]) if lines is not None else None
    prompt = f"gpumeter[{tenant}]> " if tenant else "gpumeter> "
    if not scripted:
        print(f"gpumeter sql: {_HELP}", file=sys.stderr)
    buffer: list[str] = []
    while True:
        try:
            line = next(source) if source is not None else input(prompt if not buffer else "   ...> ")
        except StopIteration:
            return 0
        except EOFError:
            line = ""
            if not buffer:
                return 0
        stripped = line.strip()
        if not buffer and stripped.startswith("\\"):
            cmd, _, arg = stripped.partition(" ")
            if cmd == "\\q":
                return 0
            if cmd == "\\f" and arg in ("table", "csv", "json"):
                fmt = arg
                continue
            if cmd == "\\d":
                q, meta = _describe_query(arg.strip(), tenant), True
            else:
                print(_HELP, file=sys.stderr)
                continue
        else:
            if stripped:
                buffer.append(line)
            if not buffer or (stripped and not stripped.endswith(";")):
                continue
            q, meta = "\n".join(buffer), False
            buffer = []
        try:
            # \d reads system tables, which the tenant guard would refuse; its SQL is ours and
            # names only tenant_* views in tenant mode, so it runs unguarded.
            result = execute(client, q, tenant=None if meta else tenant)
        except SqlError as exc:
            print(exc.render(), file=sys.stderr)
            if scripted:
                return 1
            continue
        sys.stdout.write(render(result, fmt))


def _describe_query(name: str, tenant: str | None) -> str:
    if name:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return "SELECT 'invalid table name' AS error"
        if tenant is not None and not name.startswith("tenant_"):
            return "SELECT 'tenant mode: only tenant_* views' AS error"
        return (
            "SELECT name, type, comment FROM system.columns "
            f"WHERE database = currentDatabase() AND table = '{name}' ORDER BY position"
        )
    where = "AND name LIKE 'tenant\\_%'" if tenant is not None else ""
    return (
        "SELECT name, engine, comment FROM system.tables "
        f"WHERE database = currentDatabase() AND NOT is_temporary {where} "
        "AND name != 'gpumeter_migrations' ORDER BY name"
    )



# -- tenant-scoped mode ------------------------------------------------------------------------
#
# A tenant's analyst may run one SELECT over the tenant_* views and nothing else. The tenant is
# never written into SQL text: every tenant view reference is rewritten to
# ``view(tenant = {__gpumeter_tenant:String})`` and the value travels as a server-side query
# parameter. Layers, each enough on its own for the cases it covers:
#   1. lexical: one statement, no comments, no quoted identifiers, no braces, no heredocs; every
#      name that is a table, database, table function or data-reading function (dictGet...) is
#      refused unless it is a tenant view, and a tenant view may not be given arguments;
#   2. the server's query tree (EXPLAIN QUERY TREE) may name only tenant views (and system.one
#      for a FROM-less SELECT): catches whatever the lexer missed;
#   3. execution with readonly=1: no writes, no settings changes, no file()/url() style reads.
# The stronger server-side alternative (a ClickHouse user per tenant with a row policy and
# grants on the views only) is described in schemas/clickhouse/README.md.

TENANT_VIEWS = frozenset({
    "tenant_usage_minutely", "tenant_usage_hourly", "tenant_usage_daily", "tenant_work_units",
    "tenant_invoices", "tenant_invoice_lines",
})
_TENANT_PARAM = "__gpumeter_tenant"
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>\d[\w.]*)
  | (?P<comment>--|/\*|\#)
  | (?P<bad>[`"{}$;\\])
  | (?P<op>.)
""", re.X | re.S)
#: Functions that read data outside the query's FROM (dictionaries, Join tables, settings).
_READING_FUNCTIONS = re.compile(r"^(dict\w*|joinGet\w*|getSetting\w*|getMacro|hasColumnInTable|"
                                r"getServerPort|filesystem\w*|currentProfiles|currentRoles)$", re.I)


#: Clauses that change settings or write output somewhere (INTO OUTFILE writes a file).
_REFUSED_CLAUSES = frozenset({"SETTINGS", "INTO", "OUTFILE", "FORMAT"})


class TenantQueryRefused(SqlError):
    """The query is not a SELECT over the tenant views only."""


def run_tenant_query(client: Client, query: str, tenant: str) -> ResultSet:
    """Run ``query`` for ``tenant`` after checking it can reach only that tenant's rows."""
    bound, params = check_tenant_query(client, query, tenant)
    _check_query_tree(client, bound, params)
    try:
        r = client.query(bound, parameters=params, settings={"readonly": 1})
    except DriverError as exc:
        raise server_error(exc) from exc
    return ResultSet(tuple(r.column_names), tuple(tuple(row) for row in r.result_rows))


def check_tenant_query(client: Client, query: str, tenant: str) -> tuple[str, dict[str, str]]:
    """Lexical check and rewrite; return the SQL to run and its server-side parameters."""
    if not tenant or tenant == "__idle__" or len(tenant) > 128:
        raise TenantQueryRefused(f"invalid tenant {tenant!r}")
    stmt = query.strip()
    while stmt.endswith(";"):
        stmt = stmt[:-1].rstrip()
    tokens = [(m.lastgroup, m.group(), m.start()) for m in _TOKEN.finditer(stmt)]
    code = [(kind, text, pos) for kind, text, pos in tokens if kind != "ws"]
    if not code or code[0][0] != "ident" or code[0][1].upper() not in ("SELECT", "WITH"):
        raise TenantQueryRefused("tenant mode runs a single SELECT (or WITH ... SELECT) only")
    for kind, text, _ in code:
        if kind == "comment":
            raise TenantQueryRefused("comments are not allowed in tenant mode")
        if kind == "bad":
            raise TenantQueryRefused(
                f"{text!r} is not allowed in tenant mode (one statement; no quoted identifiers, "
                "parameters or heredocs)")
    views, tables, databases, table_functions = _catalog(client)
    out: list[str] = []
    last = 0
    for i, (kind, text, pos) in enumerate(code):
        if kind != "ident":
            continue
        nxt = code[i + 1][1] if i + 1 < len(code) else ""
        if text in views:
            if nxt in ("(", ".") or (i > 0 and code[i - 1][1] == "."):
                raise TenantQueryRefused(f"{text} takes no arguments: the tenant is bound for you")
            out.append(stmt[last:pos] + f"{text}(tenant = {{{_TENANT_PARAM}:String}})")
            last = pos + len(text)
            continue
        refused = (
            text in tables  # another table or view of this database
            or (nxt == "." and (text in databases or text.lower() in databases))  # db.table
            or (nxt == "(" and text.lower() in table_functions)  # file(), url(), remote()...
        )
        if refused:
            raise TenantQueryRefused(
                f"{text!r}: tenant mode reads only the tenant views ({', '.join(sorted(views))})")
        if nxt == "(" and _READING_FUNCTIONS.match(text):
            raise TenantQueryRefused(f"function {text} is not allowed in tenant mode")
        if text.upper() in _REFUSED_CLAUSES:
            raise TenantQueryRefused(f"{text.upper()} is not allowed in tenant mode")
    out.append(stmt[last:])
    return "".join(out), {_TENANT_PARAM: tenant}


def _catalog(
    client: Client,
) -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """Tenant views present here; the other tables here; databases; table functions."""
    rows = client.query(
        "SELECT 't', name FROM system.tables WHERE database = currentDatabase() "
        "UNION ALL SELECT 'd', name FROM system.databases "
        "UNION ALL SELECT 'f', name FROM system.table_functions",
    ).result_rows
    here = {n for k, n in rows if k == "t"}
    views = frozenset(here & TENANT_VIEWS)
    return (
        views,
        frozenset(here - views),
        frozenset(n for k, n in rows if k == "d") | {n.lower() for k, n in rows if k == "d"},
        frozenset(n.lower() for k, n in rows if k == "f"),
    )


_TREE_NODE = re.compile(r"\b(TABLE|TABLE_FUNCTION)\b[^\n]*?(?:table_name|table_function_name): (\S+)")


def _check_query_tree(client: Client, bound: str, params: dict[str, str]) -> None:
    try:
        rows = client.query("EXPLAIN QUERY TREE " + bound, parameters=params,
                            settings={"readonly": 1}).result_rows
    except DriverError as exc:
        # The server's message is shown: the lexical layer already refused other tables, so it
        # cannot quote their data.
        raise server_error(exc) from exc
    db = client.database or ""
    allowed_tables = {"system.one"}
    for kind, name in _TREE_NODE.findall("\n".join(str(r[0]) for r in rows)):
        if kind == "TABLE_FUNCTION" and name in TENANT_VIEWS:
            continue
        if kind == "TABLE" and name in allowed_tables:
            continue
        if kind == "TABLE" and name.removeprefix(f"{db}.") in TENANT_VIEWS:
            continue
        raise TenantQueryRefused(f"{name}: tenant mode reads only the tenant views")
