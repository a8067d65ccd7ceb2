"""The utilization and return-on-assets report: compute it for a period (``build_report``) and
write it as one offline HTML file (``write_report``, the one call the demo needs). The terminal
summary is :mod:`analytics.summary`, the HTML page and its charts :mod:`analytics.page`. Money
is Decimal until the moment it is drawn or printed.

The report also splits capacity into internal use, external sales and idle per GPU model and
day (:mod:`analytics.usage_split`) and prices internal tenants' use at cost as showback
(:mod:`analytics.showback`); which tenants are internal comes from the price book file
(:mod:`analytics.tenant_kinds`, default: the demo's). Preemptions (allocations that lost
their GPUs, and the GPU-hours they lost) come from :mod:`analytics.preemptions`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from analytics.assets import AssetRegister, load_assets
from analytics.conflicts import conflict_warnings
from analytics.economics import compute
from analytics.ledger_facts import Facts, load_facts, parse_period, sync_asset_rates
from analytics.metrics import Report
from analytics.page import CHART_IDS as CHART_IDS
from analytics.page import render_html
from analytics.preemptions import load_preemptions, preemption_warnings
from analytics.revenue import rate_on_demand
from analytics.showback import showback_at_cost
from analytics.summary import print_summary as print_summary
from analytics.tenant_kinds import load_internal_tenants
from analytics.usage_split import (
    SplitReport,
    TenantUsage,
    load_tenant_usage,
    split_capacity,
)


def build_report(
    client: Client,
    period: str,
    assets_path: Path | None = None,
    *,
    now: datetime | None = None,
    pricebook_path: Path | None = None,
) -> SplitReport:
    register = load_assets(assets_path)
    internal = load_internal_tenants(pricebook_path)
    sync_asset_rates(client, register)
    span = parse_period(period)
    facts = load_facts(client, span)
    report = compute(facts, register, now=now)
    conflicts = conflict_warnings(client, span)
    if conflicts:
        report = dataclasses.replace(report, warnings=report.warnings + conflicts)
    split = with_internal_use(report, facts, load_tenant_usage(client, span), internal, register)
    preemptions = load_preemptions(client, span)
    return dataclasses.replace(
        split,
        preemptions=preemptions,
        warnings=split.warnings + preemption_warnings(preemptions),
    )


def with_internal_use(
    report: Report,
    facts: Facts,
    usage: tuple[TenantUsage, ...],
    internal: frozenset[str],
    register: AssetRegister,
) -> SplitReport:
    """The report plus the capacity split and the showback statement (no I/O)."""
    used = {u.tenant for u in usage if u.milli and u.tenant in internal}
    if facts.invoiced is not None:
        lines = list(facts.invoiced)
    else:  # no invoices: external usage at on-demand rates, as the report's fallback does
        lines = rate_on_demand([j for j in facts.jobs if j.tenant not in internal], register)
    milli: dict[tuple[str, str], int] = defaultdict(int)
    for u in usage:
        if u.tenant in used:
            milli[(u.tenant, u.gpu_model)] += u.milli
    unregistered = set(report.unregistered_gpus)
    unknown = {h.gpu_model for h in report.gpu_hours if h.gpu_uuid in unregistered}
    warnings = report.warnings
    if used and facts.invoiced is None:
        warnings += (
            "no invoices for the period: the revenue figures above rate internal tenants' use "
            f"({', '.join(sorted(used))}) at on-demand rates too; the internal / external split "
            "counts external use only",
        )
    showback = showback_at_cost(milli, report.by_model, unknown)
    if any(s.amount is None for s in showback):
        warnings += (
            "showback: some internal use ran on GPUs no asset matches; its cost is unknown, not 0",
        )
    base = {f.name: getattr(report, f.name) for f in dataclasses.fields(Report)}
    base["warnings"] = warnings
    return SplitReport(
        **base,
        split=split_capacity(usage, internal, lines),
        showback=showback,
        internal_tenants=tuple(sorted(internal)),
    )


def write_report(
    client: Client,
    period: str,
    out_dir: Path,
    assets_path: Path | None = None,
    *,
    pricebook_path: Path | None = None,
) -> Path:
    """Compute the period's report and write ``gpumeter-report-<period>.html``; return its path."""
    report = build_report(client, period, assets_path, pricebook_path=pricebook_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpumeter-report-{report.period.label}.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path
