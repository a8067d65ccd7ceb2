"""Ledger rows at a share (contract v2, migration 0030), for billing and analytics tests.

``tests/ledger_rows.py`` builds a whole-GPU row; this writes the same row with its share in
milli-GPUs (stored ``shared_milli``: 0 for a whole GPU), naming every column explicitly so it
holds whether or not that helper places ``shared_milli`` itself."""

from __future__ import annotations

from typing import Any

from tests.ledger_rows import COLUMNS, LedgerRow


def shared_row_values(row: LedgerRow, share_milli: int) -> tuple[list[str], list[Any]]:
    """(column names, values) of ``row`` held at ``share_milli`` (1..1000)."""
    assert 1 <= share_milli <= 1000, share_milli
    stored = 0 if share_milli == 1000 else share_milli
    cols, values = list(COLUMNS), list(row.values())
    if "shared_milli" not in cols:
        return [*cols, "shared_milli"], [*values, stored]
    i = cols.index("shared_milli")
    if len(values) == len(cols):
        values[i] = stored
    else:
        values.insert(i, stored)
    return cols, values


def insert_shared(client: Any, rows: list[tuple[LedgerRow, int]]) -> None:
    """Insert ``(row, share_milli)`` pairs into ``usage_minutely`` in one insert."""
    if not rows:
        return
    built = [shared_row_values(r, s) for r, s in rows]
    client.insert("usage_minutely", [v for _, v in built], column_names=built[0][0])
