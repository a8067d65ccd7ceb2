"""Rendering a result set as a table (rich), CSV or JSON; nothing is rounded on the way."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from gpumeter.query import ResultSet

OutputFormat = Literal["table", "csv", "json"]


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
