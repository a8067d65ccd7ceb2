"""Reconcile shows the period's conflicting claims, and fails on a second that two rows of
the ledger both count (two workers that each counted a different claim for it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billing.period import Period
from billing.reconcile import reconcile_period
from streams.clickhouse.sink import CONFLICT_COLUMNS
from tests.ledger_rows import LedgerRow, insert_ledger

pytestmark = pytest.mark.integration

JAN = Period(2026, 1)
M = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
FULL = (1 << 60) - 1


def conflict(ts: datetime, kind: str, loser: tuple[str, str], winner: tuple[str, str]) -> list[Any]:
    return [
        ts,
        "GPU-1",
        kind,
        "",
        winner[0],
        winner[1],
        "",
        loser[0],
        loser[1],
        "n1",
        "",
        10.0,
        1000,
    ]


def test_the_periods_conflicts_are_listed_but_are_not_differences(clickhouse: Any) -> None:
    # given a consistent ledger (acme holds the minute) and the claims the rule turned down
    insert_ledger(clickhouse, [LedgerRow(M, "acme", "train", "GPU-1", "H100", FULL)])
    rows = [
        conflict(M.replace(second=s), "allocation", ("globex", "x"), ("acme", "train"))
        for s in range(60)
    ]
    rows += [
        conflict(M.replace(second=s), "idle", ("__idle__", ""), ("acme", "train"))
        for s in range(10)
    ]
    clickhouse.insert("usage_conflicts", rows, column_names=CONFLICT_COLUMNS)
    # when the period is reconciled
    report = reconcile_period(clickhouse, JAN)
    text = "\n".join(report.lines())
    # then the conflicts are listed, largest first, and nothing is a difference
    assert "conflicting claims: 70 GPU-second(s)" in text
    assert "allocation: globex/x lost 60 s to acme/train" in text
    assert "idle: __idle__/ lost 10 s to acme/train" in text
    assert not any("GPU GPU-1" in d for d in report.differences)


def test_a_second_two_rows_both_count_is_a_difference(clickhouse: Any) -> None:
    # given two workers that each counted a different claim for the same 10 seconds
    insert_ledger(
        clickhouse,
        [
            LedgerRow(M, "acme", "train", "GPU-1", "H100", FULL),
            LedgerRow(M, "globex", "x", "GPU-1", "H100", (1 << 10) - 1),
        ],
    )
    # when the period is reconciled, then conservation fails for that GPU, by 10 seconds
    report = reconcile_period(clickhouse, JAN)
    [diff] = [d for d in report.differences if d.startswith("GPU GPU-1")]
    assert "70 GPU-seconds, but 60 observed" in diff
