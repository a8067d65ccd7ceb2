"""The HTML report renders offline with every chart; the CLI summary prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.report import CHART_IDS, build_report, print_summary, render_html, write_report
from tests.integration.analytics.scenario import NOW, insert_minutes, two_gpu_scenario

pytestmark = pytest.mark.integration


def test_write_report_contains_every_chart_offline(clickhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # given a small dataset
    insert_minutes(clickhouse, two_gpu_scenario())
    # when the report is written with the demo asset register
    path = write_report(clickhouse, "2025-03", tmp_path, None)
    # then one self-contained HTML file holds every chart and plotly.js itself
    html = path.read_text()
    assert path.name == "gpumeter-report-2025-03.html"
    for div_id in CHART_IDS:
        assert f'id="{div_id}"' in html
    for title in (
        "Fleet utilization over time",
        "GPU x time: allocation and activity",
        "Revenue vs cost by day",
        "Idle capacity by GPU model",
        "Top tenants",
    ):
        assert title in html
    assert "<script src=" not in html  # plotly.js inlined: works offline
    assert "on_demand_rating" in html  # says where revenue came from
    assert len(html) > 3_000_000  # plotly.js is inlined


def test_terminal_summary_names_revenue_source(clickhouse) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    insert_minutes(clickhouse, two_gpu_scenario())
    report = build_report(clickhouse, "2025-03-01", None, now=NOW)
    console = Console(record=True, width=250)
    print_summary(report, console)
    text = console.export_text()
    assert "revenue source: on_demand_rating" in text
    assert "By GPU model: usage" in text and "Top tenants" in text
    assert "75.0%" in text  # fleet utilization
    assert render_html(report).count("plotly-graph-div") >= len(CHART_IDS)


def test_report_on_an_empty_period_still_renders(clickhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_report(clickhouse, "2024-01", tmp_path, None)
    assert 'id="chart-heatmap"' in path.read_text()
