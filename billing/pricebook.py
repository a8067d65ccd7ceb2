"""The price book: rates, billing classes, plans and tenant contracts, loaded from TOML.

Loading validates everything and reports every problem at once, each naming its entry
(``rates[2] (gpu_model='...', on_demand, from 2026-11-01): overlaps rates[0] ...``), so a
finance user fixes the file in one pass. Numbers are parsed as ``Decimal`` (TOML floats via
``parse_float=Decimal``; quoted strings also accepted), never as binary floats.

A job's billing class comes from allocation metadata: the ledger's ``billing_class`` column,
set by the node agent from the scheduler's allocation; ``''`` means "the tenant contract's
``default_class``".
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, cast

from billing.errors import PriceBookError
from billing.money import ISO_4217_MINOR_UNITS
from billing.period import Period

BillingClass = Literal["on_demand", "reserved", "spot"]
BILLING_CLASSES: tuple[BillingClass, ...] = ("on_demand", "reserved", "spot")
IDLE_TENANT = "__idle__"

#: GPU model names exactly as NVML's nvmlDeviceGetName reports them. A rate for any other name
#: is a typo until proven otherwise; a price book may declare new hardware in ``extra_gpu_models``.
KNOWN_GPU_MODELS: frozenset[str] = frozenset({
    "NVIDIA B200", "NVIDIA B100", "NVIDIA GB200", "NVIDIA GH200 480GB", "NVIDIA H200",
    "NVIDIA H200 NVL", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
    "NVIDIA H800", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB",
    "NVIDIA A100 80GB PCIe", "NVIDIA A800-SXM4-80GB", "NVIDIA A40", "NVIDIA A30", "NVIDIA A10",
    "NVIDIA A10G", "NVIDIA L40S", "NVIDIA L40", "NVIDIA L4", "NVIDIA RTX 6000 Ada Generation",
    "NVIDIA RTX A6000", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-32GB",
    "Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB", "Tesla T4", "Tesla P100-PCIE-16GB",
})


@dataclass(frozen=True)
class Rate:
    """List price of one GPU-hour of a model in a class, metered per second, from a date."""

    gpu_model: str
    billing_class: BillingClass
    price_per_gpu_hour: Decimal
    effective_from: date
    effective_until: date | None = None  # exclusive; None: until the next rate for the key


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
    """Prepaid or promotional money applied before tax, oldest expiry first."""

    id: str
    kind: Literal["prepaid", "promotional"]
    amount: Decimal
    valid_from: date
    valid_until: date | None = None  # inclusive last day; None: never expires

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
class Contract:
    tenant: str
    customer: Party
    plan: Plan
    default_class: BillingClass = "on_demand"
    discount_pct: Decimal = Decimal(0)
    commitments: tuple[Commitment, ...] = ()
    energy: Energy | None = None
    credits: tuple[Credit, ...] = ()
    tax_rate: Decimal = Decimal(0)
    tax_label: str = "Tax"


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

    def rates_for_period(self, period: Period) -> tuple[Rate, ...]:
        """Rates in force at some instant of the period, in a stable order."""
        keep = [
            r for r in self.rates
            if r.effective_from <= period.last_day
            and not self._superseded_before(r, period.first_day)
            and (r.effective_until is None or r.effective_until > period.first_day)
        ]
        return tuple(sorted(keep, key=lambda r: (r.gpu_model, r.billing_class, r.effective_from)))

    def _superseded_before(self, rate: Rate, day: date) -> bool:
        return any(
            o.gpu_model == rate.gpu_model and o.billing_class == rate.billing_class
            and rate.effective_from < o.effective_from <= day
            for o in self.rates
        )


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_pricebook(path: Path | str) -> PriceBook:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError as exc:
        raise PriceBookError(str(path), ["file not found"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(str(path), [f"not valid TOML: {exc}"]) from exc
    return parse_pricebook(raw, source=str(path))


def parse_pricebook(raw: Mapping[str, Any], *, source: str = "<memory>") -> PriceBook:
    """Build a :class:`PriceBook` from parsed TOML, or raise listing every problem."""
    return _Parser(source).parse(raw)


@dataclass
class _Parser:
    source: str
    problems: list[str] = field(default_factory=list)

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def dec(self, where: str, table: Mapping[str, Any], key: str, *, required: bool = True,
            default: Decimal | None = None, min_: Decimal | None = Decimal(0),
            max_: Decimal | None = None, positive: bool = False) -> Decimal:
        if key not in table:
            if required:
                self.bad(where, f"{key} is required")
            return default if default is not None else Decimal(0)
        value = table[key]
        try:
            if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
                raise InvalidOperation
            d = Decimal(value)
            if not d.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            self.bad(where, f"{key} = {value!r} is not a decimal number")
            return Decimal(0)
        if positive and d <= 0:
            self.bad(where, f"{key} = {d} must be positive")
        elif min_ is not None and d < min_:
            self.bad(where, f"{key} = {d} must not be negative" if min_ == 0
                     else f"{key} = {d} must be at least {min_}")
        if max_ is not None and d > max_:
            self.bad(where, f"{key} = {d} must be at most {max_}")
        return d

    def integer(self, where: str, table: Mapping[str, Any], key: str, default: int,
                min_: int = 0) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < min_:
            self.bad(where, f"{key} = {value!r} must be an integer >= {min_}")
            return default
        return value

    def day(self, where: str, table: Mapping[str, Any], key: str, *,
            required: bool = True) -> date | None:
        value = table.get(key)
        if value is None:
            if required:
                self.bad(where, f"{key} is required (a date, e.g. 2026-01-01)")
            return None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # reported below as "must be a date"
                value = date.fromisoformat(value)
        if not isinstance(value, date) or hasattr(value, "hour"):
            self.bad(where, f"{key} = {value!r} must be a date like 2026-01-01 (UTC)")
            return None
        return value

    def text(self, where: str, table: Mapping[str, Any], key: str, default: str = "",
             required: bool = False) -> str:
        value = table.get(key, default)
        if required and key not in table:
            self.bad(where, f"{key} is required")
        if not isinstance(value, str):
            self.bad(where, f"{key} = {value!r} must be a string")
            return default
        return value

    def klass(self, where: str, value: Any) -> BillingClass:
        if value not in BILLING_CLASSES:
            self.bad(where, f"billing class {value!r} is not one of {', '.join(BILLING_CLASSES)}")
            return "on_demand"
        return cast(BillingClass, value)

    # -- sections ------------------------------------------------------------------------

    def parse(self, raw: Mapping[str, Any]) -> PriceBook:
        currency = raw.get("currency")
        minor = ISO_4217_MINOR_UNITS.get(currency) if isinstance(currency, str) else None
        if minor is None:
            self.bad("currency", f"{currency!r} is not a known ISO 4217 currency code")
            minor = 2
        if "minor_unit" in raw and raw["minor_unit"] != minor:
            self.bad("minor_unit", f"{raw['minor_unit']!r} does not match {currency}'s ISO 4217 "
                     f"minor unit ({minor} digits)")
        extra = raw.get("extra_gpu_models", [])
        if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
            self.bad("extra_gpu_models", "must be a list of NVML GPU model names")
            extra = []
        models = KNOWN_GPU_MODELS | frozenset(extra)
        issuer = self.issuer(raw.get("issuer", {}))
        rates = self.rates(raw.get("rates", []), models)
        plans = self.plans(raw.get("plans", {}))
        contracts = self.contracts(raw.get("tenants", {}), plans, models, rates)
        unknown = sorted(set(raw) - {"schema_version", "currency", "minor_unit", "issuer", "rates",
                                     "plans", "tenants", "extra_gpu_models"})
        for key in unknown:
            self.bad(key, "unknown top-level key")
        if self.problems:
            raise PriceBookError(self.source, self.problems)
        return PriceBook(cast(str, currency), minor, issuer, rates, plans, contracts, models,
                         self.source)

    def issuer(self, t: Any) -> Issuer:
        if not isinstance(t, dict) or "name" not in t:
            self.bad("issuer", "an [issuer] table with at least a name is required")
            return Issuer(name="?")
        prefix = self.text("issuer", t, "number_prefix", "GM")
        if not prefix.isalnum():
            self.bad("issuer", f"number_prefix {prefix!r} must be letters and digits")
        return Issuer(
            name=self.text("issuer", t, "name"), address=tuple(t.get("address", ())),
            tax_id=self.text("issuer", t, "tax_id"), email=self.text("issuer", t, "email"),
            number_prefix=prefix,
            payment_terms_days=self.integer("issuer", t, "payment_terms_days", 30),
        )

    def rates(self, entries: Any, models: frozenset[str]) -> tuple[Rate, ...]:
        if not isinstance(entries, list) or not entries:
            self.bad("rates", "at least one [[rates]] entry is required")
            return ()
        parsed: list[tuple[int, Rate]] = []
        for i, t in enumerate(entries):
            model = t.get("gpu_model", "")
            where = f"rates[{i}] (gpu_model={model!r}, {t.get('billing_class', '?')}, " \
                    f"from {t.get('effective_from', '?')})"
            if model not in models:
                self.bad(where, f"unknown GPU model {model!r}: use the NVML name (e.g. "
                         "'NVIDIA H100 80GB HBM3') or declare it in extra_gpu_models")
            klass = self.klass(where, t.get("billing_class"))
            price = self.dec(where, t, "price_per_gpu_hour")
            start = self.day(where, t, "effective_from")
            until = self.day(where, t, "effective_until", required=False)
            if start and until and until <= start:
                self.bad(where, f"effective_until {until} is not after effective_from {start}")
            if start:
                parsed.append((i, Rate(model, klass, price, start, until)))
        # Overlap: for one (model, class), two entries starting the same day, or an entry whose
        # explicit end reaches past the next entry's start. Usage at an instant must have one price.
        by_key: dict[tuple[str, str], list[tuple[int, Rate]]] = {}
        for i, r in parsed:
            by_key.setdefault((r.gpu_model, r.billing_class), []).append((i, r))
        for group in by_key.values():
            group.sort(key=lambda ir: (ir[1].effective_from, ir[0]))
            for (i0, r0), (i1, r1) in zip(group, group[1:], strict=False):
                if r0.effective_from == r1.effective_from or (
                    r0.effective_until is not None and r0.effective_until > r1.effective_from
                ):
                    end = r0.effective_until or "open end"
                    self.bad(f"rates[{i1}] (gpu_model={r1.gpu_model!r}, {r1.billing_class}, "
                             f"from {r1.effective_from})",
                             f"overlaps rates[{i0}] ({r0.effective_from} to {end}) for the same "
                             "GPU model and billing class")
        return tuple(r for _, r in parsed)

    def plans(self, table: Any) -> dict[str, Plan]:
        if not isinstance(table, dict):
            self.bad("plans", "must be a table of named plans")
            return {}
        plans = {}
        for name, t in table.items():
            where = f"plans.{name}"
            minimum = self.integer(where, t, "minimum_seconds", 0)
            inc = self.integer(where, t, "increment_seconds", 1, min_=1)
            tiers = []
            previous = Decimal(0)
            raw_tiers = t.get("tiers", [])
            for j, tt in enumerate(raw_tiers):
                tw = f"{where}.tiers[{j}]"
                pct = self.dec(tw, tt, "discount_pct", max_=Decimal(100))
                up_to = None
                if "up_to_gpu_hours" in tt:
                    up_to = self.dec(tw, tt, "up_to_gpu_hours", positive=True)
                    if up_to <= previous:
                        self.bad(tw, f"up_to_gpu_hours {up_to} must exceed the previous tier's "
                                 f"bound {previous}")
                    if (up_to * 3600) % 1:
                        self.bad(tw, f"up_to_gpu_hours {up_to} must be a whole number of seconds")
                    previous = up_to
                elif j != len(raw_tiers) - 1:
                    self.bad(tw, "only the last tier may omit up_to_gpu_hours")
                tiers.append(Tier(up_to, pct))
            if tiers and tiers[-1].up_to_gpu_hours is not None:
                self.bad(where, "the last tier must omit up_to_gpu_hours (unbounded)")
            plans[name] = Plan(name, minimum, inc, tuple(tiers))
        return plans

    def contracts(self, table: Any, plans: Mapping[str, Plan], models: frozenset[str],
                  rates: tuple[Rate, ...]) -> dict[str, Contract]:
        if not isinstance(table, dict) or not table:
            self.bad("tenants", "at least one [tenants.<name>] contract is required")
            return {}
        contracts = {}
        for tenant, t in table.items():
            where = f"tenants.{tenant}"
            if tenant == IDLE_TENANT:
                self.bad(where, "idle capacity is never invoiced; remove this contract")
            plan_name = t.get("plan")
            plan = plans.get(plan_name) if isinstance(plan_name, str) else None
            if plan is None:
                self.bad(where, f"plan {plan_name!r} is not defined in [plans]")
                plan = Plan("?")
            commitments = []
            for j, c in enumerate(t.get("commitments", [])):
                cw = f"{where}.commitments[{j}] (gpu_model={c.get('gpu_model')!r})"
                if c.get("gpu_model") not in models:
                    self.bad(cw, f"unknown GPU model {c.get('gpu_model')!r}")
                commitments.append(Commitment(
                    c.get("gpu_model", ""), self.dec(cw, c, "gpu_hours_per_month", positive=True),
                    self.dec(cw, c, "rate"), self.dec(cw, c, "overage_rate")))
            energy = None
            if "energy" in t:
                ew = f"{where}.energy"
                energy = Energy(self.dec(ew, t["energy"], "pue", min_=Decimal(1)),
                                self.dec(ew, t["energy"], "price_per_kwh"))
            credits = []
            for j, c in enumerate(t.get("credits", [])):
                cw = f"{where}.credits[{j}] (id={c.get('id')!r})"
                kind = c.get("kind", "promotional")
                if kind not in ("prepaid", "promotional"):
                    self.bad(cw, f"kind {kind!r} must be prepaid or promotional")
                start = self.day(cw, c, "valid_from") or date.min
                credits.append(Credit(self.text(cw, c, "id", required=True), kind,
                                      self.dec(cw, c, "amount", positive=True), start,
                                      self.day(cw, c, "valid_until", required=False)))
            if len({c.id for c in credits}) != len(credits):
                self.bad(where, "credit ids must be unique")
            contracts[tenant] = Contract(
                tenant=tenant,
                customer=Party(self.text(where, t, "name", tenant), tuple(t.get("address", ())),
                               self.text(where, t, "tax_id"), self.text(where, t, "email")),
                plan=plan,
                default_class=self.klass(where, t.get("default_class", "on_demand")),
                discount_pct=self.dec(where, t, "discount_pct", required=False,
                                      max_=Decimal(100)),
                commitments=tuple(commitments), energy=energy, credits=tuple(credits),
                tax_rate=self.dec(where, t, "tax_rate", required=False, max_=Decimal(1)),
                tax_label=self.text(where, t, "tax_label", "Tax"),
            )
        return contracts
