"""Golden invoices, computed by hand. The arithmetic is in the comments; the code must agree.

Conventions of the base book (builders.BASE): H100 on-demand 3.60/GPU-h = 0.001 per GPU-second,
H100 spot 1.20/GPU-h, A100 on-demand 1.80/GPU-h; USD, 2 minor digits, ROUND_HALF_EVEN per line.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.errors import BillingError, MissingRateError
from billing.period import Period
from billing.rating import UsageRow
from tests.unit.billing.builders import A100, H100, amounts, make_book, minutes, rate


def test_per_second_usage_line() -> None:
    # Given one job on 2 GPUs for 30 minutes each: 2 x 1800 s = 3600 GPU-s = 1 GPU-h
    rows = minutes("j", "2026-01-05T10:00", 30, gpu="g0") + minutes(
        "j", "2026-01-05T10:00", 30, gpu="g1"
    )
    inv = rate(make_book(), rows)
    # Then 1 GPU-h x 3.60 = 3.60
    assert amounts(inv) == [("usage", "3.60")]
    line = inv.lines[0]
    assert (line.quantity, line.unit, line.unit_price, line.seconds) == (
        Decimal("1.000000"),
        "GPU-hour",
        Decimal("3.600000"),
        3600,
    )
    assert (inv.subtotal, inv.tax, inv.total) == (Decimal("3.60"), 0, Decimal("3.60"))
    assert inv.jobs[0].gpus == 2 and inv.jobs[0].gpu_seconds == 3600


def test_idle_and_other_tenants_are_not_invoiced() -> None:
    rows = (
        minutes("j", "2026-01-05T10:00", 10)
        + minutes("", "2026-01-05T10:00", 10, tenant="__idle__", gpu="g1")
        + minutes("x", "2026-01-05T10:00", 10, tenant="other")
    )
    # 600 GPU-s x 0.001 = 0.60; the idle and 'other' rows add nothing
    assert amounts(rate(make_book(), rows)) == [("usage", "0.60")]


@pytest.mark.parametrize(
    ("minimum", "increment", "expected"),
    [
        # 60 s minimum then per second: job a 10 s -> 60 s; job b 61 s -> 61 s;
        # 121 s x 0.001 = 0.121 -> 0.12 (half-even)
        (60, 1, "0.12"),
        # per started minute, minimum 60: a 10 s -> 60 s; b 61 s -> 120 s; 180 s x 0.001 = 0.18
        (60, 60, "0.18"),
        # no minimum, per second: 71 s -> 0.071 -> 0.07
        (0, 1, "0.07"),
    ],
)
def test_minimum_duration_and_increment(minimum: int, increment: int, expected: str) -> None:
    book = make_book(
        plans={"p": {"minimum_seconds": minimum, "increment_seconds": increment}},
        tenant={"plan": "p"},
    )
    rows = minutes("a", "2026-01-05T10:00", 1, seconds=10) + [
        *minutes("b", "2026-01-05T11:00", 1, seconds=60),
        *minutes("b", "2026-01-05T11:01", 1, seconds=1),
    ]
    inv = rate(book, rows)
    assert amounts(inv) == [("usage", expected)]
    assert sum(j.gpu_seconds for j in inv.jobs) == 71  # metered seconds are never padded


def test_graduated_tiers() -> None:
    # Tiers per GPU model per month: first 1 GPU-h at list, next 1 GPU-h 10% off, rest 50% off.
    book = make_book(
        plans={
            "v": {
                "tiers": [
                    {"up_to_gpu_hours": 1, "discount_pct": 0},
                    {"up_to_gpu_hours": 2, "discount_pct": 10},
                    {"discount_pct": 50},
                ]
            }
        },
        tenant={"plan": "v"},
    )
    # 3 GPU-h on-demand H100 (180 minutes) + 1 GPU-h spot H100 (spot is not tiered)
    rows = minutes("j", "2026-01-05T00:00", 180) + minutes(
        "s", "2026-01-06T00:00", 60, klass="spot", gpu="g1"
    )
    inv = rate(book, rows)
    # tier 1: 1 h x 3.60 = 3.60; tier 2: 1 h x 3.24 (3.60 x 0.9) = 3.24;
    # tier 3: 1 h x 1.80 (3.60 x 0.5) = 1.80; spot: 1 h x 1.20 = 1.20. Subtotal 9.84
    assert amounts(inv) == [
        ("usage", "3.60"),
        ("usage", "3.24"),
        ("usage", "1.80"),
        ("usage", "1.20"),
    ]
    assert [ln.unit_price for ln in inv.lines] == [
        Decimal("3.6"),
        Decimal("3.24"),
        Decimal("1.8"),
        Decimal("1.2"),
    ]
    assert inv.total == Decimal("9.84")


COMMIT = {
    "default_class": "reserved",
    "starts_on": "2025-01-01",
    "commitments": [
        {"gpu_model": A100, "gpu_hours_per_month": 10, "rate": "1.50", "overage_rate": "2.00"}
    ],
}


def test_commitment_under_use_still_billed_in_full() -> None:
    # 4 GPU-h used of 10 committed: commitment 10 x 1.50 = 15.00, no overage
    inv = rate(make_book(tenant=COMMIT), minutes("r", "2026-01-05T00:00", 240, model=A100))
    assert amounts(inv) == [("commitment", "15.00")]
    assert "used 4.000000" in inv.lines[0].description


def test_commitment_with_no_usage_at_all() -> None:
    # An unused commitment is billed: 10 x 1.50 = 15.00 with zero usage rows
    assert amounts(rate(make_book(tenant=COMMIT), [])) == [("commitment", "15.00")]


def test_commitment_over_use_is_overage() -> None:
    # 12.5 GPU-h used (750 minutes): commitment 15.00 + overage 2.5 h x 2.00 = 5.00 -> 20.00
    inv = rate(make_book(tenant=COMMIT), minutes("r", "2026-01-05T00:00", 750, model=A100))
    assert amounts(inv) == [("commitment", "15.00"), ("overage", "5.00")]
    assert inv.lines[1].seconds == 9000 and inv.total == Decimal("20.00")


def test_spot_job_from_allocation_metadata() -> None:
    # billing_class 'spot' in the ledger overrides the on_demand default:
    # spot 1.5 h x 1.20 = 1.80; on-demand 0.5 h x 3.60 = 1.80
    rows = minutes("s", "2026-01-05T00:00", 90, klass="spot") + minutes(
        "o", "2026-01-05T00:00", 30, gpu="g1"
    )
    inv = rate(make_book(), rows)
    assert [(ln.billing_class, str(ln.amount)) for ln in inv.lines] == [
        ("on_demand", "1.80"),
        ("spot", "1.80"),
    ]


def test_discount_applies_to_usage_and_overage_not_commitment() -> None:
    # 10% off: H100 1 h = 3.60 + A100 1 h = 1.80 -> 5.40; discount -0.54; total 4.86
    rows = minutes("a", "2026-01-05T00:00", 60) + minutes(
        "b", "2026-01-05T00:00", 60, model=A100, gpu="g1"
    )
    inv = rate(make_book(tenant={"discount_pct": 10}), rows)
    assert amounts(inv) == [("usage", "1.80"), ("usage", "3.60"), ("discount", "-0.54")]
    assert inv.total == Decimal("4.86")
    # With a commitment: 15.00 commitment + 5.00 overage; 10% of overage only = -0.50 -> 19.50
    inv = rate(
        make_book(tenant={**COMMIT, "discount_pct": 10}),
        minutes("r", "2026-01-05T00:00", 750, model=A100),
    )
    assert amounts(inv) == [("commitment", "15.00"), ("overage", "5.00"), ("discount", "-0.50")]


def test_credits_before_tax_and_carried_balance() -> None:
    book = make_book(
        tenant={
            "tax_rate": "0.0825",
            "credits": [
                {"id": "PROMO", "kind": "promotional", "amount": "5.00", "valid_from": "2026-01-01"}
            ],
        }
    )
    rows = minutes("a", "2026-01-05T00:00", 120)  # 2 h x 3.60 = 7.20
    inv = rate(book, rows)
    # credit min(5.00, 7.20) = -5.00 -> 2.20; tax 2.20 x 0.0825 = 0.1815 -> 0.18; total 2.38
    assert amounts(inv) == [("usage", "7.20"), ("credit", "-5.00"), ("tax", "0.18")]
    assert (inv.subtotal, inv.tax, inv.total) == (Decimal("2.20"), Decimal("0.18"), Decimal("2.38"))
    # Next month with 4.00 of it already used: only 1.00 left -> 7.20 - 1.00 = 6.20;
    # tax 6.20 x 0.0825 = 0.5115 -> 0.51; total 6.71
    inv = rate(
        book,
        minutes("a", "2026-02-05T00:00", 120),
        period=Period(2026, 2),
        credits_used={"PROMO": Decimal("4.00")},
    )
    assert amounts(inv) == [("usage", "7.20"), ("credit", "-1.00"), ("tax", "0.51")]


def test_credit_never_makes_an_invoice_negative() -> None:
    book = make_book(
        tenant={
            "credits": [
                {"id": "BIG", "kind": "prepaid", "amount": "100", "valid_from": "2026-01-01"}
            ]
        }
    )
    # usage 0.60; credit takes 0.60 of 100, subtotal 0.00
    inv = rate(book, minutes("a", "2026-01-05T00:00", 10))
    assert amounts(inv) == [("usage", "0.60"), ("credit", "-0.60")] and inv.total == 0


def test_tax_rounds_half_even() -> None:
    # 8.25% of 3.60 = 0.297 -> 0.30; total 3.90
    inv = rate(make_book(tenant={"tax_rate": "0.0825"}), minutes("a", "2026-01-05T00:00", 60))
    assert amounts(inv) == [("usage", "3.60"), ("tax", "0.30")] and inv.total == Decimal("3.90")


@pytest.mark.parametrize(("seconds", "expected"), [(125, "0.12"), (135, "0.14"), (1, "0.00")])
def test_line_rounding_is_half_even(seconds: int, expected: str) -> None:
    # 125 s x 0.001 = 0.125 -> 0.12 (to even); 0.135 -> 0.14; 0.001 -> 0.00
    rows = [
        UsageRow("t", "j", "", H100, "g", minutes("x", "2026-01-05T00:00", 1)[0].start, seconds)
    ]
    assert amounts(rate(make_book(), rows)) == [("usage", expected)]


def test_price_change_mid_month_rates_each_minute_at_its_own_price() -> None:
    # H100 on-demand drops to 3.00 from 2026-01-16. One job, one GPU, 23:30 on the 15th to
    # 00:30 on the 16th: 30 min x 3.60/h = 1.80 and 30 min x 3.00/h = 1.50 -> 3.30
    book = make_book(
        rates=[
            {
                "gpu_model": H100,
                "billing_class": "on_demand",
                "price_per_gpu_hour": "3.00",
                "effective_from": "2026-01-16",
            }
        ]
    )
    inv = rate(book, minutes("j", "2026-01-15T23:30", 60))
    assert amounts(inv) == [("usage", "1.80"), ("usage", "1.50")]
    assert "price from 2026-01-01" in inv.lines[0].description
    assert "price from 2026-01-16" in inv.lines[1].description
    # The invoice carries both prices it used
    assert {
        r.price_per_gpu_hour
        for r in inv.pricing.rates
        if r.gpu_model == H100 and r.billing_class == "on_demand"
    } == {Decimal("3.60"), Decimal("3.00")}


def test_energy_pass_through_line() -> None:
    # 60 minutes x 120,000,000 mJ = 7.2e9 mJ = 2 kWh; x PUE 1.25 = 2.5 kWh; x 0.12 = 0.30
    book = make_book(tenant={"energy": {"pue": "1.25", "price_per_kwh": "0.12"}})
    inv = rate(book, minutes("a", "2026-01-05T00:00", 60, energy_mj=120_000_000))
    assert amounts(inv) == [("usage", "3.60"), ("energy", "0.30")]
    energy = inv.lines[1]
    assert (energy.quantity, energy.unit, energy.unit_price) == (
        Decimal("2.5"),
        "kWh",
        Decimal("0.12"),
    )


def test_everything_together() -> None:
    # tiers (1 h at list, rest 10% off), 60 s minimum, 5% discount, energy, credit, 10% tax
    book = make_book(
        plans={
            "v": {
                "minimum_seconds": 60,
                "increment_seconds": 1,
                "tiers": [{"up_to_gpu_hours": 1, "discount_pct": 0}, {"discount_pct": 10}],
            }
        },
        tenant={
            "plan": "v",
            "discount_pct": 5,
            "tax_rate": "0.10",
            "energy": {"pue": "1.5", "price_per_kwh": "0.20"},
            "credits": [{"id": "C", "amount": "1.00", "valid_from": "2026-01-01"}],
        },
    )
    rows = (
        minutes("long", "2026-01-05T00:00", 90, energy_mj=40_000_000)  # 1.5 h
        + minutes("tiny", "2026-01-05T03:00", 1, seconds=5, gpu="g1")
    )  # 5 s -> 60 s
    inv = rate(book, rows)
    # H100 on-demand billable: 5400 + 60 = 5460 s. Tier 1: 3600 s x 3.60/h = 3.60.
    # Tier 2: 1860 s x 3.24/h = 1.674 -> 1.67. Usage 5.27; discount 5% = -0.2635 -> -0.26.
    # Energy: 90 x 40e6 mJ = 3.6e9 mJ = 1 kWh x 1.5 = 1.5 kWh x 0.20 = 0.30.
    # Credit -1.00. Subtotal 3.60 + 1.67 - 0.26 + 0.30 - 1.00 = 4.31; tax 0.431 -> 0.43; 4.74
    assert amounts(inv) == [
        ("usage", "3.60"),
        ("usage", "1.67"),
        ("discount", "-0.26"),
        ("energy", "0.30"),
        ("credit", "-1.00"),
        ("tax", "0.43"),
    ]
    assert inv.total == Decimal("4.74")


def test_usage_without_a_rate_names_model_and_tenant() -> None:
    rows = minutes("s", "2026-01-05T00:00", 5, model=A100, klass="spot")
    with pytest.raises(
        MissingRateError,
        match=r"spot rate for GPU model 'NVIDIA A100-SXM4-80GB'"
        r".*tenant 't'",
    ):
        rate(make_book(), rows)


def test_usage_of_tenant_without_contract_is_refused() -> None:
    with pytest.raises(BillingError, match="tenant 'nobody' has usage .* no contract"):
        rate(make_book(), minutes("x", "2026-01-05T00:00", 1, tenant="nobody"), tenant="nobody")
