"""``[tenants.<id>] kind``: external (default, invoiced) or internal (shown back at cost)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from billing.errors import PriceBookError
from billing.pricebook import parse_pricebook
from tests.unit.billing.builders import BASE, H100, make_book, minutes, rate


def _raw(**tenant: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["tenants"]["t"].update(tenant)
    raw["tenants"]["lab"] = {"name": "Research lab", "plan": "flat", "kind": "internal"}
    return raw


def test_kind_defaults_to_external_and_internal_is_listed() -> None:
    # given a book with tenant t (no kind) and lab (internal)
    book = parse_pricebook(_raw())
    # then
    assert book.kind_of("t") == "external"
    assert book.kind_of("lab") == "internal"
    assert book.kind_of("not-in-the-book") == "external"
    assert book.internal_tenants == frozenset({"lab"})


def test_explicit_external_is_external() -> None:
    book = parse_pricebook(_raw(kind="external"))
    assert book.internal_tenants == frozenset({"lab"})
    assert book.kind_of("t") == "external"


def test_unknown_kind_is_a_price_book_error_naming_the_entry() -> None:
    with pytest.raises(PriceBookError) as err:
        parse_pricebook(_raw(kind="partner"), source="bad.toml")
    (problem,) = err.value.problems
    assert problem.startswith("tenants.t: kind 'partner' is not one of external, internal")


def test_every_problem_is_listed_with_a_bad_kind() -> None:
    raw = _raw(kind=3)
    raw["rates"][0]["price_per_gpu_hour"] = "-1.00"
    with pytest.raises(PriceBookError) as err:
        parse_pricebook(raw, source="bad.toml")
    assert len(err.value.problems) == 2
    assert any(p.startswith("tenants.t: kind 3 is not one of") for p in err.value.problems)


@pytest.mark.parametrize(
    "extra",
    [
        {"starts_on": "2026-01-01", "minimum_monthly_spend": "100.00"},
        {
            "starts_on": "2026-01-01",
            "commitments": [
                {
                    "gpu_model": H100,
                    "gpu_hours_per_month": 10,
                    "rate": "1.00",
                    "overage_rate": "2.00",
                }
            ],
        },
    ],
)
def test_internal_tenant_cannot_have_money_billed_whether_used_or_not(
    extra: dict[str, Any],
) -> None:
    with pytest.raises(PriceBookError) as err:
        parse_pricebook(_raw(kind="internal", **extra), source="bad.toml")
    (problem,) = err.value.problems
    assert problem.startswith("tenants.t: an internal tenant is shown back at cost")


def test_kind_does_not_touch_an_external_tenants_invoice() -> None:
    # given the same usage, rated with a book without kinds and one that adds an internal tenant
    rows = minutes("j", "2026-01-05T10:00", 30)
    plain = rate(make_book(), rows)
    raw = _raw()
    with_internal = parse_pricebook(raw)
    # then the external tenant's document is byte for byte the same
    assert rate(with_internal, rows).canonical_json() == plain.canonical_json()
    # 30 minutes x 60 s at 3.60/GPU-h = 1800 s x 0.001 = 1.80
    assert str(plain.total) == "1.80"
