"""The report with internal tenants: capacity split into internal use, external sales and idle
per model and day, and the internal tenant's use shown back at cost. Truth by hand.

Ledger (2025-03-01 10:00-11:00 UTC, H100, both GPUs registered): g0 shared by t (external) at
600 milli, lab (internal) at 300 and the idle remainder at 100; g1 a whole GPU for lab.
Register (scenario.register): depreciation 1.00 per GPU-hour, other opex 0.25 per available
GPU-hour, no energy: 2 GPUs over the observed hour cost 2 x 1.00 + 2 x 0.25 = 2.50 for 2
available GPU-hours, 1.25 per GPU-hour.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from analytics.economics import compute
from analytics.ledger_facts import load_facts, parse_period
from analytics.page import render_html
from analytics.report import build_report, with_internal_use
from analytics.summary import SHOWBACK_TITLE, SPLIT_TITLE, print_summary
from analytics.tenant_kinds import TenantKindError, load_internal_tenants
from analytics.usage_split import ALL_DAYS, FLEET, load_tenant_usage
from tests.integration.analytics.scenario import MODEL, register
from tests.integration.billing.shared_ledger import insert_shared
from tests.ledger_rows import LedgerRow

pytestmark = pytest.mark.integration

FULL = (1 << 60) - 1
T0 = datetime(2025, 3, 1, 10, 0)
DAY = "2025-03-01"


def hour(tenant: str, job: str, gpu: str, share: int) -> list[tuple[LedgerRow, int]]:
    return [
        (LedgerRow(T0 + timedelta(minutes=i), tenant, job, gpu, MODEL, FULL), share)
        for i in range(60)
    ]


def book(tmp_path: Path) -> Path:
    path = tmp_path / "book.toml"
    path.write_text(
        '[tenants.t]\nname = "T"\n[tenants.lab]\nname = "Lab"\nkind = "internal"\n',
        encoding="utf-8",
    )
    return path


def test_report_splits_capacity_and_shows_internal_use_back_at_cost(
    clickhouse: Any, tmp_path: Path
) -> None:
    # given
    insert_shared(
        clickhouse,
        hour("t", "a", "g0", 600)
        + hour("lab", "r", "g0", 300)
        + hour("__idle__", "", "g0", 100)
        + hour("lab", "s", "g1", 1000),
    )
    span = parse_period("2025-03")
    reg = register()
    facts = load_facts(clickhouse, span)
    internal = load_internal_tenants(book(tmp_path))
    assert internal == frozenset({"lab"})
    # when
    report = with_internal_use(
        compute(facts, reg, now=datetime(2025, 4, 1, tzinfo=UTC)),
        facts,
        load_tenant_usage(clickhouse, span),
        internal,
        reg,
    )
    # then: the split of the hour, in milli-GPU-seconds
    rows = {(s.gpu_model, s.day): s for s in report.split}
    assert set(rows) == {(MODEL, DAY), (MODEL, ALL_DAYS), (FLEET, DAY), (FLEET, ALL_DAYS)}
    s = rows[(MODEL, DAY)]
    assert (s.internal_milli, s.external_milli, s.idle_milli) == (
        (300 + 1000) * 3600,
        600 * 3600,
        100 * 3600,
    )
    # the split covers exactly the capacity the report counts (views over the same ledger)
    assert s.capacity_milli == report.fleet.available_milli == 7_200_000
    # no invoices: external revenue is t's 0.6 GPU-h at the on-demand 2.00 = 1.20 (lab is not
    # revenue), and the report says the headline revenue rated lab too
    assert rows[(FLEET, ALL_DAYS)].external_revenue == Decimal("1.20")
    assert report.fleet.revenue == Decimal("3.80")  # (0.6 + 1.3) x 2.00: lab included
    assert any("rate internal tenants' use (lab)" in w for w in report.warnings)
    # showback: lab 1.3 GPU-h at 1.25 = 1.625 -> 1.62 (half-even)
    (line,) = report.showback
    assert (line.tenant, line.gpu_model, line.milli) == ("lab", MODEL, 4_680_000)
    assert (line.cost_per_gpu_hour, line.amount) == (Decimal("1.250000"), Decimal("1.62"))
    assert report.internal_tenants == ("lab",)
    # and both outputs show it
    page = render_html(report)
    assert "chart-split" in page and SPLIT_TITLE in page and "showback, not invoiced" in page
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200))
    text = out.getvalue()
    assert SPLIT_TITLE in text and SHOWBACK_TITLE in text
    assert "1.300000" in text and "1.250000" in text and "1.62" in text
    assert "lab (internal)" in text


def test_build_report_reads_the_kinds_from_the_price_book(clickhouse: Any, tmp_path: Path) -> None:
    insert_shared(clickhouse, hour("t", "a", "g0", 600) + hour("lab", "r", "g0", 400))
    report = build_report(clickhouse, "2025-03", pricebook_path=book(tmp_path))
    fleet = next(s for s in report.split if (s.gpu_model, s.day) == (FLEET, ALL_DAYS))
    assert (fleet.internal_milli, fleet.external_milli, fleet.idle_milli) == (
        400 * 3600,
        600 * 3600,
        0,
    )
    assert [(s.tenant, s.milli) for s in report.showback] == [("lab", 400 * 3600)]
    # the demo's book marks only its fleet's research team internal: lab is then a customer
    plain = build_report(clickhouse, "2025-03")
    assert plain.showback == () and plain.internal_tenants == ("research",)
    assert next(s for s in plain.split if s.gpu_model == FLEET).external_milli == 1000 * 3600


def test_a_bad_kind_in_the_price_book_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[tenants.lab]\nkind = "staff"\n', encoding="utf-8")
    with pytest.raises(TenantKindError, match="tenants.lab: kind 'staff' is not one of"):
        load_internal_tenants(path)
