"""Are the GPUs earning their keep? Utilization, idle capacity and return on assets per period.

Two steps, kept apart so the arithmetic is testable on plain data:

1. :func:`load_facts` reads the exact ledger (``usage_minutely FINAL``), invoices and work units
   for a period from ClickHouse;
2. :func:`compute` turns facts plus the asset register into :class:`Metrics` per fleet, GPU
   model, node and day, plus per tenant and per job.

Definitions (the data dictionary in schemas/clickhouse/README.md uses the same words):

- available GPU-seconds: every GPU-second the ledger holds, idle included (the worker records
  idle seconds as tenant ``__idle__``); allocated: the non-idle ones; active: allocated seconds
  with SM utilization > 0; idle = available - allocated.
- utilization = allocated / available; efficiency = mean SM utilization over allocated seconds.
- revenue: invoice lines except tax for the period (a tenant's finalized invoices if it has any,
  else its drafts); with no invoices at all, allocated GPU-hours rated at the register's
  on-demand rate per model. :attr:`Report.revenue_source` says which.
- costs: straight-line depreciation (calendar time over the observed span of the period: first
  to last hour in the ledger, capped at now), energy
  (GPU kWh x PUE x the price of that UTC hour) and other opex per available GPU-hour.
- ROA (annualized) = margin / mean book value x (year / accrual time).
- break-even utilization = cost / (revenue per allocated GPU-hour x available GPU-hours): the
  utilization at which revenue would cover cost, if the realized price per allocated hour stays
  and cost does not move with utilization (energy does, a little: an approximation).
- idle value = idle GPU-hours x the model's spot rate: revenue left on the table.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from clickhouse_connect.driver.client import Client

from billing.assets import SECONDS_PER_YEAR, AssetRegister

IDLE = "__idle__"
MJ_PER_KWH = Decimal(3_600_000_000)
Dimension = Literal["fleet", "gpu_model", "node", "day"]
RevenueSource = Literal["invoices", "on_demand_rating"]


# -- facts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A calendar month (``YYYY-MM``) or day (``YYYY-MM-DD``) in UTC: ``[start, end)``."""

    label: str
    start: datetime
    end: datetime

    @property
    def month(self) -> str:
        return self.start.strftime("%Y-%m")

    @property
    def is_month(self) -> bool:
        return len(self.label) == 7


def parse_period(text: str) -> Period:
    if re.fullmatch(r"\d{4}-\d{2}", text):
        start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        return Period(text, start, end)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        start = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        return Period(text, start, start + timedelta(days=1))
    raise ValueError(f"period {text!r}: expected YYYY-MM (a month) or YYYY-MM-DD (a day)")


@dataclass(frozen=True)
class GpuHour:
    """One GPU for one hour, MIG slices summed (a row of ``gpu_utilization_hourly``)."""

    hour: datetime
    gpu_model: str
    node_id: str
    gpu_uuid: str
    available_s: int
    allocated_s: int
    active_s: int
    idle_s: int
    sm_sum: float  # SM utilization (percent) summed over allocated seconds
    energy_mj: int


@dataclass(frozen=True)
class JobUsage:
    """Allocated usage of one (tenant, job) on one GPU model in the period."""

    tenant: str
    job: str
    gpu_model: str
    allocated_s: int
    active_s: int
    sm_sum: float
    energy_mj: int


@dataclass(frozen=True)
class RevenueLine:
    """Invoiced amount (tax excluded) of one tenant for one GPU model; ``''`` = not per model."""

    tenant: str
    gpu_model: str
    amount: Decimal


@dataclass(frozen=True)
class WorkTotal:
    tenant: str
    job: str
    unit: str
    quantity: int


@dataclass(frozen=True)
class Facts:
    period: Period
    gpu_hours: tuple[GpuHour, ...]
    jobs: tuple[JobUsage, ...]
    #: None: no invoices for the period, so revenue is rated at on-demand rates.
    invoiced: tuple[RevenueLine, ...] | None = None
    invoice_note: str = ""
    work: tuple[WorkTotal, ...] = ()


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Usage and economics of one group (the fleet, a model, a node or a day)."""

    dimension: Dimension
    key: str
    gpus: int
    available_s: int
    allocated_s: int
    active_s: int
    idle_s: int
    sm_sum: float
    energy_mj: int
    pue: Decimal
    revenue: Decimal
    depreciation: Decimal
    energy_cost: Decimal
    other_opex: Decimal
    book_value_start: Decimal
    book_value_end: Decimal
    accrual_s: int  # calendar seconds the costs accrued over (the period, capped at now)
    idle_value: Decimal
    list_rate: Decimal | None  # on-demand rate weighted by available time, when no revenue

    @property
    def available_h(self) -> Decimal:
        return Decimal(self.available_s) / 3600

    @property
    def allocated_h(self) -> Decimal:
        return Decimal(self.allocated_s) / 3600

    @property
    def active_h(self) -> Decimal:
        return Decimal(self.active_s) / 3600

    @property
    def idle_h(self) -> Decimal:
        return Decimal(self.idle_s) / 3600

    @property
    def utilization(self) -> Decimal | None:
        return Decimal(self.allocated_s) / self.available_s if self.available_s else None

    @property
    def active_share(self) -> Decimal | None:
        return Decimal(self.active_s) / self.available_s if self.available_s else None

    @property
    def efficiency_pct(self) -> float | None:
        return self.sm_sum / self.allocated_s if self.allocated_s else None

    @property
    def energy_kwh(self) -> Decimal:
        return Decimal(self.energy_mj) / MJ_PER_KWH

    @property
    def facility_kwh(self) -> Decimal:
        return self.energy_kwh * self.pue

    @property
    def cost(self) -> Decimal:
        return self.depreciation + self.energy_cost + self.other_opex

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def cost_per_gpu_hour(self) -> Decimal | None:
        """Full cost per available GPU-hour (what an hour of this capacity costs to own)."""
        return self.cost / self.available_h if self.available_s else None

    @property
    def cost_per_allocated_hour(self) -> Decimal | None:
        return self.cost / self.allocated_h if self.allocated_s else None

    @property
    def revenue_per_allocated_hour(self) -> Decimal | None:
        if self.allocated_s and self.revenue > 0:
            return self.revenue / self.allocated_h
        return self.list_rate

    @property
    def book_value(self) -> Decimal:
        return (self.book_value_start + self.book_value_end) / 2

    @property
    def roa_annualized(self) -> Decimal | None:
        if not self.accrual_s or self.book_value <= 0:
            return None
        return self.margin / self.book_value * Decimal(SECONDS_PER_YEAR) / self.accrual_s

    @property
    def break_even_utilization(self) -> Decimal | None:
        price = self.revenue_per_allocated_hour
        if not price or not self.available_s:
            return None
        return self.cost / (price * self.available_h)


@dataclass(frozen=True)
class TenantMetrics:
    tenant: str
    allocated_s: int
    active_s: int
    sm_sum: float
    energy_mj: int
    revenue: Decimal
    cost: Decimal  # the tenant's allocated hours at its models' full cost per GPU-hour

    @property
    def allocated_h(self) -> Decimal:
        return Decimal(self.allocated_s) / 3600

    @property
    def efficiency_pct(self) -> float | None:
        return self.sm_sum / self.allocated_s if self.allocated_s else None


@dataclass(frozen=True)
class WorkMetrics:
    """Cost and revenue per million units of work, for one job on one GPU model."""

    tenant: str
    job: str
    gpu_model: str
    unit: str
    quantity: Decimal  # the job's units, split across models by allocated seconds
    gpu_hours: Decimal
    cost: Decimal
    revenue: Decimal

    @property
    def cost_per_million(self) -> Decimal | None:
        return self.cost * 1_000_000 / self.quantity if self.quantity else None

    @property
    def revenue_per_million(self) -> Decimal | None:
        return self.revenue * 1_000_000 / self.quantity if self.quantity else None


@dataclass(frozen=True)
class Report:
    period: Period
    currency: str
    revenue_source: RevenueSource
    revenue_note: str
    fleet: Metrics
    by_model: tuple[Metrics, ...]
    by_node: tuple[Metrics, ...]
    by_day: tuple[Metrics, ...]
    tenants: tuple[TenantMetrics, ...]
    work: tuple[WorkMetrics, ...]
    unregistered_gpus: tuple[str, ...]  # seen in the ledger, matched by no asset: no costs
    gpu_hours: tuple[GpuHour, ...] = field(repr=False, default=())


# -- compute (pure) ---------------------------------------------------------------------------


@dataclass
class _Acc:
    gpus: set[str] = field(default_factory=set)
    available_s: int = 0
    allocated_s: int = 0
    active_s: int = 0
    idle_s: int = 0
    sm_sum: float = 0.0
    energy_mj: int = 0
    revenue: Decimal = Decimal(0)
    depreciation: Decimal = Decimal(0)
    energy_cost: Decimal = Decimal(0)
    other_opex: Decimal = Decimal(0)
    bv_start: Decimal = Decimal(0)
    bv_end: Decimal = Decimal(0)
    idle_value: Decimal = Decimal(0)
    list_value: Decimal = Decimal(0)  # available hours x on-demand rate
    accrual_s: int = 0


def compute(facts: Facts, register: AssetRegister, *, now: datetime | None = None) -> Report:
    """Economics of the period from ledger facts and the asset register (no I/O)."""
    period = facts.period
    now = now or datetime.now(UTC)
    # Calendar costs (depreciation) accrue over the observed span: from the first to the end of
    # the last hour the ledger holds in the period, capped at now. The worker records every
    # second of a running fleet, idle included, so outside that span the fleet is unobserved
    # (not metered yet, or a demo's short run) and charging a whole month to a few hours of
    # usage would make every ratio meaningless. Gaps inside the span still accrue.
    if facts.gpu_hours:
        first = min(h.hour for h in facts.gpu_hours)
        last = max(h.hour for h in facts.gpu_hours) + timedelta(hours=1)
        accrual_start = max(period.start, first)
        accrual_end = max(accrual_start, min(period.end, now, last))
    else:
        accrual_start = accrual_end = period.start
    site = register.site
    accs: dict[tuple[Dimension, str], _Acc] = defaultdict(_Acc)

    def groups(h: GpuHour) -> list[_Acc]:
        return [accs[("fleet", "fleet")], accs[("gpu_model", h.gpu_model)],
                accs[("node", h.node_id)], accs[("day", h.hour.date().isoformat())]]

    # 1. Usage, energy, opex and idle value: per GPU-hour, into every group it belongs to.
    gpus: dict[str, tuple[str, str]] = {}
    for h in facts.gpu_hours:
        gpus[h.gpu_uuid] = (h.node_id, h.gpu_model)
        asset = register.asset_for(h.gpu_uuid, h.node_id, h.gpu_model)
        rates = register.models.get(h.gpu_model)
        kwh = Decimal(h.energy_mj) / MJ_PER_KWH
        energy_cost = kwh * site.pue * site.energy_price(h.hour.hour)
        opex = Decimal(h.available_s) / 3600 * asset.other_opex_per_gpu_hour if asset else Decimal(0)
        idle_value = Decimal(h.idle_s) / 3600 * rates.spot_per_gpu_hour if rates else Decimal(0)
        list_value = Decimal(h.available_s) / 3600 * rates.on_demand_per_gpu_hour if rates else Decimal(0)
        for a in groups(h):
            a.gpus.add(h.gpu_uuid)
            a.available_s += h.available_s
            a.allocated_s += h.allocated_s
            a.active_s += h.active_s
            a.idle_s += h.idle_s
            a.sm_sum += h.sm_sum
            a.energy_mj += h.energy_mj
            a.energy_cost += energy_cost
            a.other_opex += opex
            a.idle_value += idle_value
            a.list_value += list_value

    # 2. Depreciation and book value accrue by calendar time for every GPU seen in the period
    #    (an owned GPU loses value even on a day its agent sent nothing).
    unregistered = []
    days = sorted(k for d, k in accs if d == "day")
    for uuid, (node, model) in sorted(gpus.items()):
        asset = register.asset_for(uuid, node, model)
        if asset is None:
            unregistered.append(uuid)
            continue
        dep = asset.depreciation(accrual_start, accrual_end)
        bv0, bv1 = asset.book_value(accrual_start), asset.book_value(accrual_end)
        for key in (("fleet", "fleet"), ("gpu_model", model), ("node", node)):
            a = accs[key]
            a.depreciation += dep
            a.bv_start += bv0
            a.bv_end += bv1
        for day in days:
            d0 = max(datetime.fromisoformat(day).replace(tzinfo=UTC), accrual_start)
            d1 = min(datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1),
                     accrual_end)
            a = accs[("day", day)]
            a.depreciation += asset.depreciation(d0, d1)
            a.bv_start += asset.book_value(d0)
            a.bv_end += asset.book_value(max(d0, d1))
    for (dim, key), a in accs.items():
        if dim == "day":
            day0 = datetime.fromisoformat(key).replace(tzinfo=UTC)
            d0, d1 = max(day0, accrual_start), min(day0 + timedelta(days=1), accrual_end)
            a.accrual_s = max(0, int((d1 - d0).total_seconds()))
        else:
            a.accrual_s = int((accrual_end - accrual_start).total_seconds())

    # 3. Revenue: per (tenant, model) from invoices or rating, then onto groups by allocated time.
    source: RevenueSource
    if facts.invoiced is not None:
        source, note = "invoices", facts.invoice_note or "invoice lines, tax excluded"
        lines = list(facts.invoiced)
    else:
        source = "on_demand_rating"
        note = ("no invoices for the period: allocated GPU-hours rated at the asset register's "
                "on-demand rates")
        lines = _rate_on_demand(facts.jobs, register)
    by_model = _revenue_by_model(lines, facts.jobs, accs)
    accs[("fleet", "fleet")].revenue = sum((ln.amount for ln in lines), Decimal(0))
    alloc_by_model = {k: a.allocated_s for (d, k), a in accs.items() if d == "gpu_model"}
    avail_by_model = {k: a.available_s for (d, k), a in accs.items() if d == "gpu_model"}
    spread: dict[tuple[Dimension, str], Decimal] = defaultdict(Decimal)
    for h in facts.gpu_hours:
        model_rev = by_model.get(h.gpu_model, Decimal(0))
        if not model_rev:
            continue
        # Revenue follows allocated seconds within a model; a model billed without any
        # allocated second (a pure commitment) follows available seconds instead.
        if alloc_by_model.get(h.gpu_model):
            share = Decimal(h.allocated_s) / alloc_by_model[h.gpu_model]
        else:
            share = Decimal(h.available_s) / avail_by_model[h.gpu_model]
        spread[("node", h.node_id)] += model_rev * share
        spread[("day", h.hour.date().isoformat())] += model_rev * share
    for model, amount in by_model.items():
        if ("gpu_model", model) in accs:
            accs[("gpu_model", model)].revenue = amount
    for key, amount in spread.items():
        accs[key].revenue = amount

    metrics = {key: _freeze(key, a, site.pue) for key, a in accs.items()}
    if ("fleet", "fleet") not in metrics:
        metrics[("fleet", "fleet")] = _freeze(("fleet", "fleet"), accs[("fleet", "fleet")], site.pue)

    def dim(d: Dimension) -> tuple[Metrics, ...]:
        return tuple(sorted((m for (k, _), m in metrics.items() if k == d), key=lambda m: m.key))

    models = {m.key: m for m in dim("gpu_model")}
    tenants = _tenants(lines, facts.jobs, models)
    return Report(
        period=period, currency=register.currency, revenue_source=source, revenue_note=note,
        fleet=metrics[("fleet", "fleet")], by_model=dim("gpu_model"), by_node=dim("node"),
        by_day=dim("day"), tenants=tenants, work=_work(facts, models),
        unregistered_gpus=tuple(unregistered), gpu_hours=facts.gpu_hours,
    )


def _freeze(key: tuple[Dimension, str], a: _Acc, pue: Decimal) -> Metrics:
    return Metrics(
        dimension=key[0], key=key[1], gpus=len(a.gpus), available_s=a.available_s,
        allocated_s=a.allocated_s, active_s=a.active_s, idle_s=a.idle_s, sm_sum=a.sm_sum,
        energy_mj=a.energy_mj, pue=pue, revenue=a.revenue, depreciation=a.depreciation,
        energy_cost=a.energy_cost, other_opex=a.other_opex, book_value_start=a.bv_start,
        book_value_end=a.bv_end, accrual_s=a.accrual_s, idle_value=a.idle_value,
        list_rate=a.list_value / (Decimal(a.available_s) / 3600) if a.available_s else None,
    )


def _rate_on_demand(jobs: Iterable[JobUsage], register: AssetRegister) -> list[RevenueLine]:
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for j in jobs:
        rates = register.models.get(j.gpu_model)
        if rates is not None:
            total[(j.tenant, j.gpu_model)] += Decimal(j.allocated_s) / 3600 * rates.on_demand_per_gpu_hour
    return [RevenueLine(t, m, amount) for (t, m), amount in sorted(total.items())]


def _revenue_by_model(
    lines: Iterable[RevenueLine], jobs: Iterable[JobUsage], accs: dict[tuple[Dimension, str], _Acc]
) -> dict[str, Decimal]:
    """Lines that name a model go to it; the rest (commitments, discounts, credits) follow the
    tenant's allocated seconds per model, or the fleet's when the tenant used nothing."""
    jobs = list(jobs)
    tenant_alloc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for j in jobs:
        tenant_alloc[j.tenant][j.gpu_model] += j.allocated_s
    fleet_alloc = {k: a.allocated_s for (d, k), a in accs.items() if d == "gpu_model"}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        if ln.gpu_model:
            out[ln.gpu_model] += ln.amount
            continue
        weights = {m: s for m, s in tenant_alloc.get(ln.tenant, {}).items() if s} or {
            m: s for m, s in fleet_alloc.items() if s}
        total = sum(weights.values())
        for m, s in weights.items():
            out[m] += ln.amount * s / total
    return dict(out)


def _tenants(
    lines: Iterable[RevenueLine], jobs: Iterable[JobUsage], models: dict[str, Metrics]
) -> tuple[TenantMetrics, ...]:
    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0.0, 0, Decimal(0), Decimal(0)])
    for j in jobs:
        a = acc[j.tenant]
        a[0] += j.allocated_s
        a[1] += j.active_s
        a[2] += j.sm_sum
        a[3] += j.energy_mj
        m = models.get(j.gpu_model)
        if m is not None and m.cost_per_gpu_hour is not None:
            a[5] += Decimal(j.allocated_s) / 3600 * m.cost_per_gpu_hour
    for ln in lines:
        acc[ln.tenant][4] += ln.amount
    out = [TenantMetrics(t, *a) for t, a in acc.items()]
    return tuple(sorted(out, key=lambda t: (-t.allocated_s, t.tenant)))


def _work(facts: Facts, models: dict[str, Metrics]) -> tuple[WorkMetrics, ...]:
    per_job: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for j in facts.jobs:
        per_job[(j.tenant, j.job)][j.gpu_model] = j.allocated_s
    out: list[WorkMetrics] = []
    for w in facts.work:
        usage = per_job.get((w.tenant, w.job), {})
        total = sum(usage.values())
        for model, seconds in sorted(usage.items()):
            if not seconds:
                continue
            m = models.get(model)
            hours = Decimal(seconds) / 3600
            cost_rate = m.cost_per_gpu_hour if m and m.cost_per_gpu_hour is not None else Decimal(0)
            rev_rate = m.revenue_per_allocated_hour if m and m.revenue_per_allocated_hour else Decimal(0)
            out.append(WorkMetrics(
                tenant=w.tenant, job=w.job, gpu_model=model, unit=w.unit,
                quantity=Decimal(w.quantity) * seconds / total, gpu_hours=hours,
                cost=hours * cost_rate, revenue=hours * rev_rate,
            ))
    return tuple(out)


# -- load (ClickHouse) ------------------------------------------------------------------------

_GPU_HOURS = """
SELECT toStartOfHour(minute) AS hour, gpu_model, node_id, gpu_uuid,
       sum(gpu_seconds)                            AS available_s,
       sumIf(gpu_seconds, tenant != '__idle__')    AS allocated_s,
       sumIf(active_seconds, tenant != '__idle__') AS active_s,
       sumIf(gpu_seconds, tenant = '__idle__')     AS idle_s,
       sumIf(sm_util_sum, tenant != '__idle__')    AS sm_sum,
       sum(energy_mj)                              AS energy_mj
FROM usage_minutely FINAL
WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
GROUP BY hour, gpu_model, node_id, gpu_uuid
ORDER BY hour, gpu_uuid
"""

_JOBS = """
SELECT tenant, job, gpu_model, sum(gpu_seconds), sum(active_seconds), sum(sm_util_sum),
       sum(energy_mj)
FROM usage_minutely FINAL
WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')} AND tenant != '__idle__'
GROUP BY tenant, job, gpu_model
ORDER BY tenant, job, gpu_model
"""

_INVOICED = """
SELECT i.invoice_id, i.tenant, i.status, l.gpu_model, sum(l.amount)
FROM invoice_lines AS l FINAL
INNER JOIN (SELECT * FROM invoices FINAL) AS i ON i.invoice_id = l.invoice_id
WHERE i.period = {period:String} AND l.kind != 'tax' AND l.is_deleted = 0
GROUP BY i.invoice_id, i.tenant, i.status, l.gpu_model
"""

_WORK = """
SELECT tenant, job, unit, sum(quantity)
FROM work_units FINAL
WHERE window_start >= {start:DateTime('UTC')} AND window_start < {end:DateTime('UTC')}
GROUP BY tenant, job, unit
ORDER BY tenant, job, unit
"""


def load_facts(client: Client, period: Period) -> Facts:
    params = {"start": period.start.replace(tzinfo=None), "end": period.end.replace(tzinfo=None)}
    hours = tuple(
        GpuHour(_utc(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), int(r[7]),
                float(r[8]), int(r[9]))
        for r in client.query(_GPU_HOURS, parameters=params).result_rows
    )
    jobs = tuple(
        JobUsage(r[0], r[1], r[2], int(r[3]), int(r[4]), float(r[5]), int(r[6]))
        for r in client.query(_JOBS, parameters=params).result_rows
    )
    invoiced, note = _load_invoiced(client, period, jobs, params)
    work: tuple[WorkTotal, ...] = ()
    if _has_tables(client, "work_units"):
        work = tuple(WorkTotal(r[0], r[1], r[2], int(r[3]))
                     for r in client.query(_WORK, parameters=params).result_rows)
    return Facts(period, hours, jobs, invoiced, note, work)


def _load_invoiced(
    client: Client, period: Period, jobs: tuple[JobUsage, ...], params: dict[str, Any]
) -> tuple[tuple[RevenueLine, ...] | None, str]:
    if not _has_tables(client, "invoices", "invoice_lines"):
        return None, ""
    rows = client.query(_INVOICED, parameters={"period": period.month}).result_rows
    if not rows:
        return None, ""
    # A tenant's finalized invoices are the truth; its drafts count only when it has none.
    finalized = {r[1] for r in rows if r[2] == "finalized"}
    chosen = [r for r in rows if r[2] == "finalized" or r[1] not in finalized]
    n_final = len({r[0] for r in chosen if r[2] == "finalized"})
    n_draft = len({r[0] for r in chosen if r[2] != "finalized"})
    amounts: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for _inv, tenant, _status, model, amount in chosen:
        amounts[(tenant, model or "")] += Decimal(amount)
    note = f"{n_final} finalized and {n_draft} draft invoice(s) for {period.month}, tax excluded"
    if not period.is_month:
        # A day gets the month's invoiced amount in proportion to its allocated GPU-seconds.
        month = parse_period(period.month)
        mparams = {"start": month.start.replace(tzinfo=None), "end": month.end.replace(tzinfo=None)}
        month_alloc: dict[tuple[str, str], int] = defaultdict(int)
        for r in client.query(_JOBS, parameters=mparams).result_rows:
            month_alloc[(r[0], r[2])] += int(r[3])
            month_alloc[(r[0], "")] += int(r[3])
        day_alloc: dict[tuple[str, str], int] = defaultdict(int)
        for j in jobs:
            day_alloc[(j.tenant, j.gpu_model)] += j.allocated_s
            day_alloc[(j.tenant, "")] += j.allocated_s
        amounts = {
            k: v * day_alloc.get(k, 0) / month_alloc[k] if month_alloc.get(k) else Decimal(0)
            for k, v in amounts.items()
        }
        note += f", pro-rated to {period.label} by allocated GPU-seconds"
    return tuple(RevenueLine(t, m, a) for (t, m), a in sorted(amounts.items())), note


def _has_tables(client: Client, *names: str) -> bool:
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name IN {names:Array(String)}", parameters={"names": list(names)},
    ).result_rows[0][0]
    return int(found) == len(names)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sync_asset_rates(client: Client, register: AssetRegister) -> None:
    """Copy per-model rates into ``asset_rates`` so SQL and Grafana can value idle capacity."""
    now = datetime.now(UTC)
    rows = [[m, register.currency, r.on_demand_per_gpu_hour, r.spot_per_gpu_hour, now]
            for m, r in sorted(register.models.items())]
    if rows:
        client.insert("asset_rates", rows, column_names=[
            "gpu_model", "currency", "on_demand_per_gpu_hour", "spot_per_gpu_hour", "updated_at"])
