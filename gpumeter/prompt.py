"""The interactive SQL prompt (and piped scripts): statements end with ``;`` or a blank line,
backslash commands act at once."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from gpumeter.query import execute
from gpumeter.render import render
from kernel.clickhouse import ClickHouseError

_HELP = "\\q quit   \\d list tables   \\d NAME describe   \\f table|csv|json   \\? help"


def repl(
    client: Client,
    *,
    fmt: str = "table",
    tenant: str | None = None,
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
            line = (
                next(source) if source is not None else input(prompt if not buffer else "   ...> ")
            )
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
        except ClickHouseError as exc:
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
