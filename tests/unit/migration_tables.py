"""The migration files' tables as a single node creates them, for the cluster DDL tests."""

from __future__ import annotations

import re

from schemas.clickhouse.migrate import discover

CLUSTER, DATABASE = "gpumeter", "ledger"
_FUNCTION = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_IDENTIFIER = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\b")


def columns_of(expression: str) -> set[str]:
    functions = set(_FUNCTION.findall(expression))
    return {name for name in _IDENTIFIER.findall(expression) if name not in functions}


def single_node_tables() -> dict[str, str]:
    """name -> ORDER BY expression of every MergeTree table the files create."""
    out = {}
    for m in discover():
        for stmt in m.statements():
            if t := re.match(r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", stmt, re.I):
                order = re.search(r"^ORDER\s+BY\s+(.+?)\s*$", stmt, re.M | re.I)
                assert order, stmt
                out[t.group(1)] = order.group(1)
    return out
