"""Showback: internal tenants' use of the fleet at cost, stated as "showback, not invoiced".

Internal tenants (the price book's ``kind = "internal"``, :mod:`analytics.tenant_kinds`) get no
invoice; billing states their GPU-hours, and the report prices them here, because the cost of a
GPU-hour is the asset register's (analytics'), and billing never imports analytics.

Per internal tenant and GPU model:

- GPU-hours = share-weighted milli-GPU-seconds of ``usage_minutely FINAL`` / 3,600,000 (exact);
- cost per GPU-hour = the model's full cost per available GPU-hour in the report's period
  (:attr:`analytics.metrics.Metrics.cost_per_gpu_hour`: straight-line depreciation, energy at
  the site's PUE and hourly price, other opex), rounded half-even to 6 decimals: the rate shown
  is the rate used;
- amount = milli-GPU-seconds x that rate / 3,600,000, rounded half-even to the cent, once per
  line; a tenant's total is the sum of its rounded lines.

A model the register cannot cost (no asset) has an unknown rate and amount, never 0.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from analytics.metrics import Metrics
from kernel.names import MILLI_PER_GPU_HOUR

SHOWBACK_NOTE = "showback, not invoiced"
RATE_EXP = Decimal("0.000001")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class ShowbackLine:
    tenant: str
    gpu_model: str
    milli: int  # share-weighted milli-GPU-seconds
    cost_per_gpu_hour: Decimal | None  # 6 decimals; None: the register cannot cost the model
    amount: Decimal | None  # to the cent; None: unknown, not 0

    @property
    def gpu_hours(self) -> Decimal:
        return Decimal(self.milli) / MILLI_PER_GPU_HOUR


def showback_at_cost(
    milli: Mapping[tuple[str, str], int],
    by_model: Iterable[Metrics],
    unknown_models: Collection[str] = frozenset(),
) -> tuple[ShowbackLine, ...]:
    """Lines per (tenant, model) of ``milli`` (internal tenants' usage), in that order.
    ``unknown_models``: models with a GPU no asset matches (its cost would be understated)."""
    rates = {
        m.key: m.cost_per_gpu_hour.quantize(RATE_EXP, rounding=ROUND_HALF_EVEN)
        for m in by_model
        if m.cost_per_gpu_hour is not None and m.key not in unknown_models
    }
    out = []
    for (tenant, model), v in sorted(milli.items()):
        if not v:
            continue
        rate = rates.get(model)
        amount = (
            None
            if rate is None
            else (Decimal(v) * rate / MILLI_PER_GPU_HOUR).quantize(CENT, rounding=ROUND_HALF_EVEN)
        )
        out.append(ShowbackLine(tenant, model, v, rate, amount))
    return tuple(out)


def tenant_totals(lines: Iterable[ShowbackLine]) -> dict[str, Decimal | None]:
    """Sum of each tenant's rounded lines; None when any of its lines is unknown."""
    out: dict[str, Decimal | None] = {}
    for ln in lines:
        prev = out.get(ln.tenant, Decimal(0))
        out[ln.tenant] = None if prev is None or ln.amount is None else prev + ln.amount
    return out
