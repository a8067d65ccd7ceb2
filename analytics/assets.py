"""The asset register: what each GPU cost, since when it serves, and what running it costs.

Read from TOML (``analytics/assets.demo.toml`` is the demo fleet's). Every problem in the file is
reported at once, each naming its entry, so one edit fixes them all. The register is plain data;
:mod:`analytics.economics` turns it and the ledger into economics.

Depreciation is straight-line from ``in_service`` over ``life_years`` (a year = 365 days) down
to ``residual_value``, accrued per second of calendar time: an owned GPU loses value whether or
not it is used, which is exactly why idle GPUs matter.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from analytics.errors import AnalyticsError
from analytics.sites import EnergyBand, Site, _Problems, parse_site, parse_sites

__all__ = ["AssetClass", "AssetRegister", "EnergyBand", "ModelRates", "Site", "load_assets"]

SECONDS_PER_YEAR = 365 * 86_400
DEMO_ASSETS = Path(__file__).with_name("assets.demo.toml")


class AssetRegisterError(AnalyticsError, ValueError):
    """The register is invalid; ``problems`` lists every problem, each naming its entry."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(
            f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = problems


@dataclass(frozen=True)
class ModelRates:
    """Per-GPU-hour list prices for a GPU model: the fallback rating and the idle valuation."""

    on_demand_per_gpu_hour: Decimal
    spot_per_gpu_hour: Decimal


@dataclass(frozen=True)
class AssetClass:
    """A group of identical GPUs: matched by explicit uuids, or by node pattern and model."""

    name: str
    purchase_price: Decimal
    in_service: datetime
    life_years: Decimal
    residual_value: Decimal
    other_opex_per_gpu_hour: Decimal
    gpu_model: str | None = None
    node_id: str | None = None  # fnmatch pattern, e.g. "sim-node-0[01]"
    gpu_uuids: frozenset[str] = frozenset()

    def matches(self, gpu_uuid: str, node_id: str, gpu_model: str) -> bool:
        if self.gpu_uuids:
            return gpu_uuid in self.gpu_uuids
        if self.gpu_model is not None and self.gpu_model != gpu_model:
            return False
        return self.node_id is None or fnmatch.fnmatchcase(node_id, self.node_id)

    @property
    def end_of_life(self) -> datetime:
        return self.in_service + timedelta(seconds=int(self.life_years * SECONDS_PER_YEAR))

    @property
    def depreciation_per_second(self) -> Decimal:
        return (self.purchase_price - self.residual_value) / (self.life_years * SECONDS_PER_YEAR)

    def depreciation(self, start: datetime, end: datetime) -> Decimal:
        """Straight-line depreciation of one GPU accrued in ``[start, end)``."""
        lo, hi = max(start, self.in_service), min(end, self.end_of_life)
        if hi <= lo:
            return Decimal(0)
        # Multiply before dividing: a whole life then depreciates to exactly the residual value.
        life_s = int((self.end_of_life - self.in_service).total_seconds())
        return (self.purchase_price - self.residual_value) * int((hi - lo).total_seconds()) / life_s

    def book_value(self, at: datetime) -> Decimal:
        """Value of one GPU at ``at``: price minus accrued depreciation, never below residual.

        Before ``in_service`` the GPU is not an asset in service yet: book value 0."""
        if at < self.in_service:
            return Decimal(0)
        return self.purchase_price - self.depreciation(self.in_service, at)


@dataclass(frozen=True)
class AssetRegister:
    currency: str
    site: Site  # the default site: every node no named site claims
    models: dict[str, ModelRates]
    assets: tuple[AssetClass, ...]
    sites: tuple[Site, ...] = ()  # named sites, in file order

    def site_for(self, node_id: str) -> Site:
        """The first named site whose ``node_id`` pattern matches the node, else ``site``."""
        for s in self.sites:
            if s.serves(node_id):
                return s
        return self.site

    def asset_for(self, gpu_uuid: str, node_id: str, gpu_model: str) -> AssetClass | None:
        """Explicit uuid lists win over patterns; otherwise the first matching entry."""
        for a in self.assets:
            if a.gpu_uuids and gpu_uuid in a.gpu_uuids:
                return a
        for a in self.assets:
            if not a.gpu_uuids and a.matches(gpu_uuid, node_id, gpu_model):
                return a
        return None


def load_assets(path: Path | None = None) -> AssetRegister:
    """Read and validate a register; ``None`` reads the demo fleet's."""
    path = path or DEMO_ASSETS
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AssetRegisterError(str(path), [str(exc)]) from exc
    return parse_assets(data, source=str(path))


def parse_assets(data: dict[str, Any], source: str = "<assets>") -> AssetRegister:
    p = _Problems()
    currency = data.get("currency", "USD")
    if not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
        p.add("currency", f"must be an ISO 4217 code like 'USD', got {currency!r}")

    raw_site = data.get("site")
    if not isinstance(raw_site, dict):
        p.add("site", "missing [site] table (pue, energy_price_per_kwh)")
        raw_site = {}
    site = parse_site(p, "site", raw_site)
    sites = parse_sites(p, data.get("sites", {}))

    models: dict[str, ModelRates] = {}
    raw_models = data.get("models", {})
    if not isinstance(raw_models, dict) or not raw_models:
        p.add("models", 'missing [models."<gpu model>"] tables with on_demand/spot rates')
        raw_models = {}
    for name, m in raw_models.items():
        where = f'models."{name}"'
        if not isinstance(m, dict):
            p.add(where, "must be a table")
            continue
        p.unknown(where, m, {"on_demand_per_gpu_hour", "spot_per_gpu_hour"})
        models[name] = ModelRates(
            on_demand_per_gpu_hour=p.decimal(where, m, "on_demand_per_gpu_hour"),
            spot_per_gpu_hour=p.decimal(where, m, "spot_per_gpu_hour"),
        )

    assets: list[AssetClass] = []
    raw_assets = data.get("assets", [])
    if not isinstance(raw_assets, list) or not raw_assets:
        p.add("assets", "missing [[assets]] entries")
        raw_assets = []
    names: set[str] = set()
    for i, a in enumerate(raw_assets):
        if not isinstance(a, dict):
            p.add(f"assets[{i}]", "must be a table")
            continue
        asset = _asset(p, i, a, models)
        if asset is not None:
            if asset.name in names:
                p.add(f"assets[{i}] ({asset.name})", "duplicate name")
            names.add(asset.name)
            assets.append(asset)
    unknown = set(data) - {"currency", "site", "sites", "models", "assets"}
    if unknown:
        p.add("<top level>", f"unknown keys {sorted(unknown)}")
    if p.items:
        raise AssetRegisterError(source, p.items)
    return AssetRegister(
        currency=str(currency), site=site, models=models, assets=tuple(assets), sites=sites
    )


_ASSET_KEYS = {
    "name",
    "gpu_model",
    "node_id",
    "gpu_uuids",
    "purchase_price",
    "in_service",
    "life_years",
    "residual_value",
    "other_opex_per_gpu_hour",
}


def _asset(
    p: _Problems, i: int, a: dict[str, Any], models: dict[str, ModelRates]
) -> AssetClass | None:
    name = a.get("name")
    where = f"assets[{i}] ({name})" if isinstance(name, str) else f"assets[{i}]"
    if not isinstance(name, str) or not name:
        p.add(where, "missing name")
    p.unknown(where, a, _ASSET_KEYS)
    uuids = a.get("gpu_uuids", [])
    if not isinstance(uuids, list) or not all(isinstance(u, str) and u for u in uuids):
        p.add(where, "gpu_uuids must be a list of GPU uuid strings")
        uuids = []
    model, node = a.get("gpu_model"), a.get("node_id")
    if not uuids and model is None and node is None:
        p.add(where, "needs gpu_uuids, or gpu_model and/or node_id to match GPUs")
    if model is not None and not isinstance(model, str):
        p.add(where, "gpu_model must be a string")
    elif model is not None and models and model not in models:
        p.add(where, f"gpu_model {model!r} has no rates in [models]")
    if node is not None and not isinstance(node, str):
        p.add(where, "node_id must be a glob pattern string")
    price = p.decimal(where, a, "purchase_price")
    residual = p.decimal(where, a, "residual_value", default=Decimal(0))
    life = p.decimal(where, a, "life_years")
    if life == 0 and "life_years" in a:
        p.add(where, "life_years must be > 0")
    if residual > price:
        p.add(where, f"residual_value {residual} exceeds purchase_price {price}")
    in_service = a.get("in_service")
    if isinstance(in_service, str):
        with contextlib.suppress(ValueError):
            in_service = date.fromisoformat(in_service)
    if isinstance(in_service, datetime):
        start = in_service if in_service.tzinfo else in_service.replace(tzinfo=UTC)
    elif isinstance(in_service, date):
        start = datetime(in_service.year, in_service.month, in_service.day, tzinfo=UTC)
    else:
        p.add(where, f"in_service must be a date like 2024-03-01, got {in_service!r}")
        return None
    if not isinstance(name, str) or life == 0:
        return None
    return AssetClass(
        name=name,
        purchase_price=price,
        in_service=start.astimezone(UTC),
        life_years=life,
        residual_value=residual,
        other_opex_per_gpu_hour=p.decimal(where, a, "other_opex_per_gpu_hour", default=Decimal(0)),
        gpu_model=model if isinstance(model, str) else None,
        node_id=node if isinstance(node, str) else None,
        gpu_uuids=frozenset(uuids),
    )
