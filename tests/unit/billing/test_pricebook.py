"""Price book validation: every problem reported at once, each naming its entry."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from billing.errors import PriceBookError
from billing.pricebook import load_pricebook, parse_pricebook
from tests.unit.billing.builders import BASE, H100

DEMO = Path(__file__).resolve().parents[3] / "billing" / "pricebook.demo.toml"


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(PriceBookError) as err:
        parse_pricebook(raw, source="bad.toml")
    return err.value.problems


def _book(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def test_demo_pricebook_is_valid_and_matches_the_demo_fleet() -> None:
    book = load_pricebook(DEMO)
    assert book.currency == "USD" and book.minor_unit == 2
    assert set(book.contracts) == {"acme", "globex", "initech", "umbrella", "hooli", "research"}
    # the simulator's internal tenant (SimulatedFleet(internal="research") in the demo)
    assert book.internal_tenants == {"research"}
    # whole GPUs of the demo fleet, plus the MIG profile that shows a rate override
    assert {r.gpu_model for r in book.rates} == {
        H100,
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
    }
    assert book.contracts["umbrella"].commitments
    assert any(r.billing_class == "spot" for r in book.rates)


def test_unknown_gpu_model_is_named() -> None:
    raw = _book()
    raw["rates"][1]["gpu_model"] = "NVIDIA H1OO"
    (p,) = _problems(raw)
    assert p.startswith("rates[1] (gpu_model='NVIDIA H1OO', spot, from 2026-01-01): unknown GPU")


def test_extra_gpu_models_declare_new_hardware() -> None:
    raw = _book(extra_gpu_models=["NVIDIA X9000"])
    raw["rates"][1]["gpu_model"] = "NVIDIA X9000"
    assert "NVIDIA X9000" in parse_pricebook(raw).gpu_models


def test_negative_rate_is_named() -> None:
    raw = _book()
    raw["rates"][0]["price_per_gpu_hour"] = "-1.00"
    (p,) = _problems(raw)
    assert p == (
        "rates[0] (gpu_model='NVIDIA H100 80GB HBM3', on_demand, from 2026-01-01): "
        "price_per_gpu_hour = -1.00 must not be negative"
    )


def test_overlapping_price_periods_are_named() -> None:
    raw = _book()
    raw["rates"][0]["effective_until"] = "2026-12-01"
    raw["rates"].append(
        {
            "gpu_model": H100,
            "billing_class": "on_demand",
            "price_per_gpu_hour": "3.00",
            "effective_from": "2026-11-01",
        }
    )
    (p,) = _problems(raw)
    assert p.startswith(
        "rates[3] (gpu_model='NVIDIA H100 80GB HBM3', on_demand, from "
        "2026-11-01): overlaps rates[0] (2026-01-01 to 2026-12-01)"
    )


def test_same_start_twice_overlaps() -> None:
    raw = _book()
    raw["rates"].append(dict(raw["rates"][0], price_per_gpu_hour="9"))
    assert "overlaps rates[0]" in _problems(raw)[0]


def test_unknown_currency_is_named() -> None:
    assert _problems(_book(currency="USX")) == [
        "currency: 'USX' is not a known ISO 4217 currency code"
    ]


def test_every_problem_is_reported_at_once() -> None:
    raw = _book(currency="XXQ")
    raw["rates"][0]["gpu_model"] = "GTX 1080"
    raw["rates"][1]["price_per_gpu_hour"] = "-2"
    raw["tenants"]["t"].update(plan="missing", discount_pct=150, tax_rate="abc")
    raw["plans"]["bad"] = {
        "tiers": [
            {"up_to_gpu_hours": 5, "discount_pct": 0},
            {"up_to_gpu_hours": 2, "discount_pct": 5},
        ]
    }
    problems = _problems(raw)
    text = "\n".join(problems)
    for expected in [
        "currency: 'XXQ'",
        "rates[0] (gpu_model='GTX 1080'",
        "rates[1] (gpu_model='NVIDIA H100 80GB HBM3', spot",
        "tenants.t: plan 'missing'",
        "tenants.t: discount_pct = 150",
        "tenants.t: tax_rate = 'abc'",
        "plans.bad.tiers[1]: up_to_gpu_hours 2",
        "plans.bad: the last tier must omit",
    ]:
        assert expected in text, expected
    assert len(problems) == 8


def test_minor_unit_must_match_iso(tmp_path: Path) -> None:
    assert (
        "does not match JPY's ISO 4217 minor unit (0 digits)"
        in _problems(_book(currency="JPY", minor_unit=2))[0]
    )


def test_toml_floats_are_read_as_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        DEMO.read_text()
        .replace('price_per_gpu_hour = "3.20"', "price_per_gpu_hour = 3.1")
        .replace("tax_rate = 0.0825", "tax_rate = 0.1", 1)
    )
    book = load_pricebook(path)
    assert str(book.rates[0].price_per_gpu_hour) == "3.1"
    assert str(book.contracts["acme"].tax_rate) == "0.1"


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="file not found"):
        load_pricebook(tmp_path / "nope.toml")
    (tmp_path / "b.toml").write_text("currency = ")
    with pytest.raises(PriceBookError, match="not valid TOML"):
        load_pricebook(tmp_path / "b.toml")
