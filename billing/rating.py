"""Rating: ledger usage + a tenant's prices -> invoice lines. Pure functions over plain data.

Steps for one tenant and period (each a function below):

1. ``_jobs``: group usage by job (job, GPU model, billing class); resolve '' to the contract's
   default class; price every row by the rate in force at its own timestamp; apply the plan's
   minimum duration and increment per job (padding is priced at the job's last rate). A job
   preempted in the period (``preempted``: its id had a record on gpu.preemptions.v1 with
   ``at`` in the period) gets no minimum when the plan's ``preempted_minimum`` is "waived"
   (the default); the increment still applies.
2. ``billing.lines.usage_lines``: per GPU model and class: reserved usage against commitments
   (commitment and overage lines, ``billing.commitment``), on-demand through graduated tiers,
   everything else at the rate.
3. discount, energy, minimum spend, adjustments (given), credits (``billing.credit``), tax at
   the rate in force on the period's last day; totals are sums of rounded lines.

Usage is counted in **milli-GPU-seconds** (seconds held x share; a whole GPU is 1000), exact
integers; the price per GPU-hour applies to the share (``billing.lines``). The plan's minimum
and increment are whole GPU-seconds of share-weighted usage: a job's billable milli-GPU-seconds
are ``max(minimum x 1000, ceil(milli / (increment x 1000)) x increment x 1000)``.

Each line's amount is rounded exactly once (``billing.money.round_money``) from exact inputs,
and the unit price on a line is the exact price its amount was computed with (``line`` refuses
a price with more than 6 decimals instead of rounding it for display).
Rows may be minute rows or any aggregate that lies within one UTC day of one GPU (price
changes take effect at 00:00 UTC of a date), and give the same invoice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing.commitment import active_commitment, minimum_line
from billing.credit import credit_lines
from billing.errors import BillingError, MissingRateError
from billing.invoice import Invoice, InvoiceLine, JobUsage, invoice_id_for
from billing.lines import CTX, Groups, line, usage_lines
from billing.money import round_money, round_quantity
from billing.period import Period
from billing.pricebook import BILLING_CLASSES, IDLE_TENANT, BillingClass, Rate
from billing.pricing import TenantPricing
from kernel.names import MJ_PER_KWH

__all__ = ["UsageRow", "billable_milli", "billable_seconds", "line", "rate_invoice"]


@dataclass(frozen=True)
class UsageRow:
    """Allocated usage of one (tenant, job, GPU) starting at ``start`` (a ledger minute or an
    aggregate within one UTC day): ``gpu_seconds`` held, whatever the share, and ``milli``, the
    milli-GPU-seconds held (seconds x share; None: a whole GPU, ``gpu_seconds x 1000``)."""

    tenant: str
    job: str
    billing_class: str  # '' = the contract's default class
    gpu_model: str
    gpu_uuid: str
    start: datetime
    gpu_seconds: int
    energy_mj: int = 0
    last: datetime | None = None  # last minute inside an aggregate row; None: ``start``
    milli: int | None = None

    @property
    def gpu_milli_seconds(self) -> int:
        return self.gpu_seconds * 1000 if self.milli is None else self.milli


@dataclass
class _Job:
    milli_by_rate: dict[Rate | None, int] = field(default_factory=dict)
    gpus: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    last_rate: Rate | None = None
    energy_mj: int = 0
    held_seconds: int = 0  # GPU-seconds held, whatever the share
    raw_milli: int = 0  # metered milli-GPU-seconds, before the plan's minimum and increment
    preempted: bool = False  # preempted in the period (the plan may waive its minimum)

    @property
    def milli(self) -> int:
        return sum(self.milli_by_rate.values())


def rate_invoice(
    pricing: TenantPricing,
    tenant: str,
    period: Period,
    rows: Iterable[UsageRow],
    adjustments: Sequence[InvoiceLine] = (),
    preempted: Collection[str] = (),
) -> Invoice:
    """The draft invoice of ``tenant`` for ``period``; rows of other tenants/periods are ignored.
    ``preempted``: ids of this tenant's jobs preempted in the period
    (:func:`billing.preemptions.preempted_jobs`); each caller that rates the same usage must
    pass the same set, or the invoices differ."""
    mine = [
        r
        for r in rows
        if r.tenant == tenant
        and r.tenant != IDLE_TENANT
        and period.contains(r.start)
        and r.gpu_seconds > 0
    ]
    jobs = _jobs(pricing, tenant, period, mine, frozenset(preempted))
    minor = pricing.minor_unit
    lines = usage_lines(pricing, period, _groups(jobs))
    usage_base = sum((ln.amount for ln in lines if ln.kind in ("usage", "overage")), Decimal(0))
    c = pricing.contract
    if c.discount_pct and usage_base:
        fraction = CTX.divide(c.discount_pct, Decimal(100))
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
        facility_kwh = CTX.divide(mj * c.energy.pue, Decimal(MJ_PER_KWH))
        lines.append(
            line(
                "energy",
                "",
                "",
                f"Energy pass-through: {round_quantity(CTX.divide(Decimal(mj), Decimal(MJ_PER_KWH)))}"
                f" kWh measured x PUE {c.energy.pue}",
                round_quantity(facility_kwh),
                "kWh",
                c.energy.price_per_kwh,
                round_money(CTX.multiply(facility_kwh, c.energy.price_per_kwh), minor),
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
    """Plan rule per job (whole GPUs): round up to the increment, then at least the minimum."""
    if raw <= 0:
        return 0
    return max(minimum, -(-raw // increment) * increment)


def billable_milli(raw: int, minimum: int, increment: int) -> int:
    """Plan rule per job in milli-GPU-seconds: the minimum and increment are whole GPU-seconds
    of share-weighted usage, so the result is a multiple of 1000 (``billable_seconds`` x 1000
    for whole GPUs)."""
    if raw <= 0:
        return 0
    return 1000 * max(minimum, -(-raw // (increment * 1000)) * increment)


def resolve_class(row_class: str, pricing: TenantPricing, tenant: str) -> BillingClass:
    klass = row_class or pricing.contract.default_class
    if klass not in BILLING_CLASSES:
        raise BillingError(
            f"tenant {tenant!r} has usage with unknown billing class {klass!r} "
            f"(known: {', '.join(BILLING_CLASSES)})"
        )
    return klass  # type: ignore[return-value]


def _jobs(
    pricing: TenantPricing,
    tenant: str,
    period: Period,
    rows: Sequence[UsageRow],
    preempted: frozenset[str] = frozenset(),
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
        j.milli_by_rate[rate] = j.milli_by_rate.get(rate, 0) + r.gpu_milli_seconds
        j.held_seconds += r.gpu_seconds
        j.gpus.add(r.gpu_uuid)
        j.first = r.start if j.first is None else min(j.first, r.start)
        end = r.last or r.start
        if j.last is None or end >= j.last:
            j.last, j.last_rate = end, rate
        j.energy_mj += r.energy_mj
    plan = pricing.contract.plan
    waive = plan.preempted_minimum == "waived"
    for (job, _, _), j in jobs.items():
        j.raw_milli = j.milli
        j.preempted = job in preempted
        minimum = 0 if j.preempted and waive else plan.minimum_seconds
        pad = billable_milli(j.milli, minimum, plan.increment_seconds) - j.milli
        j.milli_by_rate[j.last_rate] += pad
    return jobs


def _groups(jobs: dict[tuple[str, str, BillingClass], _Job]) -> Groups:
    """Billable milli-GPU-seconds per (GPU model, class) and rate, over the jobs."""
    per_group: Groups = {}
    for (_, model, klass), j in jobs.items():
        acc = per_group.setdefault((model, klass), {})
        for rate, m in j.milli_by_rate.items():
            acc[rate] = acc.get(rate, 0) + m
    return per_group


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
                j.held_seconds,
                j.milli // 1000,  # a whole number of GPU-seconds (billable_milli)
                j.energy_mj,
                gpu_milli_seconds=j.raw_milli,
                preempted=j.preempted,
            )
        )
    return tuple(out)
