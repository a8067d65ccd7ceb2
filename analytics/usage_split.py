"""Capacity split into internal use, external sales and idle, per GPU model and UTC day, with
the revenue external sales earned beside it.

The point of selling is the capacity the operator's own teams leave idle: per model and day,
the ledger's capacity (every milli-GPU-second of ``usage_minutely FINAL``, idle included) is
internal use (tenants the price book marks ``internal``, :mod:`analytics.tenant_kinds`),
external sales (every other tenant) or idle (``kernel.names.IDLE_TENANT``, the unallocated
remainder of shared GPUs included). The three add up to the capacity, exactly, in
milli-GPU-seconds; GPU-hours are milli-GPU-seconds / 3,600,000.

External revenue is the report's revenue (invoice lines except tax, or the register's on-demand
rating of external tenants' usage when the period has no invoices), placed on a model as
:func:`analytics.revenue.revenue_by_model` does, then on days: usage-driven lines follow the
tenant's own usage of that model per day (so a day earns what its external use earned, not what
internal use happened to fill), time-driven lines (commitments, minimum spend) are earned evenly
over the time they cover. A model's total is its lines' sum even when no day of the period can
take it (its day rows then sum to less; never silently dropped from the total), and the fleet's
total is every line's sum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from analytics.ledger_facts import JobTotal, ReportPeriod, RevenueLine
from analytics.metrics import Report
from analytics.preemptions import PreemptionTotal
from analytics.revenue import revenue_by_model
from analytics.showback import ShowbackLine
from kernel.names import IDLE_TENANT, MILLI_PER_GPU_HOUR

#: The whole period in :attr:`CapacitySplit.day`; the fleet in :attr:`CapacitySplit.gpu_model`.
ALL_DAYS = ""
FLEET = "fleet"

_USAGE = """
SELECT toString(toDate(minute)) AS day, gpu_model, tenant, sum(gpu_milli_seconds)
FROM usage_minutely FINAL
WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
GROUP BY day, gpu_model, tenant
ORDER BY day, gpu_model, tenant
"""


@dataclass(frozen=True)
class TenantUsage:
    """Milli-GPU-seconds of one tenant (or ``__idle__``) on one GPU model on one UTC day."""

    day: str
    gpu_model: str
    tenant: str
    milli: int


def load_tenant_usage(client: Client, period: ReportPeriod) -> tuple[TenantUsage, ...]:
    params = {"start": period.start.replace(tzinfo=None), "end": period.end.replace(tzinfo=None)}
    return tuple(
        TenantUsage(r[0], r[1], r[2], int(r[3]))
        for r in client.query(_USAGE, parameters=params).result_rows
    )


@dataclass(frozen=True)
class CapacitySplit:
    """One GPU model (or the fleet) on one UTC day (or :data:`ALL_DAYS`)."""

    gpu_model: str
    day: str
    internal_milli: int
    external_milli: int
    idle_milli: int
    external_revenue: Decimal

    @property
    def capacity_milli(self) -> int:
        return self.internal_milli + self.external_milli + self.idle_milli

    @property
    def internal_h(self) -> Decimal:
        return Decimal(self.internal_milli) / MILLI_PER_GPU_HOUR

    @property
    def external_h(self) -> Decimal:
        return Decimal(self.external_milli) / MILLI_PER_GPU_HOUR

    @property
    def idle_h(self) -> Decimal:
        return Decimal(self.idle_milli) / MILLI_PER_GPU_HOUR

    @property
    def capacity_h(self) -> Decimal:
        return Decimal(self.capacity_milli) / MILLI_PER_GPU_HOUR

    def share(self, milli: int) -> Decimal | None:
        return Decimal(milli) / self.capacity_milli if self.capacity_milli else None

    @property
    def sold_of_left(self) -> Decimal | None:
        """External sales / what internal use left (external + idle): how much of the capacity
        internal use left idle was sold."""
        left = self.external_milli + self.idle_milli
        return Decimal(self.external_milli) / left if left else None

    @property
    def revenue_per_external_hour(self) -> Decimal | None:
        return self.external_revenue / self.external_h if self.external_milli else None


@dataclass(frozen=True)
class SplitReport(Report):
    """The report plus internal use: the capacity split and the showback statement at cost."""

    #: per model and day, per model (day ''), then the fleet per day and in all.
    split: tuple[CapacitySplit, ...] = ()
    #: internal tenants' use per GPU model at cost (:mod:`analytics.showback`).
    showback: tuple[ShowbackLine, ...] = ()
    internal_tenants: tuple[str, ...] = ()
    #: preemptions per (GPU model, preempted tenant) (:mod:`analytics.preemptions`).
    preemptions: tuple[PreemptionTotal, ...] = ()


def external_jobs(usage: Iterable[TenantUsage], internal: Collection[str]) -> list[JobTotal]:
    """External tenants' usage per (tenant, model), as the jobs ``revenue_by_model`` weighs."""
    acc: dict[tuple[str, str], int] = defaultdict(int)
    for u in usage:
        if u.tenant != IDLE_TENANT and u.tenant not in internal:
            acc[(u.tenant, u.gpu_model)] += u.milli
    return [JobTotal(t, "", m, v, 0, 0.0, 0) for (t, m), v in sorted(acc.items())]


def external_revenue(
    lines: Iterable[RevenueLine], usage: Iterable[TenantUsage], internal: Collection[str]
) -> tuple[dict[str, Decimal], dict[tuple[str, str], Decimal]]:
    """(revenue per model, revenue per (model, day)) of ``lines`` (see the module's rules)."""
    usage = tuple(usage)
    jobs = external_jobs(usage, internal)
    fleet: dict[str, int] = defaultdict(int)
    for j in jobs:
        fleet[j.gpu_model] += j.allocated_milli
    tenant_day: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    model_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    capacity_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for u in usage:
        capacity_day[u.gpu_model][u.day] += u.milli
        if u.tenant != IDLE_TENANT and u.tenant not in internal:
            tenant_day[(u.tenant, u.gpu_model)][u.day] += u.milli
            model_day[u.gpu_model][u.day] += u.milli
    per_model: dict[str, Decimal] = defaultdict(Decimal)
    per_day: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    # A line naming no model, of a tenant without usage, follows the fleet's external usage per
    # model, or its capacity when nothing was sold (never dropped).
    weights_by_model = fleet or {m: sum(v.values()) for m, v in capacity_day.items()}
    for ln in lines:
        for model, amount in revenue_by_model([ln], jobs, weights_by_model).items():
            per_model[model] += amount
            if ln.covers is not None:
                weights = {d: _overlap_s(ln.covers, d) for d in capacity_day.get(model, {})}
            else:
                weights = (
                    tenant_day.get((ln.tenant, model))
                    or model_day.get(model)
                    or capacity_day.get(model)
                    or {}
                )
            total = sum(weights.values())
            for d, w in weights.items():
                if w:
                    per_day[(model, d)] += amount * w / total
    return dict(per_model), dict(per_day)


def split_capacity(
    usage: Iterable[TenantUsage],
    internal: Collection[str],
    lines: Iterable[RevenueLine] = (),
) -> tuple[CapacitySplit, ...]:
    """Per (model, day) in order, each model's total (day ''), then the fleet per day and its
    total; () when the ledger holds nothing for the period."""
    usage = tuple(usage)
    per_model_rev, per_day_rev = external_revenue(lines, usage, internal)
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for u in usage:
        slot = 2 if u.tenant == IDLE_TENANT else 0 if u.tenant in internal else 1
        for key in (
            (u.gpu_model, u.day),
            (u.gpu_model, ALL_DAYS),
            (FLEET, u.day),
            (FLEET, ALL_DAYS),
        ):
            acc[key][slot] += u.milli
    if not acc:
        return ()

    def revenue(model: str, day: str) -> Decimal:
        if model == FLEET:
            if day == ALL_DAYS:
                return sum(per_model_rev.values(), Decimal(0))
            return sum((v for (_, d), v in per_day_rev.items() if d == day), Decimal(0))
        if day == ALL_DAYS:
            return per_model_rev.get(model, Decimal(0))
        return per_day_rev.get((model, day), Decimal(0))

    def order(key: tuple[str, str]) -> tuple[bool, str, bool, str]:
        model, day = key
        return (model == FLEET, model, day == ALL_DAYS, day)

    return tuple(
        CapacitySplit(m, d, a[0], a[1], a[2], revenue(m, d))
        for (m, d), a in sorted(acc.items(), key=lambda kv: order(kv[0]))
    )


def _overlap_s(covers: tuple[datetime, datetime], day: str) -> int:
    d0 = datetime.fromisoformat(day).replace(tzinfo=UTC)
    o = (min(covers[1], d0 + timedelta(days=1)) - max(covers[0], d0)).total_seconds()
    return max(int(o), 0)


def split_by_model(rows: Iterable[CapacitySplit]) -> Mapping[str, list[CapacitySplit]]:
    """Day rows per model (the chart's bars), models in order, the fleet left out."""
    out: dict[str, list[CapacitySplit]] = defaultdict(list)
    for r in rows:
        if r.gpu_model != FLEET and r.day != ALL_DAYS:
            out[r.gpu_model].append(r)
    return out
