"""The report shows the period's conflicting claims (terminal and HTML); a period without any
says nothing about them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from analytics.report import build_report, print_summary, render_html
from streams.clickhouse.sink import CONFLICT_COLUMNS
from tests.integration.analytics.scenario import NOW, START, insert_minutes, two_gpu_scenario

pytestmark = pytest.mark.integration


def test_conflicting_claims_are_a_warning_with_the_largest_losers(clickhouse: Any) -> None:
    from rich.console import Console

    # given the scenario's ledger, and 30 seconds of g1 that tenant B had claimed too
    insert_minutes(clickhouse, two_gpu_scenario())
    clickhouse.insert(
        "usage_conflicts",
        [
            [
                START + timedelta(seconds=s),
                "g1",
                "allocation",
                "",
                "A",
                "j1",
                "",
                "B",
                "j9",
                "n1",
                "",
                50.0,
                1000,
            ]
            for s in range(30)
        ],
        column_names=CONFLICT_COLUMNS,
    )
    # when the report is built
    report = build_report(clickhouse, "2025-03-01", None, now=NOW)
    # then it warns, in the terminal and on the page
    [warning] = [w for w in report.warnings if "claimed twice" in w]
    assert "30 GPU-second(s)" in warning and "allocation B/j9 lost 30 s to A/j1" in warning
    console = Console(record=True, width=300)
    print_summary(report, console)
    assert "claimed twice" in console.export_text()
    assert "claimed twice" in render_html(report)


def test_a_period_without_conflicts_says_nothing_about_them(clickhouse: Any) -> None:
    insert_minutes(clickhouse, two_gpu_scenario())
    report = build_report(clickhouse, "2025-03-01", None, now=NOW)
    assert not any("claimed twice" in w for w in report.warnings)
