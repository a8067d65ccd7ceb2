"""The prices one invoice is rated with: a snapshot of the price book for one tenant and period.

Every invoice document embeds its snapshot, so re-rating a finalized period (adjustments,
reconcile) uses the prices it was issued with, and a later price-book edit never rewrites it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from billing.errors import BillingError
from billing.period import Period
from billing.pricebook import (
    BillingClass,
    Commitment,
    Contract,
    Credit,
    Energy,
    Issuer,
    Party,
    Plan,
    PriceBook,
    Rate,
    Tier,
)


@dataclass(frozen=True)
class TenantPricing:
    currency: str
    minor_unit: int
    issuer: Issuer
    contract: Contract
    rates: tuple[Rate, ...]
    #: (credit id, balance left before this invoice); consumption is read from finalized invoices.
    credits_remaining: tuple[tuple[str, Decimal], ...] = ()

    @classmethod
    def from_pricebook(cls, book: PriceBook, tenant: str, period: Period,
                       credits_used: Mapping[str, Decimal] | None = None) -> TenantPricing:
        contract = book.contracts.get(tenant)
        if contract is None:
            raise BillingError(
                f"tenant {tenant!r} has usage in {period} but no contract in the price book "
                f"{book.source}: add a [tenants.{tenant}] table"
            )
        used = credits_used or {}
        remaining = tuple(
            (c.id, max(c.amount - used.get(c.id, Decimal(0)), Decimal(0)))
            for c in contract.credits if c.usable_in(period)
        )
        return cls(book.currency, book.minor_unit, book.issuer, contract,
                   book.rates_for_period(period), remaining)

    def rate_at(self, gpu_model: str, billing_class: BillingClass, ts: datetime) -> Rate | None:
        """The rate in force at ``ts``: the latest entry started on or before its UTC date."""
        day = ts.date()
        best: Rate | None = None
        for r in self.rates:
            if r.gpu_model != gpu_model or r.billing_class != billing_class:
                continue
            in_force = r.effective_from <= day and (
                r.effective_until is None or day < r.effective_until)
            if in_force and (best is None or r.effective_from > best.effective_from):
                best = r
        return best

    def credit(self, credit_id: str) -> Credit:
        return next(c for c in self.contract.credits if c.id == credit_id)

    def to_dict(self) -> dict[str, Any]:
        return cast(dict[str, Any], _plain(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TenantPricing:
        c = d["contract"]
        plan = Plan(c["plan"]["name"], c["plan"]["minimum_seconds"],
                    c["plan"]["increment_seconds"],
                    tuple(Tier(_dec_or_none(t["up_to_gpu_hours"]), Decimal(t["discount_pct"]))
                          for t in c["plan"]["tiers"]))
        contract = Contract(
            tenant=c["tenant"], customer=Party(**_tuples(c["customer"])), plan=plan,
            default_class=c["default_class"], discount_pct=Decimal(c["discount_pct"]),
            commitments=tuple(Commitment(x["gpu_model"], Decimal(x["gpu_hours_per_month"]),
                                         Decimal(x["rate"]), Decimal(x["overage_rate"]))
                              for x in c["commitments"]),
            energy=Energy(Decimal(c["energy"]["pue"]), Decimal(c["energy"]["price_per_kwh"]))
            if c["energy"] else None,
            credits=tuple(Credit(x["id"], x["kind"], Decimal(x["amount"]),
                                 date.fromisoformat(x["valid_from"]), _date_or_none(x["valid_until"]))
                          for x in c["credits"]),
            tax_rate=Decimal(c["tax_rate"]), tax_label=c["tax_label"],
        )
        rates = tuple(Rate(r["gpu_model"], r["billing_class"], Decimal(r["price_per_gpu_hour"]),
                           date.fromisoformat(r["effective_from"]),
                           _date_or_none(r["effective_until"])) for r in d["rates"])
        return cls(d["currency"], d["minor_unit"], Issuer(**_tuples(d["issuer"])), contract,
                   rates, tuple((i, Decimal(v)) for i, v in d["credits_remaining"]))


def _plain(obj: Any) -> Any:
    """JSON-ready form: Decimals as exact strings (never floats), dates ISO, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, list | tuple):
        return [_plain(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _dec_or_none(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def _date_or_none(v: str | None) -> date | None:
    return None if v is None else date.fromisoformat(v)
