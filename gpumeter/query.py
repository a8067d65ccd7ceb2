"""Running one statement against ClickHouse for the SQL shell: rows or a command's summary.

Failures are the kernel's :class:`~kernel.clickhouse.ClickHouseError` with the server's code
and name; with a tenant, the statement first passes the tenant guard
(:mod:`gpumeter.tenant_guard`) and runs read-only with the tenant bound as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from gpumeter.tenant_guard import check_query_tree, check_tenant_query
from kernel.clickhouse import ClickHouseError

#: Statements that return rows; anything else is sent as a command (DDL, INSERT, OPTIMIZE).
_ROW_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS", "(")


@dataclass(frozen=True)
class ResultSet:
    """Rows as the driver returned them, with column names, ready to render."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def execute(client: Client, query: str, *, tenant: str | None = None) -> ResultSet:
    """Run one statement; with ``tenant``, only a checked SELECT over the tenant views."""
    if tenant is not None:
        return run_tenant_query(client, query, tenant)
    stmt = query.strip().rstrip(";").strip()
    if not stmt:
        raise ClickHouseError("empty query")
    try:
        if _returns_rows(stmt):
            r = client.query(stmt)
            return ResultSet(tuple(r.column_names), tuple(tuple(row) for row in r.result_rows))
        summary = client.command(stmt)
    except DriverError as exc:
        raise ClickHouseError.from_driver(exc) from exc
    written = getattr(summary, "written_rows", None)
    text = f"OK, {written} rows written" if written else "OK"
    if isinstance(summary, str | int) and summary != "":
        text = str(summary)
    return ResultSet(("result",), ((text,),))


def run_tenant_query(client: Client, query: str, tenant: str) -> ResultSet:
    """Run ``query`` for ``tenant`` after checking it can reach only that tenant's rows."""
    bound, params = check_tenant_query(client, query, tenant)
    check_query_tree(client, bound, params)
    try:
        r = client.query(bound, parameters=params, settings={"readonly": 1})
    except DriverError as exc:
        raise ClickHouseError.from_driver(exc) from exc
    return ResultSet(tuple(r.column_names), tuple(tuple(row) for row in r.result_rows))


def _returns_rows(stmt: str) -> bool:
    head = re.sub(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", "", stmt, flags=re.S)
    return head.upper().startswith(_ROW_STATEMENTS)
