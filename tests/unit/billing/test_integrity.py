"""Issue 10 regressions that need no database: rounding and precision, contract dates, credit
order and scope, negotiated rates, minimum spend, MIG fractions, dated tax, signed adjustments.
Each test names the finding it pins; each failed before the fix."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.adjustment import adjustment_lines, differences
from billing.errors import BillingError, PriceBookError
from billing.money import round_money
from billing.period import Period
from billing.rating import line
from tests.unit.billing.builders import A100, H100, amounts, make_book, minutes, rate

COMMIT = {
    "default_class": "reserved",
    "starts_on": "2025-01-01",
    "commitments": [
        {"gpu_model": A100, "gpu_hours_per_month": 10, "rate": "1.50", "overage_rate": "2.00"}
    ],
}


def _problems(**kw: object) -> list[str]:
    with pytest.raises(PriceBookError) as e:
        make_book(**kw)  # type: ignore[arg-type]
    return e.value.problems


# -- finding 2: credits in minor units ----------------------------------------------------------


def test_credit_with_sub_cent_amount_is_refused_naming_the_credit() -> None:
    (p,) = _problems(
        tenant={"credits": [{"id": "C1", "amount": "10.005", "valid_from": "2026-01-01"}]}
    )
    assert p.startswith(
        "tenants.t.credits[0] (id='C1'): amount = 10.005 has 3 decimals; "
        "at most 2 allowed (the currency's minor unit)"
    )


def test_credit_balance_is_shown_in_minor_units() -> None:
    book = make_book(
        tenant={"credits": [{"id": "C", "amount": "22.8", "valid_from": "2026-01-01"}]}
    )
    inv = rate(book, minutes("a", "2026-01-05T00:00", 10), credits_used={"C": Decimal("0.2400")})
    (credit,) = [ln for ln in inv.lines if ln.kind == "credit"]
    assert "(balance before 22.56)" in credit.description and credit.amount == Decimal("-0.60")


# -- finding 3: the price shown is the price used -----------------------------------------------


def test_rate_with_more_than_six_decimals_is_refused_naming_the_rate() -> None:
    (p,) = _problems(
        rates=[
            {
                "gpu_model": A100,
                "billing_class": "spot",
                "price_per_gpu_hour": "3.1234567",
                "effective_from": "2026-01-01",
            }
        ]
    )
    assert p.startswith(
        "rates[3] (gpu_model='NVIDIA A100-SXM4-80GB', spot, from 2026-01-01): "
        "price_per_gpu_hour = 3.1234567 has 7 decimals; at most 6 allowed"
    )


def test_a_line_refuses_a_price_it_cannot_show() -> None:
    with pytest.raises(BillingError, match="more than 6 decimals"):
        line(
            "usage",
            H100,
            "on_demand",
            "x",
            Decimal(1),
            "GPU-hour",
            Decimal("3.1234567"),
            Decimal("3.12"),
        )


def test_every_gpu_hour_line_recomputes_from_its_shown_price() -> None:
    # H100 tier 2 at 12.3456% off 3.60 = 3.1555584 -> shown and used 3.155558 (6 decimals);
    # A100 spot at 3.123457 (6 decimals: accepted, shown and used as is)
    book = make_book(
        rates=[
            {
                "gpu_model": A100,
                "billing_class": "spot",
                "price_per_gpu_hour": "3.123457",
                "effective_from": "2026-01-01",
            }
        ],
        plans={
            "v": {"tiers": [{"up_to_gpu_hours": 1, "discount_pct": 0}, {"discount_pct": "12.3456"}]}
        },
        tenant={"plan": "v"},
    )
    rows = minutes("a", "2026-01-05T00:00", 90) + minutes(
        "s", "2026-01-05T00:00", 25, model=A100, klass="spot", gpu="g1"
    )
    inv = rate(book, rows)
    for ln in inv.lines:
        if ln.unit == "GPU-hour":
            assert ln.amount == round_money(ln.seconds * ln.unit_price / 3600, 2), ln
    assert [ln.unit_price for ln in inv.lines] == [
        Decimal("3.123457"),
        Decimal("3.6"),
        Decimal("3.155558"),
    ]


# -- finding 6: contracts in time -----------------------------------------------------------------


def test_commitment_is_not_billed_outside_the_contract() -> None:
    book = make_book(tenant={**COMMIT, "ends_on": "2026-12-31"})
    assert rate(book, [], period=Period(2019, 1)).lines == ()
    assert rate(book, [], period=Period(2031, 12)).lines == ()


def test_commitment_and_minimum_are_prorated_in_a_partial_month() -> None:
    # Contract from 2026-01-17: 15 of 31 days. Committed floor(10 h x 3600 x 15/31) = 17419 s
    # -> 17419 x 1.50 / 3600 = 7.257916 -> 7.26. Minimum 31.00 x 15/31 = 15.00; charges 7.26:
    # shortfall 7.74.
    book = make_book(tenant={**COMMIT, "starts_on": "2026-01-17", "minimum_monthly_spend": "31.00"})
    inv = rate(book, [])
    assert amounts(inv) == [("commitment", "7.26"), ("minimum", "7.74")]
    assert inv.lines[0].seconds == 17419 and "15/31 days" in inv.lines[0].description


def test_commitment_or_minimum_needs_a_start_date() -> None:
    (p,) = _problems(tenant={"minimum_monthly_spend": "10.00"})
    assert p.startswith("tenants.t: starts_on is required")


# -- finding 7: credits with the same expiry -----------------------------------------------------


def test_credits_with_the_same_expiry_apply_oldest_first_then_by_id() -> None:
    # Before: id order ("A" first). Now: same expiry -> earliest valid_from ("B") first.
    book = make_book(
        tenant={
            "credits": [
                {
                    "id": "A",
                    "amount": "1.00",
                    "valid_from": "2026-01-10",
                    "valid_until": "2026-12-31",
                },
                {
                    "id": "B",
                    "amount": "1.00",
                    "valid_from": "2026-01-01",
                    "valid_until": "2026-12-31",
                },
            ]
        }
    )
    inv = rate(book, minutes("a", "2026-01-05T00:00", 15))  # 0.90
    assert [(ln.reference, str(ln.amount)) for ln in inv.lines if ln.kind == "credit"] == [
        ("B", "-0.90")
    ]


# -- what the price book can express now -----------------------------------------------------------


def test_negotiated_rate_wins_over_the_list_rate() -> None:
    book = make_book(
        tenant={
            "rates": [
                {
                    "gpu_model": H100,
                    "billing_class": "on_demand",
                    "price_per_gpu_hour": "2.88",
                    "effective_from": "2026-01-10",
                }
            ]
        }
    )
    # 60 min on the 5th at list 3.60; 60 min on the 12th at the negotiated 2.88
    inv = rate(book, minutes("a", "2026-01-05T00:00", 60) + minutes("b", "2026-01-12T00:00", 60))
    assert amounts(inv) == [("usage", "3.60"), ("usage", "2.88")]


def test_mig_profile_is_priced_as_a_fraction_of_its_parent() -> None:
    # 3g.40gb of an A100 at 1.80: 1.80 x 3/7 = 0.771428571... -> 0.771429; 1 h -> 0.77
    inv = rate(make_book(), minutes("m", "2026-01-05T00:00", 60, model=f"{A100} MIG 3g.40gb"))
    assert [(ln.unit_price, str(ln.amount)) for ln in inv.lines] == [(Decimal("0.771429"), "0.77")]


def test_credit_limited_to_a_model_pays_only_for_it() -> None:
    book = make_book(
        tenant={
            "credits": [
                {
                    "id": "A100-ONLY",
                    "amount": "100.00",
                    "valid_from": "2026-01-01",
                    "gpu_model": A100,
                }
            ]
        }
    )
    rows = minutes("a", "2026-01-05T00:00", 60) + minutes(
        "b", "2026-01-05T00:00", 60, model=A100, gpu="g1"
    )
    inv = rate(book, rows)  # H100 3.60 + A100 1.80; the credit covers the A100 line only
    assert amounts(inv)[-1] == ("credit", "-1.80") and inv.total == Decimal("3.60")


def test_dated_tax_rate_in_force_on_the_last_day_of_the_period() -> None:
    book = make_book(
        tenant={"tax_rate": "0.10", "tax_rates": [{"rate": "0.20", "effective_from": "2026-02-01"}]}
    )
    jan = rate(book, minutes("a", "2026-01-05T00:00", 60))
    feb = rate(book, minutes("a", "2026-02-05T00:00", 60), period=Period(2026, 2))
    assert amounts(jan)[-1] == ("tax", "0.36") and amounts(feb)[-1] == ("tax", "0.72")


# -- finding 1: negative differences are lines like any other -------------------------------------


def test_rerating_across_a_price_change_gives_a_negative_adjustment_line() -> None:
    # 10 s at 23:59:50 on the 15th with a 60 s minimum: billed 60 s at 3.60. 50 s more arrive on
    # the 16th at 3.00: re-rated 10 s at 3.60 and 50 s at 3.00, so -50 s and +50 s.
    book = make_book(
        plans={"m": {"minimum_seconds": 60}},
        tenant={"plan": "m"},
        rates=[
            {
                "gpu_model": H100,
                "billing_class": "on_demand",
                "price_per_gpu_hour": "3.00",
                "effective_from": "2026-01-16",
            }
        ],
    )
    first = minutes("j", "2026-01-15T23:59", 1, seconds=10)
    original = rate(book, first)
    rerated = rate(book, first + minutes("j", "2026-01-16T00:00", 1, seconds=50))
    lines = adjustment_lines(original, differences(original, rerated))
    assert [(ln.seconds, str(ln.amount), ln.unit_price) for ln in lines] == [
        (50, "0.04", Decimal("3.0")),
        (-50, "-0.05", Decimal("3.6")),
    ]
    assert lines[1].quantity == Decimal("-0.013889")


# -- finding 5: one commit per run ----------------------------------------------------------------


class _Client:
    """Records inserts; fails the header insert when told to (a crash at the commit point)."""

    def __init__(self, fail_headers: bool) -> None:
        self.fail_headers, self.inserts = fail_headers, []

    def query(self, query: str, parameters: dict | None = None) -> object:
        return type("R", (), {"result_rows": []})()

    def insert(self, table: str, data: list, column_names: list | None = None) -> None:
        self.inserts.append((table, len(data)))
        if table == "invoices" and self.fail_headers:
            raise OSError("connection reset")

    def command(self, cmd: str, parameters: dict | None = None) -> None: ...


def test_all_invoices_of_a_run_are_committed_by_one_header_insert() -> None:
    from datetime import UTC, datetime

    from billing.store import BillingStore

    book = make_book(tenants={"a": {"plan": "flat"}, "b": {"plan": "flat"}})
    invs = [rate(book, minutes("j", "2026-01-05T00:00", 3, tenant=t), tenant=t) for t in "ab"]
    ok = _Client(fail_headers=False)
    BillingStore(ok).save_all([(i, datetime.now(UTC), None) for i in invs])
    assert ok.inserts == [("invoice_lines", 2), ("invoices", 2)]
    broken = _Client(fail_headers=True)
    with pytest.raises(BillingError, match="2 invoice\\(s\\) failed; the previous state stands"):
        BillingStore(broken).save_all([(i, datetime.now(UTC), None) for i in invs])
