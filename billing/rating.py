"""Rating: ledger usage + a tenant's prices -> invoice lines. Pure functions over plain data.

Steps for one tenant and period (each a function below):

1. ``_jobs``: group usage by job (job, GPU model, billing class); resolve '' to the contract's
   default class; price every row by the rate in force at its own timestamp; apply the plan's
   minimum duration and increment per job (padding is priced at the job's last rate).
2. ``_usage_lines``: per GPU model and class: reserved usage against commitments (commitment
   and overage lines, ``billing.commitment``), on-demand through graduated tiers, everything
   else at the rate.
3. discount, energy, minimum spend, adjustments (given), credits (``billing.credit``), tax at
   the rate in force on the period's last day; totals are sums of rounded lines.

Each line's amount is rounded exactly once (``billing.money.round_money``) from exact inputs,
and the unit price on a line is the exact price its amount was computed with (``line`` refuses
a price with more than 6 decimals instead of rounding it for display).
Rows may be minute rows or any aggregate that lies within one UTC day of one GPU (price
changes take effect at 00:00 UTC of a date), and give the same invoice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from billing.commitment import active_commitment, commitment_lines, minimum_line
from billing.credit import credit_lines
from billing.errors import BillingError, MissingRateError
from billing.invoice import Invoice, InvoiceLine, JobUsage, invoice_id_for
from billing.money import round_money, round_quantity
from billing.period import Period
from billing.pricebook import BILLING_CLASSES, IDLE_TENANT, BillingClass, Rate, round_price
from billing.pricing import TenantPricing
from kernel.names import MJ_PER_KWH

#: Exact arithmetic for amounts before the one rounding: 34 significant digits is far beyond
#: any invoice, so the result does not depend on the process's default decimal context.
_CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class UsageRow:
    """Allocated GPU-seconds of one (tenant, job, GPU) starting at ``start`` (a ledger minute or
    an aggregate within one UTC day)."""

    tenant: str
    job: str
    billing_class: str  # '' = the contract's default class
    gpu_model: str
    gpu_uuid: str
    start: datetime
    gpu_seconds: int
    energy_mj: int = 0
    last: datetime | None = None  # last minute inside an aggregate row; None: ``start``


@dataclass
class _Job:
    seconds_by_rate: dict[Rate | None, int] = field(default_factory=dict)
    gpus: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    last_rate: Rate | None = None
    energy_mj: int = 0
    raw_seconds: int = 0  # metered, before the plan's minimum and increment

    @property
    def seconds(self) -> int:
        return sum(self.seconds_by_rate.values())


_CLASS_ORDER = {c: i for i, c in enumerate(BILLING_CLASSES)}


def rate_invoice(
    pricing: TenantPricing,
    tenant: str,
    period: Period,
    rows: Iterable[UsageRow],
    adjustments: Sequence[InvoiceLine] = (),
) -> Invoice:
    """The draft invoice of ``tenant`` for ``period``; rows of other tenants/periods are ignored."""
    mine = [
        r
        for r in rows
        if r.tenant == tenant
        and r.tenant != IDLE_TENANT
        and period.contains(r.start)
        and r.gpu_seconds > 0
    ]
    jobs = _jobs(pricing, tenant, period, mine)
    minor = pricing.minor_unit
    lines = _usage_lines(pricing, period, jobs)
    usage_base = sum((ln.amount for ln in lines if ln.kind in ("usage", "overage")), Decimal(0))
    c = pricing.contract
    if c.discount_pct and usage_base:
        fraction = _CTX.divide(c.discount_pct, Decimal(100))
        lines.append(
            line(
                "discount",
                "",
                "",
                f"Discount {c.discount_pct}% on usage",
                usage_base,
                "",
                -fraction,
                round_money(-usage_base * fraction, minor),
            )
        )
    if c.energy is not None:
        mj = sum(r.energy_mj for r in mine)
        facility_kwh = _CTX.divide(mj * c.energy.pue, Decimal(MJ_PER_KWH))
        lines.append(
            line(
                "energy",
                "",
                "",
                f"Energy pass-through: {round_quantity(_CTX.divide(Decimal(mj), Decimal(MJ_PER_KWH)))}"
                f" kWh measured x PUE {c.energy.pue}",
                round_quantity(facility_kwh),
                "kWh",
                c.energy.price_per_kwh,
                round_money(_CTX.multiply(facility_kwh, c.energy.price_per_kwh), minor),
            )
        )
    minimum = minimum_line(pricing, period, lines)
    if minimum is not None:
        lines.append(minimum)
    lines.extend(adjustments)
    lines.extend(credit_lines(pricing, lines))
    tax_rate = c.tax_rate_on(period.last_day)
    if tax_rate:
        base = sum((ln.amount for ln in lines), Decimal(0))
        lines.append(
            line(
                "tax",
                "",
                "",
                f"{c.tax_label} {format((tax_rate * 100).normalize(), 'f')}%",
                base,
                "",
                tax_rate,
                round_money(base * tax_rate, minor),
            )
        )
    numbered = tuple(InvoiceLine(**{**ln.__dict__, "line_no": i + 1}) for i, ln in enumerate(lines))
    return Invoice(
        invoice_id=invoice_id_for(pricing.issuer.number_prefix, tenant, str(period)),
        tenant=tenant,
        period=str(period),
        currency=pricing.currency,
        minor_unit=minor,
        pricing=pricing,
        lines=numbered,
        jobs=_job_usage(jobs),
    )


def billable_seconds(raw: int, minimum: int, increment: int) -> int:
    """Plan rule per job: round up to the increment, then at least the minimum."""
    if raw <= 0:
        return 0
    return max(minimum, -(-raw // increment) * increment)


def resolve_class(row_class: str, pricing: TenantPricing, tenant: str) -> BillingClass:
    klass = row_class or pricing.contract.default_class
    if klass not in BILLING_CLASSES:
        raise BillingError(
            f"tenant {tenant!r} has usage with unknown billing class {klass!r} "
            f"(known: {', '.join(BILLING_CLASSES)})"
        )
    return klass  # type: ignore[return-value]


def _jobs(
    pricing: TenantPricing, tenant: str, period: Period, rows: Sequence[UsageRow]
) -> dict[tuple[str, str, BillingClass], _Job]:
    jobs: dict[tuple[str, str, BillingClass], _Job] = {}
    for r in sorted(rows, key=lambda r: r.start):
        klass = resolve_class(r.billing_class, pricing, tenant)
        rate: Rate | None = None
        if not (klass == "reserved" and active_commitment(pricing, r.gpu_model, period)):
            rate = pricing.rate_at(r.gpu_model, klass, r.start)
            if rate is None:
                raise MissingRateError(tenant, r.gpu_model, klass, r.start.isoformat())
        j = jobs.setdefault((r.job, r.gpu_model, klass), _Job())
        j.seconds_by_rate[rate] = j.seconds_by_rate.get(rate, 0) + r.gpu_seconds
        j.gpus.add(r.gpu_uuid)
        j.first = r.start if j.first is None else min(j.first, r.start)
        end = r.last or r.start
        if j.last is None or end >= j.last:
            j.last, j.last_rate = end, rate
        j.energy_mj += r.energy_mj
    plan = pricing.contract.plan
    for j in jobs.values():
        j.raw_seconds = j.seconds
        pad = billable_seconds(j.seconds, plan.minimum_seconds, plan.increment_seconds) - j.seconds
        j.seconds_by_rate[j.last_rate] += pad
    return jobs


def _usage_lines(
    pricing: TenantPricing, period: Period, jobs: dict[tuple[str, str, BillingClass], _Job]
) -> list[InvoiceLine]:
    per_group: dict[tuple[str, BillingClass], dict[Rate | None, int]] = {}
    for (_, model, klass), j in jobs.items():
        acc = per_group.setdefault((model, klass), {})
        for rate, s in j.seconds_by_rate.items():
            acc[rate] = acc.get(rate, 0) + s
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
            for rate, s in segments:
                assert rate is not None
                lines.append(
                    seconds_line(
                        pricing,
                        "usage",
                        model,
                        klass,
                        s,
                        rate.price_per_gpu_hour,
                        _rate_label(model, klass, rate),
                    )
                )
    return lines


def _tiered_lines(
    pricing: TenantPricing, model: str, segments: list[tuple[Rate | None, int]]
) -> list[InvoiceLine]:
    """Graduated: the model's on-demand seconds fill tiers in time order (segment by segment)."""
    tiers = pricing.contract.plan.tiers
    lines = []
    filled = 0  # seconds already placed in lower tiers this month
    lower = Decimal(0)
    bounds = []
    for t in tiers:
        upper = None if t.up_to_gpu_hours is None else int(t.up_to_gpu_hours * 3600)
        bounds.append((t, lower, upper))
        lower = t.up_to_gpu_hours or lower
    for rate, seconds in segments:
        assert rate is not None
        left = seconds
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
                seconds_line(
                    pricing,
                    "usage",
                    model,
                    "on_demand",
                    take,
                    price,
                    f"{_rate_label(model, 'on_demand', rate)}, tier {i + 1} ({span} GPU-h, "
                    f"{tier.discount_pct}% off)",
                )
            )
            filled += take
            left -= take
    return lines


def _job_usage(jobs: dict[tuple[str, str, BillingClass], _Job]) -> tuple[JobUsage, ...]:
    out = []
    for (job, model, klass), j in sorted(jobs.items()):
        assert j.first is not None and j.last is not None
        out.append(
            JobUsage(
                job,
                model,
                klass,
                len(j.gpus),
                j.first,
                j.last,
                j.raw_seconds,
                j.seconds,
                j.energy_mj,
            )
        )
    return tuple(out)


def seconds_line(
    pricing: TenantPricing,
    kind: str,
    model: str,
    klass: str,
    seconds: int,
    unit_price: Decimal,
    description: str,
) -> InvoiceLine:
    amount = round_money(_CTX.divide(seconds * unit_price, Decimal(3600)), pricing.minor_unit)
    return line(
        kind,
        model,
        klass,
        description,
        round_quantity(Decimal(seconds) / 3600),
        "GPU-hour",
        unit_price,
        amount,
        seconds=seconds,
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
) -> InvoiceLine:
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
    )


def _rate_label(model: str, klass: str, rate: Rate) -> str:
    return (
        f"{model} {klass.replace('_', '-')} at {rate.price_per_gpu_hour}/GPU-h "
        f"(price from {rate.effective_from})"
    )
