"""Invoice lines of GPU usage: one line constructor, the usage line in milli-GPU-seconds, and
the per (GPU model, class) usage lines (commitments, graduated tiers, plain rates).

The unit of usage is the **milli-GPU-second** (an exact integer: seconds held x share, 1000 for
a whole GPU). A line's GPU-hours are ``milli / 3,600,000`` and its amount is
``round(milli x price per GPU-hour / 3,600,000)``, rounded once; for a whole GPU that is
exactly ``round(seconds x price / 3600)``, cent for cent.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from billing.commitment import active_commitment, commitment_lines
from billing.errors import BillingError
from billing.invoice import InvoiceLine
from billing.money import round_money, round_quantity
from billing.period import Period
from billing.pricebook import BILLING_CLASSES, BillingClass, Rate, round_price
from billing.pricing import TenantPricing
from kernel.names import MILLI_PER_GPU_HOUR

#: Exact arithmetic for amounts before the one rounding: 34 significant digits is far beyond
#: any invoice, so the result does not depend on the process's default decimal context.
CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)

_CLASS_ORDER = {c: i for i, c in enumerate(BILLING_CLASSES)}

#: per (GPU model, class): billable milli-GPU-seconds per rate (None: under a commitment).
Groups = dict[tuple[str, BillingClass], dict[Rate | None, int]]


def whole_seconds(milli: int) -> int:
    """The whole GPU-seconds in ``milli`` milli-GPU-seconds, toward zero (exact for whole GPUs)."""
    return milli // 1000 if milli >= 0 else -(-milli // 1000)


def gpu_hours(milli: int) -> Decimal:
    """GPU-hours shown on a line: 6 decimals, from exact milli-GPU-seconds."""
    return round_quantity(Decimal(milli) / MILLI_PER_GPU_HOUR)


def usage_line(
    pricing: TenantPricing,
    kind: str,
    model: str,
    klass: str,
    milli: int,
    unit_price: Decimal,
    description: str,
) -> InvoiceLine:
    """A GPU-hour line for ``milli`` billable milli-GPU-seconds at ``unit_price`` per GPU-hour."""
    amount = round_money(
        CTX.divide(milli * unit_price, Decimal(MILLI_PER_GPU_HOUR)), pricing.minor_unit
    )
    return line(
        kind,
        model,
        klass,
        description,
        gpu_hours(milli),
        "GPU-hour",
        unit_price,
        amount,
        seconds=whole_seconds(milli),
        milli=milli,
    )


def line(
    kind: str,
    model: str,
    klass: str,
    description: str,
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
    amount: Decimal,
    *,
    reference: str = "",
    seconds: int = 0,
    milli: int | None = None,
) -> InvoiceLine:
    """One line; ``milli`` defaults to ``seconds x 1000`` (a whole GPU)."""
    if round_price(unit_price) != unit_price:
        # The price shown is the price used: a price with more digits than documents show
        # would bill one amount and show another. The price book's validation prevents it.
        raise BillingError(
            f"{kind} line {description!r}: unit price {unit_price} has more "
            "than 6 decimals; fix the price book entry"
        )
    return InvoiceLine(
        0,
        kind,  # type: ignore[arg-type]
        model,
        klass,
        description,
        quantity,
        unit,  # type: ignore[arg-type]
        unit_price,
        amount,
        reference=reference,
        seconds=seconds,
        gpu_milli_seconds=seconds * 1000 if milli is None else milli,
    )


def usage_lines(pricing: TenantPricing, period: Period, per_group: Groups) -> list[InvoiceLine]:
    """Per GPU model and class: reserved usage against commitments (commitment and overage
    lines), on-demand through graduated tiers, everything else at the rate."""
    for c in pricing.contract.commitments:  # billed even when unused, within the contract
        if active_commitment(pricing, c.gpu_model, period) is not None:
            per_group.setdefault((c.gpu_model, "reserved"), {})
    lines: list[InvoiceLine] = []
    for model, klass in sorted(per_group, key=lambda k: (k[0], _CLASS_ORDER[k[1]])):
        segments = sorted(
            per_group[(model, klass)].items(),
            key=lambda kv: kv[0].effective_from if kv[0] else datetime.min.date(),
        )
        commitment = active_commitment(pricing, model, period) if klass == "reserved" else None
        if commitment is not None:
            lines.extend(commitment_lines(pricing, commitment, sum(s for _, s in segments), period))
        elif klass == "on_demand" and pricing.contract.plan.tiers:
            lines.extend(_tiered_lines(pricing, model, segments))
        else:
            for rate, milli in segments:
                assert rate is not None
                lines.append(
                    usage_line(
                        pricing,
                        "usage",
                        model,
                        klass,
                        milli,
                        rate.price_per_gpu_hour,
                        rate_label(model, klass, rate),
                    )
                )
    return lines


def _tiered_lines(
    pricing: TenantPricing, model: str, segments: list[tuple[Rate | None, int]]
) -> list[InvoiceLine]:
    """Graduated: the model's on-demand milli-GPU-seconds fill tiers in time order (segment by
    segment); a tier bound of H GPU-hours is H x 3,600,000 milli-GPU-seconds."""
    tiers = pricing.contract.plan.tiers
    lines = []
    filled = 0  # milli-GPU-seconds already placed in lower tiers this month
    lower = Decimal(0)
    bounds = []
    for t in tiers:
        upper = None if t.up_to_gpu_hours is None else int(t.up_to_gpu_hours * MILLI_PER_GPU_HOUR)
        bounds.append((t, lower, upper))
        lower = t.up_to_gpu_hours or lower
    for rate, milli in segments:
        assert rate is not None
        left = milli
        for i, (tier, lo, upper) in enumerate(bounds):
            if left == 0:
                break
            room = left if upper is None else max(upper - filled, 0)
            take = min(left, room)
            if take == 0:
                continue
            price = round_price(rate.price_per_gpu_hour * (100 - tier.discount_pct) / 100)
            span = f"{lo}-{tier.up_to_gpu_hours}" if tier.up_to_gpu_hours else f"over {lo}"
            lines.append(
                usage_line(
                    pricing,
                    "usage",
                    model,
                    "on_demand",
                    take,
                    price,
                    f"{rate_label(model, 'on_demand', rate)}, tier {i + 1} ({span} GPU-h, "
                    f"{tier.discount_pct}% off)",
                )
            )
            filled += take
            left -= take
    return lines


def rate_label(model: str, klass: str, rate: Rate) -> str:
    return (
        f"{model} {klass.replace('_', '-')} at {rate.price_per_gpu_hour}/GPU-h "
        f"(price from {rate.effective_from})"
    )
