"""Revenue recognition: commitments and minimum spend are earned over the days they cover, not
on the days a tenant ran jobs; unknown prices and assets are warned about, not shown as 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from analytics.economics import compute
from analytics.ledger_facts import Facts, GpuHour, JobTotal, RevenueLine, parse_period
from tests.integration.analytics.scenario import MODEL, register

MARCH = parse_period("2025-03")
D1 = datetime(2025, 3, 1, tzinfo=UTC)


def _hour(day: int, tenant_s: int = 3600, model: str = MODEL, gpu: str = "g1") -> GpuHour:
    # facts are in milli-GPU-seconds (contract v2): a whole GPU-second is 1000
    return GpuHour(
        D1 + timedelta(days=day),
        model,
        "n1",
        gpu,
        3600 * 1000,
        tenant_s * 1000,
        tenant_s * 1000,
        (3600 - tenant_s) * 1000,
        0.0,
        0,
    )


def test_commitment_revenue_is_spread_evenly_over_the_month() -> None:
    # Given tenant A ran 1 h on Mar 1 only, and its invoice has a 31.00 commitment for the
    # whole month plus 10.00 of usage
    facts = Facts(
        MARCH,
        (_hour(0), _hour(1, tenant_s=0)),
        (JobTotal("A", "j", MODEL, 3600 * 1000, 3600 * 1000, 0.0, 0),),
        (
            RevenueLine("A", MODEL, Decimal("10.00")),
            RevenueLine("A", MODEL, Decimal("31.00"), (MARCH.start, MARCH.end)),
        ),
    )
    report = compute(facts, register(), now=D1 + timedelta(days=2))
    by_day = {m.key: m.revenue for m in report.by_day}
    # Then Mar 1 earns the usage (10.00) plus 1/31 of the commitment (1.00); Mar 2 earns 1.00.
    # Before: the whole 41.00 landed on Mar 1 (the only day with allocated seconds).
    assert by_day == {"2025-03-01": Decimal("11"), "2025-03-02": Decimal("1")}
    assert report.fleet.revenue == Decimal("41.00")  # the month keeps the whole amount


def test_partial_contract_revenue_covers_only_its_days() -> None:
    covers = (D1 + timedelta(days=1), MARCH.end)  # contract from Mar 2: 30 days
    facts = Facts(
        MARCH,
        (_hour(0, tenant_s=0), _hour(1, tenant_s=0)),
        (),
        (RevenueLine("A", MODEL, Decimal("30.00"), covers),),
    )
    by_day = {m.key: m.revenue for m in compute(facts, register(), now=MARCH.end).by_day}
    assert by_day == {"2025-03-01": Decimal(0), "2025-03-02": Decimal("1")}


def test_usage_on_a_model_without_price_or_asset_is_warned_about() -> None:
    a40 = "NVIDIA A40"
    facts = Facts(
        MARCH,
        (_hour(0, model=a40, gpu="x1"),),
        (JobTotal("A", "j", a40, 3600 * 1000, 3600 * 1000, 0.0, 0),),
        None,
    )
    report = compute(facts, register(), now=D1 + timedelta(days=1))
    assert any(
        "1.00 GPU-h ran on NVIDIA A40, which has no price" in w and "unknown, not 0" in w
        for w in report.warnings
    ), report.warnings
    assert any("match no asset" in w for w in report.warnings)
