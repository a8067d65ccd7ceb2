"""The data dictionary names every table and view, and its example queries run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "schemas/clickhouse/README.md"


def test_every_table_and_view_is_described(clickhouse) -> None:  # type: ignore[no-untyped-def]
    text = README.read_text()
    names = [
        r[0]
        for r in clickhouse.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    ]
    assert "usage_minutely" in names and "tenant_invoices" in names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"add these to schemas/clickhouse/README.md: {missing}"


def test_example_queries_run(clickhouse) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 5
    for sql in blocks:
        clickhouse.query(sql)
