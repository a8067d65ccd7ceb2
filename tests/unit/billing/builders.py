"""Builders for billing tests: a price book from keyword overrides, usage rows by the minute."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.invoice import Invoice
from billing.period import Period
from billing.pricebook import PriceBook, parse_pricebook
from billing.pricing import TenantPricing
from billing.rating import UsageRow, rate_invoice

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
JAN = Period(2026, 1)

BASE: dict[str, Any] = {
    "currency": "USD",
    "issuer": {"name": "GPU Meter Cloud", "number_prefix": "GM"},
    "rates": [
        # 3.60/GPU-h = 0.001 per GPU-second: hand arithmetic stays readable.
        {
            "gpu_model": H100,
            "billing_class": "on_demand",
            "price_per_gpu_hour": "3.60",
            "effective_from": "2026-01-01",
        },
        {
            "gpu_model": H100,
            "billing_class": "spot",
            "price_per_gpu_hour": "1.20",
            "effective_from": "2026-01-01",
        },
        {
            "gpu_model": A100,
            "billing_class": "on_demand",
            "price_per_gpu_hour": "1.80",
            "effective_from": "2026-01-01",
        },
    ],
    "plans": {"flat": {"minimum_seconds": 0, "increment_seconds": 1}},
    "tenants": {"t": {"name": "Tenant T", "plan": "flat"}},
}


def make_book(
    *,
    tenant: dict[str, Any] | None = None,
    plans: dict[str, Any] | None = None,
    rates: list[dict[str, Any]] | None = None,
    **top: Any,
) -> PriceBook:
    """The base book with the contract of tenant 't' / plans / extra rates overridden."""
    raw = copy.deepcopy(BASE)
    raw["tenants"]["t"].update(tenant or {})
    raw["plans"].update(plans or {})
    raw["rates"] += rates or []
    raw.update(top)
    return parse_pricebook(raw, source="test")


def minutes(
    job: str,
    start: str,
    count: int,
    *,
    tenant: str = "t",
    model: str = H100,
    klass: str = "",
    gpu: str = "g0",
    seconds: int = 60,
    energy_mj: int = 0,
) -> list[UsageRow]:
    """``count`` consecutive ledger minutes of one job on one GPU, from ``start`` (UTC)."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return [
        UsageRow(tenant, job, klass, model, gpu, t0 + timedelta(minutes=i), seconds, energy_mj)
        for i in range(count)
    ]


def rate(
    book: PriceBook,
    rows: list[UsageRow],
    *,
    tenant: str = "t",
    period: Period = JAN,
    credits_used: dict[str, Decimal] | None = None,
) -> Invoice:
    pricing = TenantPricing.from_pricebook(book, tenant, period, credits_used)
    return rate_invoice(pricing, tenant, period, rows)


def amounts(inv: Invoice) -> list[tuple[str, str]]:
    """(kind, amount) per line: what the golden tests compare."""
    return [(ln.kind, str(ln.amount)) for ln in inv.lines]
