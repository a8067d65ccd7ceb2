"""Loading and validating a TOML price book: every problem at once, each naming its entry.

Precision is validated too, so rounding never hides in a price: money amounts (credits, the
minimum spend) have at most the currency's minor-unit digits, prices at most
``PRICE_DECIMALS`` (6), percentages at most ``PCT_DECIMALS`` (4), tax rates at most 6.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from billing.errors import PriceBookError
from billing.money import ISO_4217_MINOR_UNITS
from billing.pricebook import (
    BILLING_CLASSES,
    KNOWN_GPU_MODELS,
    PCT_DECIMALS,
    PREEMPTED_MINIMUM,
    PRICE_DECIMALS,
    BillingClass,
    Issuer,
    Plan,
    PriceBook,
    Rate,
    Tier,
    decimals,
    mig_parent,
)
from billing.pricebook_contract import parse_contracts, parse_kinds
from kernel.problems import Problems

#: The keys of a ``[plans.NAME]`` table; any other is refused (a misspelt option would
#: otherwise be ignored and the plan billed by its default).
PLAN_KEYS = frozenset({"minimum_seconds", "increment_seconds", "tiers", "preempted_minimum"})


def load(path: Path | str) -> PriceBook:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError as exc:
        raise PriceBookError(str(path), ["file not found"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(str(path), [f"not valid TOML: {exc}"]) from exc
    return parse(raw, source=str(path))


def parse(raw: Mapping[str, Any], *, source: str = "<memory>") -> PriceBook:
    """Build a :class:`PriceBook` from parsed TOML, or raise listing every problem."""
    return Parser(source).parse(raw)


@dataclass
class Parser:
    source: str
    problems: Problems = field(default_factory=Problems)
    minor_unit: int = 2
    models: frozenset[str] = KNOWN_GPU_MODELS

    def bad(self, where: str, what: str) -> None:
        self.problems.add(where, what)

    def dec(
        self,
        where: str,
        table: Mapping[str, Any],
        key: str,
        *,
        required: bool = True,
        default: Decimal | None = None,
        min_: Decimal | None = Decimal(0),
        max_: Decimal | None = None,
        positive: bool = False,
        places: int | None = None,
        what: str = "",
    ) -> Decimal:
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
            self.bad(
                where,
                f"{key} = {d} must not be negative"
                if min_ == 0
                else f"{key} = {d} must be at least {min_}",
            )
        if max_ is not None and d > max_:
            self.bad(where, f"{key} = {d} must be at most {max_}")
        if places is not None and decimals(d) > places:
            self.bad(
                where,
                f"{key} = {d} has {decimals(d)} decimals; at most {places} "
                f"allowed{what} (the price shown on an invoice is the price used)",
            )
        return d

    def money(self, where: str, table: Mapping[str, Any], key: str, **kw: Any) -> Decimal:
        return self.dec(
            where, table, key, places=self.minor_unit, what=" (the currency's minor unit)", **kw
        )

    def price(self, where: str, table: Mapping[str, Any], key: str, **kw: Any) -> Decimal:
        return self.dec(where, table, key, places=PRICE_DECIMALS, **kw)

    def integer(
        self, where: str, table: Mapping[str, Any], key: str, default: int, min_: int = 0
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < min_:
            self.bad(where, f"{key} = {value!r} must be an integer >= {min_}")
            return default
        return value

    def day(
        self, where: str, table: Mapping[str, Any], key: str, *, required: bool = True
    ) -> date | None:
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

    def text(
        self,
        where: str,
        table: Mapping[str, Any],
        key: str,
        default: str = "",
        required: bool = False,
    ) -> str:
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

    def known_model(self, model: Any) -> bool:
        """An NVML name in the book's models, or a MIG profile of one ("<parent> MIG 3g.40gb")."""
        if model in self.models:
            return True
        mig = mig_parent(model) if isinstance(model, str) else None
        return mig is not None and mig[0] in self.models

    # -- sections ------------------------------------------------------------------------

    def parse(self, raw: Mapping[str, Any]) -> PriceBook:
        currency = raw.get("currency")
        minor = ISO_4217_MINOR_UNITS.get(currency) if isinstance(currency, str) else None
        if minor is None:
            self.bad("currency", f"{currency!r} is not a known ISO 4217 currency code")
            minor = 2
        self.minor_unit = minor
        if "minor_unit" in raw and raw["minor_unit"] != minor:
            self.bad(
                "minor_unit",
                f"{raw['minor_unit']!r} does not match {currency}'s ISO 4217 "
                f"minor unit ({minor} digits)",
            )
        extra = raw.get("extra_gpu_models", [])
        if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
            self.bad("extra_gpu_models", "must be a list of NVML GPU model names")
            extra = []
        self.models = KNOWN_GPU_MODELS | frozenset(extra)
        issuer = self.issuer(raw.get("issuer", {}))
        rates = self.rates(raw.get("rates", []))
        plans = self.plans(raw.get("plans", {}))
        contracts = parse_contracts(self, raw.get("tenants", {}), plans)
        kinds = parse_kinds(self, raw.get("tenants", {}))
        unknown = sorted(
            set(raw)
            - {
                "schema_version",
                "currency",
                "minor_unit",
                "issuer",
                "rates",
                "plans",
                "tenants",
                "extra_gpu_models",
            }
        )
        for key in unknown:
            self.bad(key, "unknown top-level key")
        if self.problems:
            raise PriceBookError(self.source, self.problems.items)
        return PriceBook(
            cast(str, currency),
            minor,
            issuer,
            rates,
            plans,
            contracts,
            self.models,
            self.source,
            kinds,
        )

    def issuer(self, t: Any) -> Issuer:
        if not isinstance(t, dict) or "name" not in t:
            self.bad("issuer", "an [issuer] table with at least a name is required")
            return Issuer(name="?")
        prefix = self.text("issuer", t, "number_prefix", "GM")
        if not prefix.isalnum():
            self.bad("issuer", f"number_prefix {prefix!r} must be letters and digits")
        return Issuer(
            name=self.text("issuer", t, "name"),
            address=tuple(t.get("address", ())),
            tax_id=self.text("issuer", t, "tax_id"),
            email=self.text("issuer", t, "email"),
            number_prefix=prefix,
            payment_terms_days=self.integer("issuer", t, "payment_terms_days", 30),
        )

    def rates(
        self, entries: Any, *, prefix: str = "rates", tenant: str = "", required: bool = True
    ) -> tuple[Rate, ...]:
        if not isinstance(entries, list) or (required and not entries):
            self.bad(
                prefix,
                f"at least one [[{prefix}]] entry is required"
                if required
                else "must be a list of rate entries",
            )
            return ()
        parsed: list[tuple[int, Rate]] = []
        for i, t in enumerate(entries):
            model = t.get("gpu_model", "")
            where = (
                f"{prefix}[{i}] (gpu_model={model!r}, {t.get('billing_class', '?')}, "
                f"from {t.get('effective_from', '?')})"
            )
            if not self.known_model(model):
                self.bad(
                    where,
                    f"unknown GPU model {model!r}: use the NVML name (e.g. "
                    "'NVIDIA H100 80GB HBM3') or declare it in extra_gpu_models",
                )
            klass = self.klass(where, t.get("billing_class"))
            price = self.price(where, t, "price_per_gpu_hour")
            start = self.day(where, t, "effective_from")
            until = self.day(where, t, "effective_until", required=False)
            if start and until and until <= start:
                self.bad(where, f"effective_until {until} is not after effective_from {start}")
            if start:
                parsed.append((i, Rate(model, klass, price, start, until, tenant)))
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
                    self.bad(
                        f"{prefix}[{i1}] (gpu_model={r1.gpu_model!r}, {r1.billing_class}, "
                        f"from {r1.effective_from})",
                        f"overlaps {prefix}[{i0}] ({r0.effective_from} to {end}) for the "
                        "same GPU model and billing class",
                    )
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
                pct = self.dec(tw, tt, "discount_pct", max_=Decimal(100), places=PCT_DECIMALS)
                up_to = None
                if "up_to_gpu_hours" in tt:
                    up_to = self.dec(tw, tt, "up_to_gpu_hours", positive=True)
                    if up_to <= previous:
                        self.bad(
                            tw,
                            f"up_to_gpu_hours {up_to} must exceed the previous tier's "
                            f"bound {previous}",
                        )
                    if (up_to * 3600) % 1:
                        self.bad(tw, f"up_to_gpu_hours {up_to} must be a whole number of seconds")
                    previous = up_to
                elif j != len(raw_tiers) - 1:
                    self.bad(tw, "only the last tier may omit up_to_gpu_hours")
                tiers.append(Tier(up_to, pct))
            if tiers and tiers[-1].up_to_gpu_hours is not None:
                self.bad(where, "the last tier must omit up_to_gpu_hours (unbounded)")
            preempted = t.get("preempted_minimum", "waived")
            if preempted not in PREEMPTED_MINIMUM:
                self.bad(
                    where,
                    f"preempted_minimum = {preempted!r} must be one of "
                    + ", ".join(repr(v) for v in PREEMPTED_MINIMUM),
                )
                preempted = "waived"
            for key in sorted(set(t) - PLAN_KEYS):
                self.bad(where, f"unknown key {key!r} (a plan has {', '.join(sorted(PLAN_KEYS))})")
            plans[name] = Plan(name, minimum, inc, tuple(tiers), preempted)
        return plans
