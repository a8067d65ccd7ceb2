"""The tenant-isolation guard of ``gpumeter sql --tenant T``: T's analyst reaches T's rows and
nothing else, whatever the query says.

A tenant's analyst may run one SELECT over the tenant_* views and nothing else. The tenant is
never written into SQL text: every tenant view reference is rewritten to
``view(tenant = {__gpumeter_tenant:String})`` and the value travels as a server-side query
parameter. Layers, each enough on its own for the cases it covers:
  1. lexical: one statement, no comments, no quoted identifiers, no braces, no heredocs; every
     name that is a table, database, table function or data-reading function (dictGet...) is
     refused unless it is a tenant view, and a tenant view may not be given arguments;
  2. the server's query tree (EXPLAIN QUERY TREE) may name only tenant views (and system.one
     for a FROM-less SELECT): catches whatever the lexer missed;
  3. execution with readonly=1: no writes, no settings changes, no file()/url() style reads.
The stronger server-side alternative (a ClickHouse user per tenant with a row policy and
grants on the views only) is described in schemas/clickhouse/README.md.
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from kernel.clickhouse import ClickHouseError
from kernel.names import IDLE_TENANT

TENANT_VIEWS = frozenset(
    {
        "tenant_usage_minutely",
        "tenant_usage_hourly",
        "tenant_usage_daily",
        "tenant_work_units",
        "tenant_invoices",
        "tenant_invoice_lines",
    }
)
_TENANT_PARAM = "__gpumeter_tenant"
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>\d[\w.]*)
  | (?P<comment>--|/\*|\#)
  | (?P<bad>[`"{}$;\\])
  | (?P<op>.)
""",
    re.X | re.S,
)
#: Functions that read data outside the query's FROM (dictionaries, Join tables, settings).
_READING_FUNCTIONS = re.compile(
    r"^(dict\w*|joinGet\w*|getSetting\w*|getMacro|hasColumnInTable|"
    r"getServerPort|filesystem\w*|currentProfiles|currentRoles)$",
    re.I,
)


#: Clauses that change settings or write output somewhere (INTO OUTFILE writes a file).
_REFUSED_CLAUSES = frozenset({"SETTINGS", "INTO", "OUTFILE", "FORMAT"})


class TenantQueryRefused(ClickHouseError):
    """The query is not a SELECT over the tenant views only. Refused before it reaches the
    server, so it has no server code; a ClickHouseError so that callers catch one type."""


def check_tenant_query(client: Client, query: str, tenant: str) -> tuple[str, dict[str, str]]:
    """Lexical check and rewrite; return the SQL to run and its server-side parameters."""
    if not tenant or tenant == IDLE_TENANT or len(tenant) > 128:
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
                "parameters or heredocs)"
            )
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
                f"{text!r}: tenant mode reads only the tenant views ({', '.join(sorted(views))})"
            )
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


_TREE_NODE = re.compile(
    r"\b(TABLE|TABLE_FUNCTION)\b[^\n]*?(?:table_name|table_function_name): (\S+)"
)


def check_query_tree(client: Client, bound: str, params: dict[str, str]) -> None:
    try:
        rows = client.query(
            "EXPLAIN QUERY TREE " + bound, parameters=params, settings={"readonly": 1}
        ).result_rows
    except DriverError as exc:
        # The server's message is shown: the lexical layer already refused other tables, so it
        # cannot quote their data.
        raise ClickHouseError.from_driver(exc) from exc
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
