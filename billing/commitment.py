"""Contract terms billed by the month: reserved commitments and the minimum monthly spend.

Both are billed only for the contract's days in the period (``Contract.days_in``), pro rata in
a partial month, never outside the contract:

- commitment: committed seconds = floor(gpu_hours_per_month x 3600 x days / days in month)
  whole GPU-seconds; amount = round(committed seconds x rate / 3600); reserved usage (in
  milli-GPU-seconds, share-weighted) beyond committed seconds x 1000 is an ``overage`` line at
  ``overage_rate``.
- minimum spend: required = round(minimum_monthly_spend x days / days in month); when the
  period's rated charges (usage, commitment, overage, discount, energy; before adjustments,
  credits and tax) are below it, the shortfall is a ``minimum`` line.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from billing.money import round_money, round_quantity
from billing.period import Period
from billing.pricebook import Commitment

if TYPE_CHECKING:
    from billing.invoice import InvoiceLine
    from billing.pricing import TenantPricing

#: Kinds the minimum monthly spend compares against.
MINIMUM_BASE_KINDS = frozenset({"usage", "commitment", "overage", "discount", "energy"})


def days_in_month(period: Period) -> int:
    return period.last_day.day


def active_commitment(pricing: TenantPricing, gpu_model: str, period: Period) -> Commitment | None:
    """The model's commitment, if the contract covers at least one day of the period."""
    if pricing.contract.days_in(period) == 0:
        return None
    return next((c for c in pricing.contract.commitments if c.gpu_model == gpu_model), None)


def committed_seconds(c: Commitment, days: int, period: Period) -> int:
    return int(c.gpu_hours_per_month * 3600 * days // days_in_month(period))


def proration_note(days: int, period: Period) -> str:
    dim = days_in_month(period)
    return "" if days == dim else f", {days}/{dim} days of the contract"


def commitment_lines(
    pricing: TenantPricing, c: Commitment, used: int, period: Period
) -> list[InvoiceLine]:
    """``used``: the period's reserved usage of the model, in milli-GPU-seconds."""
    from billing.lines import gpu_hours, line, usage_line

    days = pricing.contract.days_in(period)
    committed = committed_seconds(c, days, period)
    hours = Decimal(committed) / 3600
    out = [
        line(
            "commitment",
            c.gpu_model,
            "reserved",
            f"{c.gpu_model} reserved commitment: {c.gpu_hours_per_month} GPU-hours/month"
            f"{proration_note(days, period)} (used {gpu_hours(used)})",
            round_quantity(hours),
            "GPU-hour",
            c.rate,
            round_money(committed * c.rate / 3600, pricing.minor_unit),
            seconds=committed,
        )
    ]
    if used > committed * 1000:
        out.append(
            usage_line(
                pricing,
                "overage",
                c.gpu_model,
                "reserved",
                used - committed * 1000,
                c.overage_rate,
                f"{c.gpu_model} reserved overage beyond "
                f"{round_quantity(hours)} committed GPU-hours",
            )
        )
    return out


def minimum_line(
    pricing: TenantPricing, period: Period, lines: list[InvoiceLine]
) -> InvoiceLine | None:
    from billing.lines import line

    c = pricing.contract
    days = c.days_in(period)
    if not c.minimum_monthly_spend or days == 0:
        return None
    required = round_money(
        c.minimum_monthly_spend * days / days_in_month(period), pricing.minor_unit
    )
    spent = sum((ln.amount for ln in lines if ln.kind in MINIMUM_BASE_KINDS), Decimal(0))
    if spent >= required:
        return None
    short = required - spent
    return line(
        "minimum",
        "",
        "",
        f"Minimum monthly spend {c.minimum_monthly_spend}"
        f"{proration_note(days, period)}: required {required}, charges {spent}",
        Decimal(1),
        "",
        short,
        short,
    )
