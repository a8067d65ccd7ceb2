"""Sites of the asset register: where GPUs run, the facility's PUE and the price of energy.

``[site]`` is the default site: every node no named site claims. ``[sites."<name>"]`` tables
are other sites, each claiming the nodes its ``node_id`` glob matches (the first in file order
wins). A site has:

- ``pue``: facility energy / IT energy (>= 1), and optionally ``pue_by_month``, a table of UTC
  months (``"2026-07" = "1.45"``) whose PUE replaces ``pue`` in that month (summer cooling);
- ``energy_price_per_kwh``, and ``energy_bands`` by UTC hour of day (time-of-use prices).

Facility energy of a GPU-hour = its GPU energy x the PUE of its node's site in that hour's month;
its energy cost = facility energy x that site's price in that hour.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from kernel.problems import Problems

_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class EnergyBand:
    """Energy price for UTC hours ``start_hour <= h < end_hour``."""

    start_hour: int
    end_hour: int
    price_per_kwh: Decimal


@dataclass(frozen=True)
class Site:
    pue: Decimal
    energy_price_per_kwh: Decimal
    energy_bands: tuple[EnergyBand, ...] = ()
    name: str = "site"
    node_id: str | None = None  # glob of the nodes a named site claims; None: the default site
    pue_by_month: dict[str, Decimal] = field(default_factory=dict)  # "YYYY-MM" -> PUE

    def energy_price(self, hour_of_day: int) -> Decimal:
        for band in self.energy_bands:
            if band.start_hour <= hour_of_day < band.end_hour:
                return band.price_per_kwh
        return self.energy_price_per_kwh

    def pue_at(self, t: datetime) -> Decimal:
        """The PUE in force in ``t``'s UTC month."""
        return self.pue_by_month.get(f"{t.year:04d}-{t.month:02d}", self.pue)

    def serves(self, node_id: str) -> bool:
        return self.node_id is not None and fnmatch.fnmatchcase(node_id, self.node_id)


def parse_site(p: _Problems, where: str, raw: dict[str, Any], name: str = "site") -> Site:
    node = raw.get("node_id")
    known = {"pue", "energy_price_per_kwh", "energy_bands", "pue_by_month"}
    if where != "site":
        known.add("node_id")
        if not (isinstance(node, str) and node):
            p.add(where, f"needs node_id, a glob of the nodes at this site, got {node!r}")
    p.unknown(where, raw, known)
    return Site(
        pue=p.decimal(where, raw, "pue", minimum=Decimal(1)),
        energy_price_per_kwh=p.decimal(where, raw, "energy_price_per_kwh"),
        energy_bands=tuple(_bands(p, f"{where}.energy_bands", raw.get("energy_bands", []))),
        name=name,
        node_id=node if where != "site" and isinstance(node, str) else None,
        pue_by_month=_pue_by_month(p, f"{where}.pue_by_month", raw.get("pue_by_month", {})),
    )


def parse_sites(p: _Problems, raw: Any) -> tuple[Site, ...]:
    if not isinstance(raw, dict):
        p.add("sites", 'must be tables [sites."<name>"]')
        return ()
    out = []
    for name, table in raw.items():
        where = f'sites."{name}"'
        if not isinstance(table, dict):
            p.add(where, "must be a table")
            continue
        out.append(parse_site(p, where, table, name=name))
    return tuple(out)


def _pue_by_month(p: _Problems, where: str, raw: Any) -> dict[str, Decimal]:
    if not isinstance(raw, dict):
        p.add(where, 'must be a table of UTC months, e.g. { "2026-07" = "1.45" }')
        return {}
    out = {}
    for month, _ in raw.items():
        if not _MONTH.fullmatch(str(month)):
            p.add(where, f"{month!r} is not a month YYYY-MM")
            continue
        out[str(month)] = p.decimal(where, raw, month, minimum=Decimal(1))
    return out


def _bands(p: _Problems, where: str, raw: Any) -> list[EnergyBand]:
    if not isinstance(raw, list):
        p.add(where, "must be an array of tables")
        return []
    bands: list[EnergyBand] = []
    for i, b in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(b, dict):
            p.add(at, "must be a table")
            continue
        p.unknown(at, b, {"start_hour", "end_hour", "price_per_kwh"})
        s, e = b.get("start_hour"), b.get("end_hour")
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= 24):
            p.add(at, f"needs 0 <= start_hour < end_hour <= 24 (UTC hours), got {s!r}..{e!r}")
            continue
        bands.append(EnergyBand(s, e, p.decimal(at, b, "price_per_kwh")))
    ordered = sorted(bands, key=lambda band: band.start_hour)
    for x, y in zip(ordered, ordered[1:], strict=False):
        if y.start_hour < x.end_hour:
            p.add(
                where,
                f"hours {x.start_hour}-{x.end_hour} and {y.start_hour}-{y.end_hour} overlap",
            )
    return ordered


class _Problems(Problems):
    """The kernel's problem collector plus the register's decimal reader."""

    def decimal(
        self,
        where: str,
        table: dict[str, Any],
        key: str,
        *,
        default: Decimal | None = None,
        minimum: Decimal = Decimal(0),
    ) -> Decimal:
        """A non-negative Decimal. Strings are exact; TOML floats go through ``str`` (0.12 stays
        0.12, not its binary approximation)."""
        raw = table.get(key)
        if raw is None:
            if default is None:
                self.add(where, f"missing {key}")
                return Decimal(0)
            return default
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            self.add(where, f"{key} must be a number or a decimal string, got {raw!r}")
            return Decimal(0)
        try:
            value = Decimal(str(raw))
        except InvalidOperation:
            self.add(where, f"{key} is not a number: {raw!r}")
            return Decimal(0)
        if not value.is_finite() or value < minimum:
            self.add(where, f"{key} must be >= {minimum}, got {raw!r}")
            return Decimal(0) if minimum == 0 else minimum
        return value
