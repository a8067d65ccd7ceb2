"""The prices one invoice is rated with: a snapshot of the price book for one tenant and period.

Every invoice document embeds its snapshot, so re-rating a finalized period (adjustments,
reconcile) uses the prices it was issued with, and a later price-book edit never rewrites it.

Which rate prices a GPU-second (``rate_at``): the tenant's negotiated rate in force, else the
list rate in force; a MIG profile without a rate of its own ("<parent> MIG 3g.40gb") is priced
at its parent's rate x g/7, rounded half-even to 6 decimals (the price shown and used).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from billing.errors import BillingError
from billing.money import round_money
from billing.period import Period
from billing.pricebook import (
    MIG_SLICES,
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
    TaxRate,
    Tier,
    mig_parent,
    rates_in,
    round_price,
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
    def from_pricebook(
        cls,
        book: PriceBook,
        tenant: str,
        period: Period,
        credits_used: Mapping[str, Decimal] | None = None,
        *,
        list_rates: tuple[Rate, ...] | None = None,
    ) -> TenantPricing:
        """``list_rates``: ``book.rates_for_period(period)`` when the caller has it already (a
        run prices every tenant of the period with the same list)."""
        contract = book.contracts.get(tenant)
        if contract is None:
            raise BillingError(
                f"tenant {tenant!r} has usage in {period} but no contract in the price book "
                f"{book.source}: add a [tenants.{tenant}] table"
            )
        used = credits_used or {}
        remaining = tuple(
            (
                c.id,
                round_money(
                    max(c.amount - used.get(c.id, Decimal(0)), Decimal(0)), book.minor_unit
                ),
            )
            for c in sorted(contract.credits, key=lambda c: c.order_key)
            if c.usable_in(period)
        )
        rates = rates_in(contract.rates, period) + (
            book.rates_for_period(period) if list_rates is None else list_rates
        )
        return cls(
            book.currency,
            book.minor_unit,
            book.issuer,
            dataclasses.replace(contract, rates=()),
            rates,
            remaining,
        )

    def rate_at(self, gpu_model: str, billing_class: BillingClass, ts: datetime) -> Rate | None:
        """The rate in force at ``ts`` (see the module doc for the order of precedence)."""
        found = self._in_force(gpu_model, billing_class, ts)
        mig = mig_parent(gpu_model) if found is None else None
        if mig is not None:
            parent = self._in_force(mig[0], billing_class, ts)
            if parent is not None:
                price = round_price(parent.price_per_gpu_hour * mig[1] / MIG_SLICES)
                found = Rate(
                    gpu_model,
                    billing_class,
                    price,
                    parent.effective_from,
                    parent.effective_until,
                    parent.tenant,
                )
        return found

    def _in_force(self, gpu_model: str, billing_class: BillingClass, ts: datetime) -> Rate | None:
        """The latest entry started on or before ``ts``'s UTC date; negotiated before list."""
        day = ts.date()
        best: Rate | None = None
        for r in self.rates:
            if r.gpu_model != gpu_model or r.billing_class != billing_class:
                continue
            in_force = r.effective_from <= day and (
                r.effective_until is None or day < r.effective_until
            )
            if in_force and (
                best is None
                or (bool(r.tenant), r.effective_from) > (bool(best.tenant), best.effective_from)
            ):
                best = r
        return best

    def credit(self, credit_id: str) -> Credit:
        return next(c for c in self.contract.credits if c.id == credit_id)

    def to_dict(self) -> dict[str, Any]:
        return cast(dict[str, Any], _plain(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TenantPricing:
        c = d["contract"]
        plan = Plan(
            c["plan"]["name"],
            c["plan"]["minimum_seconds"],
            c["plan"]["increment_seconds"],
            tuple(
                Tier(_dec_or_none(t["up_to_gpu_hours"]), Decimal(t["discount_pct"]))
                for t in c["plan"]["tiers"]
            ),
            # documents written before the option existed were all rated with it waived
            c["plan"].get("preempted_minimum", "waived"),
        )
        contract = Contract(
            tenant=c["tenant"],
            customer=Party(**_tuples(c["customer"])),
            plan=plan,
            default_class=c["default_class"],
            discount_pct=Decimal(c["discount_pct"]),
            commitments=tuple(
                Commitment(
                    x["gpu_model"],
                    Decimal(x["gpu_hours_per_month"]),
                    Decimal(x["rate"]),
                    Decimal(x["overage_rate"]),
                )
                for x in c["commitments"]
            ),
            energy=Energy(Decimal(c["energy"]["pue"]), Decimal(c["energy"]["price_per_kwh"]))
            if c["energy"]
            else None,
            credits=tuple(
                Credit(
                    x["id"],
                    x["kind"],
                    Decimal(x["amount"]),
                    date.fromisoformat(x["valid_from"]),
                    _date_or_none(x["valid_until"]),
                    x.get("gpu_model", ""),
                    x.get("billing_class", ""),
                )
                for x in c["credits"]
            ),
            tax_rate=Decimal(c["tax_rate"]),
            tax_label=c["tax_label"],
            # Documents written before issue 10 lack these: open contract, no minimum.
            starts_on=_date_or_none(c.get("starts_on")),
            ends_on=_date_or_none(c.get("ends_on")),
            minimum_monthly_spend=Decimal(c.get("minimum_monthly_spend", "0")),
            tax_rates=tuple(
                TaxRate(Decimal(x["rate"]), date.fromisoformat(x["effective_from"]))
                for x in c.get("tax_rates", [])
            ),
        )
        rates = tuple(
            Rate(
                r["gpu_model"],
                r["billing_class"],
                Decimal(r["price_per_gpu_hour"]),
                date.fromisoformat(r["effective_from"]),
                _date_or_none(r["effective_until"]),
                r.get("tenant", ""),
            )
            for r in d["rates"]
        )
        return cls(
            d["currency"],
            d["minor_unit"],
            Issuer(**_tuples(d["issuer"])),
            contract,
            rates,
            tuple((i, Decimal(v)) for i, v in d["credits_remaining"]),
        )


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(obj: Any) -> Any:
    """JSON-ready form: Decimals as exact strings (never floats), dates ISO, tuples as lists."""
    if type(obj) is Rate:  # the bulk of every pricing snapshot: spelled out for speed
        return {
            "gpu_model": obj.gpu_model,
            "billing_class": obj.billing_class,
            "price_per_gpu_hour": format(obj.price_per_gpu_hour, "f"),
            "effective_from": obj.effective_from.isoformat(),
            "effective_until": None
            if obj.effective_until is None
            else obj.effective_until.isoformat(),
            "tenant": obj.tenant,
        }
    names = _FIELDS.get(type(obj))
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    if names is not None:
        return {n: _plain(getattr(obj, n)) for n in names}
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
