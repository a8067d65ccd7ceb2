"""Applying credits to an invoice: which credit pays for what, in a stated order.

Order: earliest expiry first (no expiry last), then earliest ``valid_from``, then id in
code-point order (``Credit.order_key``). Each credit pays at most its balance and at most what
is left of the invoice's pre-credit total, so an invoice never goes below zero. A credit limited
to a GPU model and/or billing class also pays at most what is left of the usage, commitment and
overage lines (and adjustments of them) in its scope, after earlier scoped credits. Credits are
applied before tax. Every amount is already in minor units, so no rounding happens here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from billing.money import fmt_money

if TYPE_CHECKING:
    from billing.invoice import InvoiceLine
    from billing.pricing import TenantPricing

SCOPED_KINDS = frozenset({"usage", "commitment", "overage"})


def credit_lines(pricing: TenantPricing, lines: list[InvoiceLine]) -> list[InvoiceLine]:
    from billing.lines import line

    total_left = sum((ln.amount for ln in lines), Decimal(0))
    scope_left = [ln.amount if _scopable(ln) and ln.amount > 0 else Decimal(0) for ln in lines]
    out = []
    order = sorted(pricing.credits_remaining, key=lambda cr: pricing.credit(cr[0]).order_key)
    for credit_id, balance in order:
        credit = pricing.credit(credit_id)
        mine = [
            i
            for i, ln in enumerate(lines)
            if credit.scoped and credit.covers(ln.gpu_model, ln.billing_class)
        ]
        avail = sum((scope_left[i] for i in mine), Decimal(0)) if credit.scoped else total_left
        use = min(balance, avail, total_left)
        if use <= 0:
            continue
        left = use
        for i in mine:  # a scoped credit uses up its scope's lines in line order
            take = min(scope_left[i], left)
            scope_left[i] -= take
            left -= take
        total_left -= use
        scope = " / ".join(x for x in (credit.gpu_model, credit.billing_class) if x)
        out.append(
            line(
                "credit",
                credit.gpu_model,
                credit.billing_class,
                f"{credit.kind.capitalize()} credit {credit_id}"
                + (f" for {scope}" if scope else "")
                + f" (balance before {fmt_money(balance, pricing.minor_unit)})",
                Decimal(1),
                "",
                -use,
                -use,
                reference=credit_id,
            )
        )
    return out


def _scopable(ln: InvoiceLine) -> bool:
    kind = ln.ref_kind if ln.kind == "adjustment" else ln.kind
    return kind in SCOPED_KINDS
