"""Revenue for the analytics: which amount belongs to which GPU model, node and day.

Recognition: usage-driven revenue (usage, overage, discounts, credits, energy, adjustments)
follows the tenant's allocated GPU-seconds; time-driven revenue (commitments and minimum spend,
``RevenueLine.covers`` set by :mod:`analytics.ledger_facts`) is earned evenly over the contract time it
covers, so a month's commitment is spread over its days instead of landing on the day the
tenant happened to run a job (which made daily margin and ROA meaningless). Values the register
cannot price are reported by :func:`unknowns`, never silently counted as 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from analytics.assets import AssetRegister
from analytics.ledger_facts import Facts, JobTotal, RevenueLine
from analytics.metrics import Dimension
from kernel.names import MILLI_PER_GPU_HOUR as MILLI_PER_HOUR


def rate_on_demand(jobs: Iterable[JobTotal], register: AssetRegister) -> list[RevenueLine]:
    """Without invoices: allocated GPU-hours at the register's on-demand rates."""
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for j in jobs:
        rates = register.models.get(j.gpu_model)
        if rates is not None:
            total[(j.tenant, j.gpu_model)] += (
                Decimal(j.allocated_milli) / MILLI_PER_HOUR * rates.on_demand_per_gpu_hour
            )
    return [RevenueLine(t, m, amount) for (t, m), amount in sorted(total.items())]


def revenue_by_model(
    lines: Iterable[RevenueLine], jobs: Iterable[JobTotal], fleet_alloc: Mapping[str, int]
) -> dict[str, Decimal]:
    """Lines that name a model go to it; the rest (discounts, credits, minimum spend) follow the
    tenant's allocated seconds per model, or the fleet's when the tenant used nothing."""
    tenant_alloc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for j in jobs:
        tenant_alloc[j.tenant][j.gpu_model] += j.allocated_milli
    out: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        if ln.gpu_model:
            out[ln.gpu_model] += ln.amount
            continue
        weights = {m: s for m, s in tenant_alloc.get(ln.tenant, {}).items() if s} or {
            m: s for m, s in fleet_alloc.items() if s
        }
        total = sum(weights.values())
        for m, s in weights.items():
            out[m] += ln.amount * s / total
    return dict(out)


def spread_revenue(
    lines: list[RevenueLine],
    facts: Facts,
    days: list[str],
    alloc_by_model: Mapping[str, int],
    avail_by_model: Mapping[str, int],
) -> dict[tuple[Dimension, str], Decimal]:
    """Revenue per ("node", id) and ("day", YYYY-MM-DD)."""
    by_model = revenue_by_model(lines, facts.jobs, alloc_by_model)
    usage_by_model = revenue_by_model(
        [ln for ln in lines if ln.covers is None], facts.jobs, alloc_by_model
    )
    spread: dict[tuple[Dimension, str], Decimal] = defaultdict(Decimal)
    for h in facts.gpu_hours:
        if not by_model.get(h.gpu_model):
            continue
        # Within a model revenue follows allocated seconds; a model billed without any
        # allocated second (a pure commitment) follows available seconds instead.
        if alloc_by_model.get(h.gpu_model):
            share = Decimal(h.allocated_milli) / alloc_by_model[h.gpu_model]
        else:
            share = Decimal(h.available_milli) / avail_by_model[h.gpu_model]
        spread[("node", h.node_id)] += by_model[h.gpu_model] * share
        spread[("day", h.hour.date().isoformat())] += (
            usage_by_model.get(h.gpu_model, Decimal(0)) * share
        )
    for ln in lines:
        if ln.covers is None:
            continue
        span = Decimal(max(int((ln.covers[1] - ln.covers[0]).total_seconds()), 1))
        for day in days:
            d0 = datetime.fromisoformat(day).replace(tzinfo=UTC)
            o = (min(ln.covers[1], d0 + timedelta(days=1)) - max(ln.covers[0], d0)).total_seconds()
            if o > 0:
                spread[("day", day)] += ln.amount * Decimal(int(o)) / span
    return dict(spread)


def unknowns(facts: Facts, register: AssetRegister, unregistered: list[str]) -> tuple[str, ...]:
    """Warnings for what the register cannot value: it is unknown, not 0."""
    out = []
    alloc: dict[str, int] = defaultdict(int)
    for j in facts.jobs:
        alloc[j.gpu_model] += j.allocated_milli
    for model, s in sorted(alloc.items()):
        if s and model not in register.models:
            what = (
                "revenue (no invoices), idle value and list rate"
                if facts.invoiced is None
                else "idle value and list rate"
            )
            out.append(
                f"{Decimal(s) / MILLI_PER_HOUR:,.2f} GPU-h ran on {model}, which has no price in "
                f"the asset register: its {what} are unknown, not 0"
            )
    if unregistered:
        out.append(
            f"{len(unregistered)} GPU(s) match no asset in the register: their "
            "depreciation, opex and book value are unknown, not 0 "
            f"({', '.join(unregistered[:5])})"
        )
    return tuple(out)
