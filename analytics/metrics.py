"""Are the GPUs earning their keep? Utilization, idle capacity and return on assets per period.

Two steps, kept apart so the arithmetic is testable on plain data:

1. :func:`analytics.ledger_facts.load_facts` reads the exact ledger (``usage_minutely FINAL``), invoices
   and work units for a period from ClickHouse;
2. :func:`compute` turns facts plus the asset register into :class:`Metrics` per fleet, GPU
   model, node and day, plus per tenant and per job.

Definitions (the data dictionary in schemas/clickhouse/README.md uses the same words):

- counted in milli-GPU-seconds (contract v2: a GPU-second may be split into shares in
  milli-GPUs, the unallocated remainder recorded as idle, so one GPU-second is 1000).
- available GPU-seconds: every GPU-second the ledger holds, idle included (the worker records
  idle seconds, and the unallocated remainder of shared ones, as tenant ``__idle__``);
  allocated: the shares held by allocations; active: allocated shares of seconds with SM
  utilization > 0; idle = available - allocated.
- utilization = allocated milli-GPU-seconds / (1000 x observed GPU-seconds); efficiency = mean
  SM utilization over allocated capacity (share-weighted).
- shared GPUs (``analytics.sharing``): capacity of seconds split into shares, the part packed
  with allocations and the idle remainder.
- revenue: invoice lines except tax for the period (a tenant's finalized invoices if it has any,
  else its drafts); with no invoices at all, allocated GPU-hours rated at the register's
  on-demand rate per model. :attr:`Report.revenue_source` says which.
- costs: straight-line depreciation (calendar time over the observed span of the period: first
  to last hour in the ledger, capped at now), energy
  (GPU kWh x the PUE of the node's site in that UTC month x the site's price of that UTC hour:
  :mod:`analytics.sites`) and other opex per available GPU-hour. A group's ``pue`` is the
  energy-weighted PUE of its GPU-hours (facility kWh / GPU kWh).
- ROA (annualized) = margin / mean book value x (year / accrual time).
- break-even utilization = cost / (revenue per allocated GPU-hour x available GPU-hours): the
  utilization at which revenue would cover cost, if the realized price per allocated hour stays
  and cost does not move with utilization (energy does, a little: an approximation).
- idle value = idle GPU-hours x the model's spot rate: revenue left on the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from analytics.assets import SECONDS_PER_YEAR
from analytics.ledger_facts import GpuHour, ReportPeriod
from analytics.sharing import Packing
from kernel.names import MILLI_PER_GPU_HOUR as MILLI_PER_HOUR
from kernel.names import MJ_PER_KWH

Dimension = Literal["fleet", "gpu_model", "node", "day"]
RevenueSource = Literal["invoices", "on_demand_rating"]


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Usage and economics of one group (the fleet, a model, a node or a day)."""

    dimension: Dimension
    key: str
    gpus: int
    available_milli: int
    allocated_milli: int
    active_milli: int
    idle_milli: int
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
    #: facility kWh: each GPU-hour's energy x the PUE of its node's site in its month (None:
    #: energy_kwh x pue, one PUE for the group)
    facility_energy_kwh: Decimal | None = None

    @property
    def available_h(self) -> Decimal:
        return Decimal(self.available_milli) / MILLI_PER_HOUR

    @property
    def allocated_h(self) -> Decimal:
        return Decimal(self.allocated_milli) / MILLI_PER_HOUR

    @property
    def active_h(self) -> Decimal:
        return Decimal(self.active_milli) / MILLI_PER_HOUR

    @property
    def idle_h(self) -> Decimal:
        return Decimal(self.idle_milli) / MILLI_PER_HOUR

    @property
    def available_s(self) -> Decimal:
        """GPU-seconds observed (exact: milli-GPU-seconds / 1000)."""
        return Decimal(self.available_milli) / 1000

    @property
    def allocated_s(self) -> Decimal:
        """Share-weighted GPU-seconds allocated (a 250-milli share for 4 s: 1)."""
        return Decimal(self.allocated_milli) / 1000

    @property
    def active_s(self) -> Decimal:
        return Decimal(self.active_milli) / 1000

    @property
    def idle_s(self) -> Decimal:
        """Share-weighted idle GPU-seconds: idle GPUs and the unallocated rest of shared ones."""
        return Decimal(self.idle_milli) / 1000

    @property
    def utilization(self) -> Decimal | None:
        return (
            Decimal(self.allocated_milli) / self.available_milli if self.available_milli else None
        )

    @property
    def active_share(self) -> Decimal | None:
        return Decimal(self.active_milli) / self.available_milli if self.available_milli else None

    @property
    def efficiency_pct(self) -> float | None:
        return 1000 * self.sm_sum / self.allocated_milli if self.allocated_milli else None

    @property
    def energy_kwh(self) -> Decimal:
        return Decimal(self.energy_mj) / Decimal(MJ_PER_KWH)

    @property
    def facility_kwh(self) -> Decimal:
        if self.facility_energy_kwh is not None:
            return self.facility_energy_kwh
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
        return self.cost / self.available_h if self.available_milli else None

    @property
    def cost_per_allocated_hour(self) -> Decimal | None:
        return self.cost / self.allocated_h if self.allocated_milli else None

    @property
    def revenue_per_allocated_hour(self) -> Decimal | None:
        if self.allocated_milli and self.revenue > 0:
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
        if not price or not self.available_milli:
            return None
        return self.cost / (price * self.available_h)


@dataclass(frozen=True)
class TenantMetrics:
    tenant: str
    allocated_milli: int
    active_milli: int
    sm_sum: float
    energy_mj: int
    revenue: Decimal
    cost: Decimal  # the tenant's allocated hours at its models' full cost per GPU-hour

    @property
    def allocated_h(self) -> Decimal:
        return Decimal(self.allocated_milli) / MILLI_PER_HOUR

    @property
    def allocated_s(self) -> Decimal:
        return Decimal(self.allocated_milli) / 1000

    @property
    def efficiency_pct(self) -> float | None:
        return 1000 * self.sm_sum / self.allocated_milli if self.allocated_milli else None


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
    period: ReportPeriod
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
    #: what the numbers cannot show (models without a price, GPUs without an asset): a value
    #: that is unknown is said so here, never silently counted as 0.
    warnings: tuple[str, ...] = ()
    #: shared GPUs per model, then the fleet (``analytics.sharing``); () when none were shared.
    sharing: tuple[Packing, ...] = ()
