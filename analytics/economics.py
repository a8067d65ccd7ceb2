"""Computing the economics: facts (ledger, invoices, work units) plus the asset register in,
a :class:`~analytics.metrics.Report` out. Pure: no I/O, no clock unless ``now`` is omitted.
The definitions of every figure are in :mod:`analytics.metrics`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from analytics.assets import AssetRegister
from analytics.ledger_facts import Facts, GpuHour, JobTotal, RevenueLine
from analytics.metrics import (
    Dimension,
    Metrics,
    Report,
    RevenueSource,
    TenantMetrics,
    WorkMetrics,
)
from analytics.revenue import rate_on_demand, revenue_by_model, spread_revenue, unknowns
from analytics.sharing import packing
from kernel.names import MILLI_PER_GPU_HOUR as MILLI_PER_HOUR
from kernel.names import MJ_PER_KWH


@dataclass
class _Acc:
    gpus: set[str] = field(default_factory=set)
    available_milli: int = 0
    allocated_milli: int = 0
    active_milli: int = 0
    idle_milli: int = 0
    sm_sum: float = 0.0
    energy_mj: int = 0
    facility_kwh: Decimal = Decimal(0)  # GPU energy x the PUE of its site and month
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
    accs: dict[tuple[Dimension, str], _Acc] = defaultdict(_Acc)

    def groups(h: GpuHour) -> list[_Acc]:
        return [
            accs[("fleet", "fleet")],
            accs[("gpu_model", h.gpu_model)],
            accs[("node", h.node_id)],
            accs[("day", h.hour.date().isoformat())],
        ]

    # 1. Usage, energy, opex and idle value: per GPU-hour, into every group it belongs to.
    gpus: dict[str, tuple[str, str]] = {}
    for h in facts.gpu_hours:
        gpus[h.gpu_uuid] = (h.node_id, h.gpu_model)
        asset = register.asset_for(h.gpu_uuid, h.node_id, h.gpu_model)
        rates = register.models.get(h.gpu_model)
        kwh = Decimal(h.energy_mj) / Decimal(MJ_PER_KWH)
        site = register.site_for(h.node_id)
        facility_kwh = kwh * site.pue_at(h.hour)
        energy_cost = facility_kwh * site.energy_price(h.hour.hour)
        opex = (
            Decimal(h.available_milli) / MILLI_PER_HOUR * asset.other_opex_per_gpu_hour
            if asset
            else Decimal(0)
        )
        idle_value = (
            Decimal(h.idle_milli) / MILLI_PER_HOUR * rates.spot_per_gpu_hour
            if rates
            else Decimal(0)
        )
        list_value = (
            Decimal(h.available_milli) / MILLI_PER_HOUR * rates.on_demand_per_gpu_hour
            if rates
            else Decimal(0)
        )
        for a in groups(h):
            a.gpus.add(h.gpu_uuid)
            a.available_milli += h.available_milli
            a.allocated_milli += h.allocated_milli
            a.active_milli += h.active_milli
            a.idle_milli += h.idle_milli
            a.sm_sum += h.sm_sum
            a.energy_mj += h.energy_mj
            a.facility_kwh += facility_kwh
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
            d1 = min(
                datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1), accrual_end
            )
            a = accs[("day", day)]
            a.depreciation += asset.depreciation(d0, d1)
            a.bv_start += asset.book_value(d0)
            a.bv_end += asset.book_value(max(d0, d1))
    for (kind, name), a in accs.items():
        if kind == "day":
            day0 = datetime.fromisoformat(name).replace(tzinfo=UTC)
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
        note = (
            "no invoices for the period: allocated GPU-hours rated at the asset register's "
            "on-demand rates"
        )
        lines = rate_on_demand(facts.jobs, register)
    alloc_by_model = {k: a.allocated_milli for (d, k), a in accs.items() if d == "gpu_model"}
    avail_by_model = {k: a.available_milli for (d, k), a in accs.items() if d == "gpu_model"}
    by_model = revenue_by_model(lines, facts.jobs, alloc_by_model)
    accs[("fleet", "fleet")].revenue = sum((ln.amount for ln in lines), Decimal(0))
    spread = spread_revenue(lines, facts, days, alloc_by_model, avail_by_model)
    for model, amount in by_model.items():
        if ("gpu_model", model) in accs:
            accs[("gpu_model", model)].revenue = amount
    for key, amount in spread.items():
        accs[key].revenue = amount

    pue = register.site.pue  # stated where a group has no energy to weigh its sites' PUE by
    metrics = {key: _freeze(key, a, pue) for key, a in accs.items()}
    if ("fleet", "fleet") not in metrics:
        metrics[("fleet", "fleet")] = _freeze(("fleet", "fleet"), accs[("fleet", "fleet")], pue)

    def dim(d: Dimension) -> tuple[Metrics, ...]:
        return tuple(sorted((m for (k, _), m in metrics.items() if k == d), key=lambda m: m.key))

    models = {m.key: m for m in dim("gpu_model")}
    tenants = _tenants(lines, facts.jobs, models)
    return Report(
        period=period,
        currency=register.currency,
        revenue_source=source,
        revenue_note=note,
        fleet=metrics[("fleet", "fleet")],
        by_model=dim("gpu_model"),
        by_node=dim("node"),
        by_day=dim("day"),
        tenants=tenants,
        work=_work(facts, models),
        unregistered_gpus=tuple(unregistered),
        gpu_hours=facts.gpu_hours,
        warnings=unknowns(facts, register, unregistered),
        sharing=packing(facts.gpu_hours),
    )


def _freeze(key: tuple[Dimension, str], a: _Acc, pue: Decimal) -> Metrics:
    kwh = Decimal(a.energy_mj) / Decimal(MJ_PER_KWH)
    return Metrics(
        dimension=key[0],
        key=key[1],
        gpus=len(a.gpus),
        available_milli=a.available_milli,
        allocated_milli=a.allocated_milli,
        active_milli=a.active_milli,
        idle_milli=a.idle_milli,
        sm_sum=a.sm_sum,
        energy_mj=a.energy_mj,
        pue=a.facility_kwh / kwh if kwh else pue,  # energy-weighted over sites and months
        facility_energy_kwh=a.facility_kwh,
        revenue=a.revenue,
        depreciation=a.depreciation,
        energy_cost=a.energy_cost,
        other_opex=a.other_opex,
        book_value_start=a.bv_start,
        book_value_end=a.bv_end,
        accrual_s=a.accrual_s,
        idle_value=a.idle_value,
        list_rate=a.list_value / (Decimal(a.available_milli) / MILLI_PER_HOUR)
        if a.available_milli
        else None,
    )


def _tenants(
    lines: Iterable[RevenueLine], jobs: Iterable[JobTotal], models: dict[str, Metrics]
) -> tuple[TenantMetrics, ...]:
    acc: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0.0, 0, Decimal(0), Decimal(0)])
    for j in jobs:
        a = acc[j.tenant]
        a[0] += j.allocated_milli
        a[1] += j.active_milli
        a[2] += j.sm_sum
        a[3] += j.energy_mj
        m = models.get(j.gpu_model)
        if m is not None and m.cost_per_gpu_hour is not None:
            a[5] += Decimal(j.allocated_milli) / MILLI_PER_HOUR * m.cost_per_gpu_hour
    for ln in lines:
        acc[ln.tenant][4] += ln.amount
    out = [TenantMetrics(t, *a) for t, a in acc.items()]
    return tuple(sorted(out, key=lambda t: (-t.allocated_milli, t.tenant)))


def _work(facts: Facts, models: dict[str, Metrics]) -> tuple[WorkMetrics, ...]:
    per_job: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for j in facts.jobs:
        per_job[(j.tenant, j.job)][j.gpu_model] = j.allocated_milli
    out: list[WorkMetrics] = []
    for w in facts.work:
        usage = per_job.get((w.tenant, w.job), {})
        total = sum(usage.values())
        for model, seconds in sorted(usage.items()):
            if not seconds:
                continue
            m = models.get(model)
            hours = Decimal(seconds) / MILLI_PER_HOUR
            cost_rate = m.cost_per_gpu_hour if m and m.cost_per_gpu_hour is not None else Decimal(0)
            rev_rate = (
                m.revenue_per_allocated_hour if m and m.revenue_per_allocated_hour else Decimal(0)
            )
            out.append(
                WorkMetrics(
                    tenant=w.tenant,
                    job=w.job,
                    gpu_model=model,
                    unit=w.unit,
                    quantity=Decimal(w.quantity) * seconds / total,
                    gpu_hours=hours,
                    cost=hours * cost_rate,
                    revenue=hours * rev_rate,
                )
            )
    return tuple(out)
