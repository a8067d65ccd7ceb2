"""The price book: rates, billing classes, plans and tenant contracts (the types).

Loading and validation live in :mod:`billing.pricebook_parser`: every problem is reported at
once, each naming its entry (``rates[2] (gpu_model='...', on_demand, from 2026-11-01): ...``).
Numbers are ``Decimal``, never binary floats. Precision is part of validity: money amounts have
at most the currency's minor-unit digits and prices at most :data:`PRICE_DECIMALS`, so the price
a document shows is always the price the amount was computed with.

A job's billing class comes from allocation metadata: the ledger's ``billing_class`` column,
set by the node agent from the scheduler's allocation; ``''`` means "the tenant contract's
``default_class``".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Literal

from billing.period import Period

# Defined once in the kernel; re-exported here for rating, store and reconcile.
from kernel.names import BILLING_CLASSES as BILLING_CLASSES
from kernel.names import IDLE_TENANT as IDLE_TENANT
from kernel.names import MIG_NAME as MIG_NAME
from kernel.names import MIG_SLICES as MIG_SLICES
from kernel.names import BillingClass as BillingClass
from kernel.names import mig_parent as mig_parent

#: What a tenant is to the operator (``[tenants.<id>] kind``): an ``external`` customer is
#: invoiced; an ``internal`` team (research, product) gets no invoice: its usage is shown back at
#: cost (``gpumeter report``), never numbered or billed. Not dated: a tenant's kind applies to
#: every period rated with the book.
TenantKind = Literal["external", "internal"]
#: What a plan does with its minimum duration for a job that was preempted in the period (a
#: record on gpu.preemptions.v1): "waived" (the default) bills what the job held, rounded up to
#: the increment; "charged" applies the minimum as to any other job.
PreemptedMinimum = Literal["waived", "charged"]
PREEMPTED_MINIMUM: tuple[PreemptedMinimum, ...] = ("waived", "charged")
TENANT_KINDS: tuple[TenantKind, ...] = ("external", "internal")

#: Prices (per GPU-hour, per kWh, commitment and overage rates) have at most this many decimals;
#: derived prices (tier discounts, MIG fractions) are rounded half-even to it. Documents show
#: prices with exactly these digits, so the shown price is the price used.
PRICE_DECIMALS = 6
PRICE_EXP = Decimal(1).scaleb(-PRICE_DECIMALS)
#: Percentages (discounts, tier discounts) have at most 4 decimals: their fraction fits 6.
PCT_DECIMALS = 4


def decimals(d: Decimal) -> int:
    """Significant decimal places of ``d`` (3.10 -> 1, 3 -> 0, 1E+2 -> 0)."""
    exp = d.normalize().as_tuple().exponent
    return max(-exp, 0) if isinstance(exp, int) else 0


def round_price(d: Decimal) -> Decimal:
    return d.quantize(PRICE_EXP, rounding=ROUND_HALF_EVEN)


#: GPU model names exactly as NVML's nvmlDeviceGetName reports them. A rate for any other name
#: is a typo until proven otherwise; a price book may declare new hardware in ``extra_gpu_models``.
KNOWN_GPU_MODELS: frozenset[str] = frozenset(
    {
        "NVIDIA B200",
        "NVIDIA B100",
        "NVIDIA GB200",
        "NVIDIA GH200 480GB",
        "NVIDIA H200",
        "NVIDIA H200 NVL",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 PCIe",
        "NVIDIA H100 NVL",
        "NVIDIA H800",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA A100-PCIE-40GB",
        "NVIDIA A100 80GB PCIe",
        "NVIDIA A800-SXM4-80GB",
        "NVIDIA A40",
        "NVIDIA A30",
        "NVIDIA A10",
        "NVIDIA A10G",
        "NVIDIA L40S",
        "NVIDIA L40",
        "NVIDIA L4",
        "NVIDIA RTX 6000 Ada Generation",
        "NVIDIA RTX A6000",
        "NVIDIA GeForce RTX 4090",
        "Tesla V100-SXM2-32GB",
        "Tesla V100-SXM2-16GB",
        "Tesla V100-PCIE-16GB",
        "Tesla T4",
        "Tesla P100-PCIE-16GB",
    }
)


@dataclass(frozen=True)
class Rate:
    """List price of one GPU-hour of a model in a class, metered per second, from a date."""

    gpu_model: str
    billing_class: BillingClass
    price_per_gpu_hour: Decimal
    effective_from: date
    effective_until: date | None = None  # exclusive; None: until the next rate for the key
    #: '' for a list price; a tenant id for that tenant's negotiated rate (wins over the list).
    tenant: str = ""


@dataclass(frozen=True)
class Tier:
    """Graduated volume tier: on-demand GPU-hours of one model in the month up to a bound
    (None: unbounded) get ``discount_pct`` off the rate in force."""

    up_to_gpu_hours: Decimal | None
    discount_pct: Decimal


@dataclass(frozen=True)
class Plan:
    name: str
    minimum_seconds: int = 0  # per job: a job shorter than this is billed this long
    increment_seconds: int = 1  # per job: billable time is rounded up to a multiple of this
    tiers: tuple[Tier, ...] = ()
    #: a preempted job's minimum duration: waived (default) or charged (PreemptedMinimum)
    preempted_minimum: PreemptedMinimum = "waived"


@dataclass(frozen=True)
class Commitment:
    """Reserved GPU-hours per month of one model: billed whether used or not; reserved usage
    beyond it is overage at ``overage_rate``."""

    gpu_model: str
    gpu_hours_per_month: Decimal
    rate: Decimal
    overage_rate: Decimal


@dataclass(frozen=True)
class Energy:
    """Pass-through of measured GPU energy: kWh x PUE x price per kWh, its own invoice line."""

    pue: Decimal
    price_per_kwh: Decimal


@dataclass(frozen=True)
class Credit:
    """Prepaid or promotional money applied before tax. Order: earliest expiry first (no expiry
    last), then earliest ``valid_from``, then id in code-point order. A credit limited to a GPU
    model and/or billing class only pays for usage, commitment and overage lines of that scope."""

    id: str
    kind: Literal["prepaid", "promotional"]
    amount: Decimal
    valid_from: date
    valid_until: date | None = None  # inclusive last day; None: never expires
    gpu_model: str = ""  # '' = any model
    billing_class: str = ""  # '' = any class

    @property
    def order_key(self) -> tuple[date, date, str]:
        return (self.valid_until or date.max, self.valid_from, self.id)

    def covers(self, gpu_model: str, billing_class: str) -> bool:
        return (self.gpu_model in ("", gpu_model)) and (self.billing_class in ("", billing_class))

    @property
    def scoped(self) -> bool:
        return bool(self.gpu_model or self.billing_class)

    def usable_in(self, period: Period) -> bool:
        return self.valid_from <= period.last_day and (
            self.valid_until is None or self.valid_until >= period.first_day
        )


@dataclass(frozen=True)
class Party:
    name: str
    address: tuple[str, ...] = ()
    tax_id: str = ""
    email: str = ""


@dataclass(frozen=True)
class Issuer(Party):
    number_prefix: str = "GM"
    payment_terms_days: int = 30


@dataclass(frozen=True)
class TaxRate:
    """A tax rate in force from a UTC date (until the next one)."""

    rate: Decimal
    effective_from: date


@dataclass(frozen=True)
class Contract:
    tenant: str
    customer: Party
    plan: Plan
    default_class: BillingClass = "on_demand"
    discount_pct: Decimal = Decimal(0)
    commitments: tuple[Commitment, ...] = ()
    energy: Energy | None = None
    credits: tuple[Credit, ...] = ()
    tax_rate: Decimal = Decimal(0)  # the rate before the first dated entry of ``tax_rates``
    tax_label: str = "Tax"
    #: First and last (inclusive) UTC day of the contract; None: open. Commitments and the
    #: minimum spend are billed only for the contract's days, pro rata in partial months.
    starts_on: date | None = None
    ends_on: date | None = None
    #: Pre-tax minimum per month: a shortfall is billed as a ``minimum`` line.
    minimum_monthly_spend: Decimal = Decimal(0)
    #: Negotiated rates of this tenant (``Rate.tenant`` set); they win over list rates.
    rates: tuple[Rate, ...] = ()
    tax_rates: tuple[TaxRate, ...] = ()

    def days_in(self, period: Period) -> int:
        """Days of ``period`` inside the contract (0..days in the month)."""
        first = max(period.first_day, self.starts_on or period.first_day)
        last = min(period.last_day, self.ends_on or period.last_day)
        return max(last.toordinal() - first.toordinal() + 1, 0)

    def tax_rate_on(self, day: date) -> Decimal:
        """The rate in force on ``day``; an invoice uses its period's last day (end of supply)."""
        dated = [t for t in self.tax_rates if t.effective_from <= day]
        return max(dated, key=lambda t: t.effective_from).rate if dated else self.tax_rate


@dataclass(frozen=True)
class PriceBook:
    currency: str
    minor_unit: int
    issuer: Issuer
    rates: tuple[Rate, ...]
    plans: Mapping[str, Plan]
    contracts: Mapping[str, Contract]
    gpu_models: frozenset[str]
    source: str = "<memory>"
    #: Tenants whose kind is not ``external`` (the default). Kept off :class:`Contract` on
    #: purpose: the contract is embedded in every invoice's pricing snapshot, and an external
    #: tenant's documents must stay byte for byte what they were.
    kinds: Mapping[str, TenantKind] = field(default_factory=dict)

    def kind_of(self, tenant: str) -> TenantKind:
        return self.kinds.get(tenant, "external")

    @property
    def internal_tenants(self) -> frozenset[str]:
        """Tenants shown back at cost instead of invoiced."""
        return frozenset(t for t, k in self.kinds.items() if k == "internal")

    def rates_for_period(self, period: Period) -> tuple[Rate, ...]:
        return rates_in(self.rates, period)


def rates_in(rates: tuple[Rate, ...], period: Period) -> tuple[Rate, ...]:
    """Rates in force at some instant of the period, in a stable order."""

    def superseded_before(rate: Rate, day: date) -> bool:
        return any(
            o.gpu_model == rate.gpu_model
            and o.billing_class == rate.billing_class
            and rate.effective_from < o.effective_from <= day
            for o in rates
        )

    keep = [
        r
        for r in rates
        if r.effective_from <= period.last_day
        and not superseded_before(r, period.first_day)
        and (r.effective_until is None or r.effective_until > period.first_day)
    ]
    return tuple(sorted(keep, key=lambda r: (r.gpu_model, r.billing_class, r.effective_from)))


def load_pricebook(path: Path | str) -> PriceBook:
    """Load and validate a TOML price book (every problem at once, each naming its entry)."""
    from billing.pricebook_parser import load

    return load(path)


def parse_pricebook(raw: Mapping[str, object], *, source: str = "<memory>") -> PriceBook:
    from billing.pricebook_parser import parse

    return parse(raw, source=source)
