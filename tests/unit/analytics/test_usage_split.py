"""Capacity split (internal / external / idle) and external revenue per model and day, and the
showback at cost. Every expected value is worked out by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from analytics.ledger_facts import RevenueLine
from analytics.metrics import Metrics
from analytics.showback import ShowbackLine, showback_at_cost, tenant_totals
from analytics.tenant_kinds import TenantKindError, internal_tenants
from analytics.usage_split import ALL_DAYS, FLEET, TenantUsage, split_capacity

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
D1, D2 = "2025-03-01", "2025-03-02"
INTERNAL = frozenset({"lab"})

USAGE = (
    TenantUsage(D1, H100, "t", 2_000_000),
    TenantUsage(D1, H100, "lab", 1_000_000),
    TenantUsage(D1, H100, "__idle__", 600_000),
    TenantUsage(D2, H100, "t", 1_000_000),
    TenantUsage(D2, H100, "__idle__", 2_600_000),
    TenantUsage(D1, A100, "u", 3_600_000),
    TenantUsage(D2, A100, "__idle__", 3_600_000),
)
LINES = (
    RevenueLine("t", H100, Decimal("9.00")),  # usage: t's H100 days 2:1 -> 6.00, 3.00
    RevenueLine("t", "", Decimal("-0.90")),  # discount: t only ran H100 -> -0.60, -0.30
    RevenueLine(  # commitment over both days, evenly: 6.00 a day
        "u",
        A100,
        Decimal("12.00"),
        (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)),
    ),
)


def test_split_adds_up_per_model_and_day_and_carries_external_revenue() -> None:
    rows = {(s.gpu_model, s.day): s for s in split_capacity(USAGE, INTERNAL, LINES)}
    h1 = rows[(H100, D1)]
    assert (h1.internal_milli, h1.external_milli, h1.idle_milli) == (1_000_000, 2_000_000, 600_000)
    assert h1.capacity_milli == 3_600_000 and h1.capacity_h == 1
    assert h1.share(h1.internal_milli) == Decimal(1_000_000) / 3_600_000
    assert h1.sold_of_left == Decimal(2_000_000) / 2_600_000  # 10/13 of what lab left was sold
    assert h1.external_revenue == Decimal("5.40")  # 6.00 - 0.60
    assert rows[(H100, D2)].external_revenue == Decimal("2.70")  # 3.00 - 0.30
    assert rows[(H100, ALL_DAYS)].external_revenue == Decimal("8.10")
    assert (rows[(H100, ALL_DAYS)].internal_milli, rows[(H100, ALL_DAYS)].idle_milli) == (
        1_000_000,
        3_200_000,
    )
    assert rows[(A100, D1)].external_revenue == Decimal("6.00")
    assert rows[(A100, D2)].external_revenue == Decimal("6.00")
    assert rows[(A100, D2)].revenue_per_external_hour is None  # nothing sold that day
    # 3,600,000 milli = 1 GPU-h sold on D1 for 6.00
    assert rows[(A100, D1)].revenue_per_external_hour == Decimal("6.00")
    fleet = rows[(FLEET, ALL_DAYS)]
    assert (fleet.internal_milli, fleet.external_milli, fleet.idle_milli) == (
        1_000_000,
        6_600_000,
        6_800_000,
    )
    assert fleet.external_revenue == Decimal("20.10")
    assert rows[(FLEET, D1)].external_revenue == Decimal("11.40")
    assert rows[(FLEET, D2)].external_revenue == Decimal("8.70")


def test_split_rows_are_ordered_model_days_model_total_then_fleet() -> None:
    keys = [(s.gpu_model, s.day) for s in split_capacity(USAGE, INTERNAL, LINES)]
    assert keys == [
        (A100, D1),
        (A100, D2),
        (A100, ALL_DAYS),
        (H100, D1),
        (H100, D2),
        (H100, ALL_DAYS),
        (FLEET, D1),
        (FLEET, D2),
        (FLEET, ALL_DAYS),
    ]


def test_without_internal_tenants_internal_is_zero_and_lab_is_external() -> None:
    rows = {(s.gpu_model, s.day): s for s in split_capacity(USAGE, frozenset(), ())}
    assert rows[(H100, D1)].internal_milli == 0
    assert rows[(H100, D1)].external_milli == 3_000_000
    assert rows[(FLEET, ALL_DAYS)].external_revenue == 0
    assert split_capacity((), INTERNAL, LINES) == ()


def _metrics(key: str, **kw: Any) -> Metrics:
    base: dict[str, Any] = dict(
        dimension="gpu_model",
        key=key,
        gpus=2,
        available_milli=7_200_000,
        allocated_milli=0,
        active_milli=0,
        idle_milli=0,
        sm_sum=0.0,
        energy_mj=0,
        pue=Decimal("1.5"),
        revenue=Decimal(0),
        depreciation=Decimal(1),
        energy_cost=Decimal(1) / 3,
        other_opex=Decimal(0),
        book_value_start=Decimal(0),
        book_value_end=Decimal(0),
        accrual_s=3600,
        idle_value=Decimal(0),
        list_rate=None,
    )
    base.update(kw)
    return Metrics(**base)


def test_showback_is_priced_at_the_models_cost_per_gpu_hour() -> None:
    # H100: cost 1 + 1/3 over 2 available GPU-h = 0.6666... -> rate 0.666667 (6 decimals)
    # lab: 1,000,000 milli x 0.666667 / 3,600,000 = 0.185185277... -> 0.19
    # ops: 9,000,000 milli (2.5 GPU-h) x 0.666667 = 1.6666675 -> 1.67
    lines = showback_at_cost(
        {("lab", H100): 1_000_000, ("ops", H100): 9_000_000, ("ops", A100): 3_600_000},
        [_metrics(H100), _metrics(A100)],
        unknown_models={A100},
    )
    assert lines == (
        ShowbackLine("lab", H100, 1_000_000, Decimal("0.666667"), Decimal("0.19")),
        ShowbackLine("ops", A100, 3_600_000, None, None),  # no asset: unknown, not 0
        ShowbackLine("ops", H100, 9_000_000, Decimal("0.666667"), Decimal("1.67")),
    )
    assert lines[0].gpu_hours == Decimal(1_000_000) / 3_600_000
    assert tenant_totals(lines) == {"lab": Decimal("0.19"), "ops": None}


def test_internal_tenants_from_the_price_book_table() -> None:
    raw = {"tenants": {"a": {}, "lab": {"kind": "internal"}, "c": {"kind": "external"}}}
    assert internal_tenants(raw) == frozenset({"lab"})
    with pytest.raises(TenantKindError, match="tenants.a: kind 'partner' is not one of"):
        internal_tenants({"tenants": {"a": {"kind": "partner"}}})
