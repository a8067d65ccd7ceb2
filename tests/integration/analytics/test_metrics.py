"""Metrics on a hand-built scenario equal hand-computed values (arithmetic in the comments)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from analytics.economics import compute
from analytics.ledger_facts import load_facts, parse_period
from schemas.work import WORK_UNITS_COLUMNS, WorkUnitsReported
from tests.integration.analytics.scenario import (
    MODEL,
    NOW,
    START,
    insert_minutes,
    register,
    two_gpu_scenario,
)

pytestmark = pytest.mark.integration
D = Decimal


@pytest.fixture
def scenario(clickhouse):  # type: ignore[no-untyped-def]
    insert_minutes(clickhouse, two_gpu_scenario())
    return clickhouse


def test_utilization_energy_and_economics_from_on_demand_rating(scenario) -> None:  # type: ignore[no-untyped-def]
    # given the two-GPU scenario and no invoice tables
    # when the day is computed with costs accrued up to 02:00
    report = compute(load_facts(scenario, parse_period("2025-03-01")), register(), now=NOW)
    f = report.fleet

    # then usage: available 2 GPUs x 7 200 s = 14 400 s (4 h); allocated g1 7 200 + g2 3 600
    # = 10 800 s (3 h); idle 3 600 s; active g1 3 600 + 60 x 30 = 5 400, g2 3 600 -> 9 000 s
    assert (f.available_s, f.allocated_s, f.idle_s, f.active_s) == (14_400, 10_800, 3_600, 9_000)
    assert f.utilization == D("0.75")  # 10 800 / 14 400
    # efficiency: SM sums g1 120 x 3 000 + g2 60 x 6 000 = 720 000, / 10 800 s = 66.67 %
    assert f.efficiency_pct == pytest.approx(720_000 / 10_800)
    # energy: g1 120 x 18e6 + g2 (60 x 36e6 + 60 x 6e6) = 4.68e9 mJ = 1.3 kWh; x PUE 1.5 = 1.95
    assert f.energy_kwh == D("1.3")
    assert f.facility_kwh == D("1.95")
    # energy cost: hour 0 = (0.3 + 0.6) kWh x 1.5 x 0.05 (night band) = 0.0675;
    # hour 1 = (0.3 + 0.1) kWh x 1.5 x 0.10 = 0.06; total 0.1275
    assert f.energy_cost == D("0.1275")
    # depreciation: 1.00 per GPU-hour x 2 GPUs x 2 h = 4.00; opex 0.25 x 4 GPU-h = 1.00
    assert f.depreciation.quantize(D("0.000001")) == D("4.000000")
    assert f.other_opex == D("1.00")
    cost = D("4") + D("0.1275") + D("1")  # 5.1275
    assert f.cost.quantize(D("0.000001")) == cost
    # revenue: no invoices -> 3 allocated h x 2.00 on-demand = 6.00
    assert report.revenue_source == "on_demand_rating"
    assert f.revenue == D("6.00")
    assert f.margin.quantize(D("0.000001")) == D("0.8725")
    assert f.cost_per_gpu_hour.quantize(D("0.000001")) == D("1.281875")  # 5.1275 / 4
    # book value: 59 days (1 416 h) in service at 1.00/h before 03-01: 43 800 - 1 416 = 42 384
    # per GPU at 00:00, 42 382 at 02:00; mean over 2 GPUs = (84 768 + 84 764) / 2 = 84 766
    assert f.book_value.quantize(D("0.0001")) == D("84766")
    # ROA annualized = 0.8725 / 84 766 x (31 536 000 s / 7 200 s = 4 380) = 0.0450829...
    expected_roa = D("0.8725") / D("84766") * 4380
    assert f.roa_annualized.quantize(D("0.000001")) == expected_roa.quantize(D("0.000001"))
    # break-even: cost / (revenue per allocated h 6.00 / 3 = 2.00 x 4 available h)
    #           = 5.1275 / 8 = 0.6409375
    assert f.break_even_utilization.quantize(D("0.0000001")) == D("0.6409375")
    # idle value at spot: 1 idle h x 1.00 = 1.00
    assert f.idle_value == D("1.00")

    # by model equals the fleet (one model); by day: one day; tenants ordered by GPU-hours
    assert [m.key for m in report.by_model] == [MODEL]
    assert report.by_model[0].revenue == D("6.00")
    assert [(t.tenant, t.allocated_s, t.revenue) for t in report.tenants] == [
        ("A", 7_200, D("4.00")),
        ("B", 3_600, D("2.00")),
    ]
    assert report.unregistered_gpus == ()


def test_revenue_from_invoices_excludes_tax_and_prefers_finalized(scenario) -> None:  # type: ignore[no-untyped-def]
    # given invoices for 2025-03: A finalized (usage 10.00 on H100, commitment 2.00 with no
    # model, tax 1.20) plus a stale A draft (99.00, ignored: A has a finalized invoice);
    # B only a draft (usage 3.00)
    scenario.insert(
        "invoices",
        [
            ["inv-a", "A", "2025-03", "finalized", "1", "USD", D("12"), D("1.2"), D("13.2")],
            ["inv-a-old", "A", "2025-03", "draft", "", "USD", D("99"), D("0"), D("99")],
            ["inv-b", "B", "2025-03", "draft", "", "USD", D("3"), D("0"), D("3")],
        ],
        column_names=[
            "invoice_id",
            "tenant",
            "period",
            "status",
            "number",
            "currency",
            "subtotal",
            "tax",
            "total",
        ],
    )
    lines = [
        ["inv-a", "A", "2025-03", 1, "usage", MODEL, "on_demand", "", D(2), "GPU-h", D(5), D("10")],
        ["inv-a", "A", "2025-03", 2, "commitment", "", "", "", D(1), "", D(2), D("2")],
        ["inv-a", "A", "2025-03", 3, "tax", "", "", "", D(1), "", D("1.2"), D("1.2")],
        ["inv-a-old", "A", "2025-03", 1, "usage", MODEL, "", "", D(1), "", D(99), D("99")],
        ["inv-b", "B", "2025-03", 1, "usage", MODEL, "", "", D(1), "", D(3), D("3")],
    ]
    scenario.insert(
        "invoice_lines",
        lines,
        column_names=[
            "invoice_id",
            "tenant",
            "period",
            "line_no",
            "kind",
            "gpu_model",
            "billing_class",
            "description",
            "quantity",
            "unit",
            "unit_price",
            "amount",
        ],
    )

    # when the month is computed (costs accrued to 02:00 on the 1st)
    report = compute(load_facts(scenario, parse_period("2025-03")), register(), now=NOW)

    # then revenue = 10 + 2 + 3 = 15 (tax and the superseded draft left out)
    assert report.revenue_source == "invoices"
    assert "1 finalized and 1 draft" in report.revenue_note
    assert report.fleet.revenue == D("15")
    assert report.by_model[0].revenue == D("15")
    # margin = 15 - 5.1275 = 9.8725; break-even = 5.1275 / (15 / 3 h = 5.00 x 4 h) = 0.256375
    assert report.fleet.margin.quantize(D("0.000001")) == D("9.8725")
    assert report.fleet.break_even_utilization.quantize(D("0.000001")) == D("0.256375")
    assert {t.tenant: t.revenue for t in report.tenants} == {"A": D("12"), "B": D("3")}


def test_work_units_give_cost_and_revenue_per_million_tokens(scenario) -> None:  # type: ignore[no-untyped-def]
    # given job j1 (2 allocated H100-hours) served 3 000 000 tokens, reported in two windows,
    # one of them delivered twice (replay must not count twice)
    t0 = int(START.timestamp())
    events = [
        WorkUnitsReported(
            tenant="A",
            job="j1",
            source="replica-0",
            unit="tokens",
            quantity=1_000_000,
            window_start=t0,
            window_end=t0 + 3600,
        ),
        WorkUnitsReported(
            tenant="A",
            job="j1",
            source="replica-0",
            unit="tokens",
            quantity=2_000_000,
            window_start=t0 + 3600,
            window_end=t0 + 7200,
        ),
    ]
    rows = [e.row() for e in [*events, events[0]]]
    scenario.insert("work_units", rows, column_names=list(WORK_UNITS_COLUMNS))

    report = compute(load_facts(scenario, parse_period("2025-03-01")), register(), now=NOW)

    (w,) = report.work
    assert (w.tenant, w.job, w.gpu_model, w.unit, w.quantity) == (
        "A",
        "j1",
        MODEL,
        "tokens",
        D(3_000_000),
    )
    # cost: 2 GPU-h x 1.281875 (fleet cost per GPU-hour) = 2.56375 -> per M tokens / 3 = 0.854583
    assert w.cost_per_million.quantize(D("0.000001")) == D("0.854583")
    # revenue: 2 GPU-h x 2.00 per allocated hour = 4.00 -> per M tokens = 1.333333
    assert w.revenue_per_million.quantize(D("0.000001")) == D("1.333333")


def test_views_agree_with_python_metrics(scenario) -> None:  # type: ignore[no-untyped-def]
    # The SQL views (what analysts and Grafana read) must tell the same story as the report.
    row = scenario.query(
        "SELECT sum(available_seconds), sum(allocated_seconds), sum(active_seconds), "
        "sum(idle_seconds), sum(energy_mj) FROM utilization_daily WHERE day = '2025-03-01'"
    ).result_rows[0]
    assert tuple(int(v) for v in row) == (14_400, 10_800, 9_000, 3_600, 4_680_000_000)
    util = scenario.query(
        "SELECT utilization_pct, efficiency_pct FROM utilization_daily"
    ).result_rows[0]
    assert (float(util[0]), float(util[1])) == (75.0, 66.67)
    from analytics.ledger_facts import sync_asset_rates

    sync_asset_rates(scenario, register())
    idle = scenario.query("SELECT idle_gpu_hours, idle_value FROM idle_capacity_daily").result_rows
    assert [(float(h), D(v)) for h, v in idle] == [(1.0, D("1"))]


def test_depreciation_stops_at_end_of_life_and_book_value_at_residual() -> None:
    reg = register()
    a = reg.assets[0]
    # 5 years of 365 days after 2025-01-01 is 2029-12-31 (2028 is a leap year)
    assert a.end_of_life == START.replace(year=2029, month=12, day=31, hour=0)
    assert a.book_value(a.end_of_life + timedelta(days=10)) == D("0")
    assert a.depreciation(a.end_of_life, a.end_of_life + timedelta(days=1)) == D("0")


def test_costs_accrue_over_the_observed_span_not_the_whole_month(scenario) -> None:  # type: ignore[no-untyped-def]
    # given two observed hours in March and a clock long after March
    report = compute(load_facts(scenario, parse_period("2025-03")), register())
    # then depreciation covers 00:00-02:00 only: 2 GPUs x 2 h x 1.00 = 4.00
    assert report.fleet.depreciation.quantize(D("0.000001")) == D("4.000000")
    assert report.fleet.accrual_s == 7_200
