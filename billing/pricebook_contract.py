"""Validating tenant contracts (``[tenants.<id>]``) of a price book; see billing/README.md.

A contract has dates (``starts_on``, optional ``ends_on``, inclusive UTC days): commitments and
the monthly minimum spend are billed only for its days, pro rata in a partial month, and need a
``starts_on`` so a run for a month long before (or after) the contract never bills them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from billing.pricebook import (
    BILLING_CLASSES,
    IDLE_TENANT,
    PCT_DECIMALS,
    PRICE_DECIMALS,
    TENANT_KINDS,
    Commitment,
    Contract,
    Credit,
    Energy,
    Party,
    Plan,
    TaxRate,
    TenantKind,
)

if TYPE_CHECKING:
    from billing.pricebook_parser import Parser


def parse_contracts(p: Parser, table: Any, plans: Mapping[str, Plan]) -> dict[str, Contract]:
    if not isinstance(table, dict) or not table:
        p.bad("tenants", "at least one [tenants.<name>] contract is required")
        return {}
    return {tenant: _contract(p, tenant, t, plans) for tenant, t in table.items()}


def parse_kinds(p: Parser, table: Any) -> dict[str, TenantKind]:
    """``[tenants.<id>] kind``: ``external`` (the default, invoiced) or ``internal`` (shown back
    at cost, never invoiced); only the tenants that are not external are returned.

    An internal tenant may not have a commitment or a minimum spend: both are money billed
    whether used or not, which only an invoice can carry."""
    if not isinstance(table, dict):
        return {}
    kinds: dict[str, TenantKind] = {}
    for tenant, t in table.items():
        where = f"tenants.{tenant}"
        kind = t.get("kind", "external") if isinstance(t, dict) else "external"
        if kind not in TENANT_KINDS:
            p.bad(
                where,
                f"kind {kind!r} is not one of {', '.join(TENANT_KINDS)} (external: invoiced; "
                "internal: shown back at cost, not invoiced)",
            )
            continue
        if kind == "external":
            continue
        kinds[tenant] = "internal"
        for key in ("commitments", "minimum_monthly_spend"):
            if t.get(key):
                p.bad(
                    where,
                    f"an internal tenant is shown back at cost, never invoiced: remove {key} "
                    "(or make the tenant external)",
                )
    return kinds


def _contract(p: Parser, tenant: str, t: Mapping[str, Any], plans: Mapping[str, Plan]) -> Contract:
    where = f"tenants.{tenant}"
    if tenant == IDLE_TENANT:
        p.bad(where, "idle capacity is never invoiced; remove this contract")
    plan_name = t.get("plan")
    plan = plans.get(plan_name) if isinstance(plan_name, str) else None
    if plan is None:
        p.bad(where, f"plan {plan_name!r} is not defined in [plans]")
        plan = Plan("?")
    starts = p.day(where, t, "starts_on", required=False)
    ends = p.day(where, t, "ends_on", required=False)
    if starts and ends and ends < starts:
        p.bad(where, f"ends_on {ends} is before starts_on {starts}")
    commitments = tuple(
        _commitment(p, f"{where}.commitments[{j}]", c)
        for j, c in enumerate(t.get("commitments", []))
    )
    minimum = p.money(where, t, "minimum_monthly_spend", required=False)
    if (commitments or minimum) and starts is None:
        p.bad(
            where,
            "starts_on is required with commitments or minimum_monthly_spend (they "
            "are billed only for the contract's days)",
        )
    energy = None
    if "energy" in t:
        ew = f"{where}.energy"
        energy = Energy(
            p.dec(ew, t["energy"], "pue", min_=Decimal(1), places=PRICE_DECIMALS),
            p.price(ew, t["energy"], "price_per_kwh"),
        )
    credits = tuple(
        _credit(p, f"{where}.credits[{j}] (id={c.get('id')!r})", c)
        for j, c in enumerate(t.get("credits", []))
    )
    if len({c.id for c in credits}) != len(credits):
        p.bad(where, "credit ids must be unique")
    return Contract(
        tenant=tenant,
        customer=Party(
            p.text(where, t, "name", tenant),
            tuple(t.get("address", ())),
            p.text(where, t, "tax_id"),
            p.text(where, t, "email"),
        ),
        plan=plan,
        default_class=p.klass(where, t.get("default_class", "on_demand")),
        discount_pct=p.dec(
            where, t, "discount_pct", required=False, max_=Decimal(100), places=PCT_DECIMALS
        ),
        commitments=commitments,
        energy=energy,
        credits=credits,
        tax_rate=p.dec(
            where, t, "tax_rate", required=False, max_=Decimal(1), places=PRICE_DECIMALS
        ),
        tax_label=p.text(where, t, "tax_label", "Tax"),
        starts_on=starts,
        ends_on=ends,
        minimum_monthly_spend=minimum,
        rates=p.rates(t.get("rates", []), prefix=f"{where}.rates", tenant=tenant, required=False),
        tax_rates=_tax_rates(p, where, t.get("tax_rates", [])),
    )


def _commitment(p: Parser, where: str, c: Mapping[str, Any]) -> Commitment:
    cw = f"{where} (gpu_model={c.get('gpu_model')!r})"
    if not p.known_model(c.get("gpu_model")):
        p.bad(cw, f"unknown GPU model {c.get('gpu_model')!r}")
    hours = p.dec(cw, c, "gpu_hours_per_month", positive=True)
    if (hours * 3600) % 1:
        p.bad(cw, f"gpu_hours_per_month {hours} must be a whole number of seconds")
    return Commitment(
        c.get("gpu_model", ""), hours, p.price(cw, c, "rate"), p.price(cw, c, "overage_rate")
    )


def _credit(p: Parser, where: str, c: Mapping[str, Any]) -> Credit:
    kind = c.get("kind", "promotional")
    if kind not in ("prepaid", "promotional"):
        p.bad(where, f"kind {kind!r} must be prepaid or promotional")
    model = p.text(where, c, "gpu_model")
    if model and not p.known_model(model):
        p.bad(where, f"gpu_model {model!r} (the credit's scope) is not a known GPU model")
    klass = p.text(where, c, "billing_class")
    if klass and klass not in BILLING_CLASSES:
        p.bad(
            where,
            f"billing_class {klass!r} (the credit's scope) is not one of "
            f"{', '.join(BILLING_CLASSES)}",
        )
    start = p.day(where, c, "valid_from") or date.min
    return Credit(
        p.text(where, c, "id", required=True),
        kind,
        p.money(where, c, "amount", positive=True),
        start,
        p.day(where, c, "valid_until", required=False),
        model,
        klass,
    )


def _tax_rates(p: Parser, where: str, entries: Any) -> tuple[TaxRate, ...]:
    if not isinstance(entries, list):
        p.bad(f"{where}.tax_rates", "must be a list of { rate, effective_from } entries")
        return ()
    out: list[TaxRate] = []
    for j, e in enumerate(entries):
        tw = f"{where}.tax_rates[{j}]"
        rate = p.dec(tw, e, "rate", max_=Decimal(1), places=PRICE_DECIMALS)
        start = p.day(tw, e, "effective_from")
        if start is not None:
            if any(o.effective_from == start for o in out):
                p.bad(tw, f"a second tax rate from {start}")
            out.append(TaxRate(rate, start))
    return tuple(sorted(out, key=lambda x: x.effective_from))
