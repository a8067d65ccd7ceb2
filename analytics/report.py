"""The utilization and return-on-assets report: compute it for a period (``build_report``) and
write it as one offline HTML file (``write_report``, the one call the demo needs). The terminal
summary is :mod:`analytics.summary`, the HTML page and its charts :mod:`analytics.page`. Money
is Decimal until the moment it is drawn or printed.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from analytics.assets import load_assets
from analytics.conflicts import conflict_warnings
from analytics.economics import compute
from analytics.ledger_facts import load_facts, parse_period, sync_asset_rates
from analytics.metrics import Report
from analytics.page import CHART_IDS as CHART_IDS
from analytics.page import render_html
from analytics.summary import print_summary as print_summary


def build_report(
    client: Client, period: str, assets_path: Path | None = None, *, now: datetime | None = None
) -> Report:
    register = load_assets(assets_path)
    sync_asset_rates(client, register)
    span = parse_period(period)
    report = compute(load_facts(client, span), register, now=now)
    conflicts = conflict_warnings(client, span)
    return (
        dataclasses.replace(report, warnings=report.warnings + conflicts) if conflicts else report
    )


def write_report(
    client: Client, period: str, out_dir: Path, assets_path: Path | None = None
) -> Path:
    """Compute the period's report and write ``gpumeter-report-<period>.html``; return its path."""
    report = build_report(client, period, assets_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpumeter-report-{report.period.label}.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path
