"""The asset register: every problem reported at once, naming its entry; matching rules."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from analytics.assets import DEMO_ASSETS, AssetRegisterError, load_assets, parse_assets


def test_demo_register_covers_the_demo_fleet() -> None:
    reg = load_assets(DEMO_ASSETS)
    for node, model in (
        ("sim-node-00", "NVIDIA H100 80GB HBM3"),
        ("sim-node-01", "NVIDIA A100-SXM4-80GB"),
        ("sim-node-03", "NVIDIA A100-SXM4-80GB"),
    ):
        asset = reg.asset_for("GPU-x", node, model)
        assert asset is not None and asset.gpu_model == model
        assert model in reg.models
    assert reg.site.energy_price(3) == Decimal("0.09")  # night band
    assert reg.site.energy_price(12) == Decimal("0.14")  # default
    assert reg.site.energy_price(18) == Decimal("0.22")  # evening peak


def test_every_problem_is_reported_at_once_with_its_entry() -> None:
    bad = {
        "currency": "dollars",
        "site": {
            "pue": "0.8",
            "energy_bands": [{"start_hour": 5, "end_hour": 3, "price_per_kwh": "0.1"}],
        },
        "models": {"M": {"on_demand_per_gpu_hour": "-1", "spot_per_gpu_hour": "x"}},
        "assets": [
            {
                "name": "a",
                "gpu_model": "Unknown",
                "purchase_price": "100",
                "residual_value": "200",
                "in_service": "2024-13-01",
                "life_years": 3,
                "colour": 1,
            },
            {"purchase_price": "1", "in_service": "2024-01-01", "life_years": 1},
        ],
    }
    with pytest.raises(AssetRegisterError) as err:
        parse_assets(bad, source="site.toml")
    text = str(err.value)
    for expected in (
        "currency: must be an ISO 4217 code",
        "site: pue must be >= 1",
        "site: missing energy_price_per_kwh",
        "site.energy_bands[0]: needs 0 <= start_hour < end_hour <= 24",
        'models."M": on_demand_per_gpu_hour must be >= 0',
        'models."M": spot_per_gpu_hour is not a number',
        "assets[0] (a): unknown keys ['colour']",
        "assets[0] (a): gpu_model 'Unknown' has no rates in [models]",
        "assets[0] (a): residual_value 200 exceeds purchase_price 100",
        "assets[0] (a): in_service must be a date",
        "assets[1]: missing name",
        "assets[1]: needs gpu_uuids, or gpu_model and/or node_id",
    ):
        assert expected in text, expected
    assert text.startswith("site.toml: ")


def test_explicit_uuids_win_over_patterns_and_first_pattern_wins() -> None:
    common = {"purchase_price": "10", "in_service": "2024-01-01", "life_years": 1}
    reg = parse_assets(
        {
            "site": {"pue": 1.2, "energy_price_per_kwh": 0.1},
            "models": {"M": {"on_demand_per_gpu_hour": 2, "spot_per_gpu_hour": 1}},
            "assets": [
                {"name": "rack-a", "node_id": "rack-a-*", "gpu_model": "M", **common},
                {"name": "any-m", "gpu_model": "M", **common},
                {"name": "special", "gpu_uuids": ["GPU-1"], **common},
            ],
        }
    )
    assert reg.asset_for("GPU-1", "rack-a-01", "M").name == "special"
    assert reg.asset_for("GPU-2", "rack-a-01", "M").name == "rack-a"
    assert reg.asset_for("GPU-2", "rack-b-01", "M").name == "any-m"
    assert reg.asset_for("GPU-2", "rack-b-01", "Other") is None
    assert reg.site.pue == Decimal("1.2")  # TOML floats keep their written value


def test_straight_line_depreciation_and_book_value() -> None:
    reg = parse_assets(
        {
            "site": {"pue": 1, "energy_price_per_kwh": 0},
            "models": {"M": {"on_demand_per_gpu_hour": 1, "spot_per_gpu_hour": 1}},
            "assets": [
                {
                    "name": "x",
                    "gpu_model": "M",
                    "purchase_price": "36500",
                    "residual_value": "500",
                    "in_service": "2024-01-01",
                    "life_years": 1,
                }
            ],
        }
    )
    a = reg.assets[0]
    # (36 500 - 500) / 365 days = 98.630... per day; book value never below the residual
    day = datetime(2024, 1, 2, tzinfo=UTC)
    assert a.depreciation(a.in_service, day).quantize(Decimal("0.0000001")) == Decimal("98.6301370")
    assert a.book_value(datetime(2030, 1, 1, tzinfo=UTC)) == Decimal("500")
    assert a.book_value(datetime(2023, 1, 1, tzinfo=UTC)) == Decimal(0)  # not in service yet


def test_unreadable_file_is_a_register_error(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("currency = ")
    with pytest.raises(AssetRegisterError, match="a.toml"):
        load_assets(path)
