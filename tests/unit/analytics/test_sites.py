"""Sites: PUE by site and by month, energy prices per site; facility energy and energy cost
computed by hand (1 kWh = 3.6e9 mJ of GPU energy)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from analytics.assets import AssetRegisterError, parse_assets
from analytics.economics import compute
from analytics.ledger_facts import Facts, GpuHour, parse_period
from kernel.names import MJ_PER_KWH

MODEL = "NVIDIA H100 80GB HBM3"
JULY = parse_period("2026-07")


def register(**extra: Any) -> dict[str, Any]:
    return {
        "currency": "USD",
        "site": {"pue": "1.2", "energy_price_per_kwh": "0.10"},
        "models": {MODEL: {"on_demand_per_gpu_hour": "2.00", "spot_per_gpu_hour": "1.00"}},
        "assets": [
            {
                "name": "h100",
                "gpu_model": MODEL,
                "purchase_price": "0",
                "in_service": datetime(2024, 1, 1, tzinfo=UTC),
                "life_years": 5,
                "residual_value": "0",
            }
        ],
        **extra,
    }


NORTH = {
    "north": {
        "node_id": "north-*",
        "pue": "1.6",
        "energy_price_per_kwh": "0.20",
        "pue_by_month": {"2026-07": "1.8"},
    }
}


def hour(node: str, t: datetime) -> GpuHour:
    # one GPU-hour, idle, that used 1 kWh of GPU energy (energy_mj is in millijoules)
    return GpuHour(t, MODEL, node, f"GPU-{node}", 3_600_000, 0, 0, 3_600_000, 0.0, MJ_PER_KWH)


def test_a_node_belongs_to_the_first_named_site_that_claims_it_else_the_default() -> None:
    reg = parse_assets(register(sites=NORTH))
    assert reg.site_for("north-7").name == "north"
    assert reg.site_for("south-1") is reg.site
    north = reg.site_for("north-7")
    assert north.pue_at(datetime(2026, 7, 31, 23, tzinfo=UTC)) == Decimal("1.8")
    assert north.pue_at(datetime(2026, 8, 1, tzinfo=UTC)) == Decimal("1.6")
    assert reg.site.pue_at(datetime(2026, 7, 1, tzinfo=UTC)) == Decimal("1.2")


def test_facility_energy_and_its_cost_follow_the_site_and_month_of_each_gpu_hour() -> None:
    # given one GPU-hour (1 kWh) at the default site and one at north in July, one in August
    reg = parse_assets(register(sites=NORTH))
    july, august = datetime(2026, 7, 10, 12, tzinfo=UTC), datetime(2026, 8, 10, 12, tzinfo=UTC)
    facts = Facts(JULY, (hour("south-1", july), hour("north-1", july), hour("north-2", august)), ())
    report = compute(facts, reg, now=datetime(2026, 9, 1, tzinfo=UTC))
    nodes = {m.key: m for m in report.by_node}
    # then south: 1 x 1.2 = 1.2 kWh at 0.10 = 0.12; north in July: 1 x 1.8 at 0.20 = 0.36;
    # north in August: 1 x 1.6 at 0.20 = 0.32
    assert (nodes["south-1"].facility_kwh, nodes["south-1"].energy_cost) == (
        Decimal("1.2"),
        Decimal("0.12"),
    )
    assert (nodes["north-1"].facility_kwh, nodes["north-1"].energy_cost) == (
        Decimal("1.8"),
        Decimal("0.36"),
    )
    assert (nodes["north-2"].facility_kwh, nodes["north-2"].energy_cost) == (
        Decimal("1.6"),
        Decimal("0.32"),
    )
    # and the fleet's PUE is weighted by energy: 4.6 kWh of facility energy for 3 kWh of GPU
    assert report.fleet.facility_kwh == Decimal("4.6")
    assert report.fleet.energy_cost == Decimal("0.80")
    assert report.fleet.pue == Decimal("4.6") / 3


def test_one_site_without_sites_tables_is_unchanged() -> None:
    reg = parse_assets(register())
    facts = Facts(JULY, (hour("any", datetime(2026, 7, 1, tzinfo=UTC)),), ())
    fleet = compute(facts, reg, now=datetime(2026, 9, 1, tzinfo=UTC)).fleet
    assert (fleet.pue, fleet.facility_kwh, fleet.energy_cost) == (
        Decimal("1.2"),
        Decimal("1.2"),
        Decimal("0.12"),
    )


@pytest.mark.parametrize(
    ("sites", "site", "entry", "words"),
    [
        ({"north": {"pue": "1.5", "energy_price_per_kwh": "0.2"}}, {}, 'sites."north"', "node_id"),
        (
            {"north": {**NORTH["north"], "pue_by_month": {"2026-13": "1.5"}}},
            {},
            'sites."north".pue_by_month',
            "'2026-13' is not a month",
        ),
        (
            {"north": {**NORTH["north"], "pue_by_month": {"2026-07": "0.9"}}},
            {},
            'sites."north".pue_by_month',
            "must be >= 1",
        ),
        ({}, {"pue_by_month": {"July": "1.3"}}, "site.pue_by_month", "not a month"),
        ({}, {"cooling": "air"}, "site", "cooling"),
    ],
    ids=["no node_id", "bad month", "pue below 1", "default site's bad month", "unknown key"],
)
def test_a_bad_site_is_reported_naming_its_entry(
    sites: dict[str, Any], site: dict[str, Any], entry: str, words: str
) -> None:
    raw = register(sites=sites) if sites else register()
    raw["site"] = {**raw["site"], **site}
    with pytest.raises(AssetRegisterError) as exc:
        parse_assets(raw)
    assert any(p.startswith(entry) and words in p for p in exc.value.problems), exc.value.problems
