"""The sink reloads ledger state with a GROUP BY instead of FINAL (streams/clickhouse/sink.py):
it must read the same columns, in the same order, each merged by the aggregate function the
table's DDL declares, grouped by the table's sorting key."""

from __future__ import annotations

import re
from pathlib import Path

from streams.clickhouse.columns import LEDGER_COLUMNS, LEDGER_KEY, LEDGER_MERGED

MIGRATIONS = Path(__file__).resolve().parents[3] / "schemas" / "clickhouse" / "migrations"


def _declared() -> dict[str, str | None]:
    """Column -> its SimpleAggregateFunction's function (None: a key column), from the DDL."""
    ddl = (MIGRATIONS / "0003_ledger_union.sql").read_text()
    body = ddl[ddl.index("CREATE TABLE IF NOT EXISTS usage_minutely\n") :]
    out: dict[str, str | None] = {}
    for line in body.splitlines()[2:]:
        m = re.match(r"\s+(\w+)\s+(.*)", line)
        if not m or "ALIAS" in line:
            if line.startswith(")"):
                break
            continue
        name, rest = m.groups()
        f = re.match(r"SimpleAggregateFunction\((\w+),", rest)
        out[name] = f.group(1) if f else None
    out["shared_milli"] = None  # 0030_ledger_shares.sql: part of the key
    return out


def test_merged_select_reads_the_ledger_columns_in_order_by_their_declared_functions() -> None:
    declared = _declared()
    exprs = [e.strip() for e in LEDGER_MERGED.split(",")]
    assert len(exprs) == len(LEDGER_COLUMNS)
    for column, expr in zip(LEDGER_COLUMNS, exprs, strict=True):
        function = declared[column]
        expected = column if function is None else f"{function}({column})"
        assert expr == expected, (column, expr)


def test_the_grouping_is_the_tables_sorting_key() -> None:
    ddl = (MIGRATIONS / "0030_ledger_shares.sql").read_text()
    key = re.search(r"MODIFY ORDER BY \(([^)]*)\)", ddl)
    assert key is not None
    assert key.group(1) == LEDGER_KEY
    declared = _declared()
    assert {c for c, f in declared.items() if f is None and c in LEDGER_COLUMNS} == set(
        LEDGER_KEY.split(", ")
    )
