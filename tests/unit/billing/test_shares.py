"""Shared GPUs rated by hand (contract v2): usage is counted in milli-GPU-seconds (seconds x
share), a GPU-hour is 3,600,000 of them, and the price per GPU-hour applies to the share.

Base book (builders.BASE): H100 on-demand 3.60/GPU-h, i.e. 0.000001 per milli-GPU-second, so
an amount is milli-GPU-seconds / 1,000,000 before the one half-even rounding to cents.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.adjustment import adjustment_lines, differences
from billing.invoice import Invoice
from billing.rating import UsageRow
from tests.unit.billing.builders import H100, amounts, make_book, rate


def shared(
    job: str, start: str, count: int, share: int, *, seconds: int = 60, tenant: str = "t"
) -> list[UsageRow]:
    """``count`` ledger minutes of one job holding ``share`` milli-GPUs of g0."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return [
        UsageRow(
            tenant, job, "", H100, "g0", t0 + timedelta(minutes=i), seconds, milli=seconds * share
        )
        for i in range(count)
    ]


def test_600_and_300_milli_for_an_hour_and_the_idle_remainder_unbilled() -> None:
    # 600 milli x 3600 s = 2,160,000 and 300 milli x 3600 s = 1,080,000 milli-GPU-s:
    # 3,240,000 / 3,600,000 = 0.9 GPU-h x 3.60 = 3.24; the 100-milli idle remainder is nobody's
    rows = (
        shared("a", "2026-01-05T10:00", 60, 600)
        + shared("b", "2026-01-05T10:00", 60, 300)
        + shared("", "2026-01-05T10:00", 60, 100, tenant="__idle__")
    )
    inv = rate(make_book(), rows)
    assert amounts(inv) == [("usage", "3.24")]
    (line,) = inv.lines
    assert (line.quantity, line.unit_price, line.seconds, line.gpu_milli_seconds) == (
        Decimal("0.900000"),
        Decimal("3.600000"),
        3240,
        3_240_000,
    )
    a, b = inv.jobs
    assert (a.gpu_seconds, a.gpu_milli_seconds, a.billable_seconds) == (3600, 2_160_000, 2160)
    assert (b.gpu_seconds, b.gpu_milli_seconds, b.billable_seconds) == (3600, 1_080_000, 1080)
    assert inv.gpu_seconds == 7200  # seconds held, whatever the share
    assert inv.gpu_hours == Decimal("0.9")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # 125 milli x 40 s = 5,000 milli-GPU-s -> 0.005 -> half-even to 0.00
        (40, "0.00"),
        # 125 milli x 120 s = 15,000 -> 0.015 -> 0.02
        (120, "0.02"),
        # 125 milli x 200 s = 25,000 -> 0.025 -> 0.02
        (200, "0.02"),
    ],
)
def test_a_share_is_rounded_once_half_even(seconds: int, expected: str) -> None:
    inv = rate(make_book(), shared("a", "2026-01-05T10:00", 1, 125, seconds=seconds))
    assert amounts(inv) == [("usage", expected)]


def test_minimum_and_increment_are_whole_gpu_seconds_of_shared_usage() -> None:
    # plan: at least 60 GPU-s per job, per started 60 GPU-s (of share-weighted usage)
    book = make_book(
        plans={"p": {"minimum_seconds": 60, "increment_seconds": 60}}, tenant={"plan": "p"}
    )
    rows = shared("a", "2026-01-05T10:00", 1, 250, seconds=10) + shared(
        "b", "2026-01-05T11:00", 5, 500
    )
    inv = rate(book, rows)
    # a: 250 x 10 = 2,500 milli (2.5 GPU-s) -> the 60 GPU-s minimum = 60,000
    # b: 500 x 300 = 150,000 milli (150 GPU-s) -> 3 started increments of 60 = 180,000
    # 240,000 milli-GPU-s x 0.000001 = 0.24
    assert amounts(inv) == [("usage", "0.24")]
    assert inv.lines[0].gpu_milli_seconds == 240_000
    jobs = {j.job: j for j in inv.jobs}
    assert (jobs["a"].gpu_milli_seconds, jobs["a"].billable_seconds) == (2_500, 60)
    assert (jobs["b"].gpu_milli_seconds, jobs["b"].billable_seconds) == (150_000, 180)


def test_tiers_fill_with_share_weighted_gpu_hours() -> None:
    book = make_book(
        plans={
            "v": {
                "tiers": [
                    {"up_to_gpu_hours": 1, "discount_pct": 0},
                    {"discount_pct": 50},
                ]
            }
        },
        tenant={"plan": "v"},
    )
    # 500 milli for 3 hours = 1.5 GPU-h: 1 GPU-h at 3.60, 0.5 GPU-h at 1.80 = 0.90
    inv = rate(book, shared("a", "2026-01-05T00:00", 180, 500))
    assert amounts(inv) == [("usage", "3.60"), ("usage", "0.90")]
    assert [ln.gpu_milli_seconds for ln in inv.lines] == [3_600_000, 1_800_000]


def test_a_commitment_is_used_by_share_weighted_hours() -> None:
    book = make_book(
        rates=[
            {
                "gpu_model": H100,
                "billing_class": "reserved",
                "price_per_gpu_hour": "2.00",
                "effective_from": "2026-01-01",
            }
        ],
        tenant={
            "default_class": "reserved",
            "starts_on": "2025-01-01",
            "commitments": [
                {
                    "gpu_model": H100,
                    "gpu_hours_per_month": 1,
                    "rate": "1.00",
                    "overage_rate": "2.00",
                }
            ],
        },
    )
    # 500 milli for 3 hours = 1.5 GPU-h reserved: commitment 1 GPU-h x 1.00 = 1.00, overage
    # 0.5 GPU-h x 2.00 = 1.00
    inv = rate(book, shared("a", "2026-01-05T00:00", 180, 500))
    assert amounts(inv) == [("commitment", "1.00"), ("overage", "1.00")]
    assert [ln.gpu_milli_seconds for ln in inv.lines] == [3_600_000, 1_800_000]


def test_whole_gpu_rows_rate_byte_for_byte_as_before_shares() -> None:
    # A row without a share and the same row at 1000 milli give the same document, and it has
    # no milli-GPU-second keys at all (whole-GPU documents are unchanged by contract v2).
    t0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
    plain = [UsageRow("t", "a", "", H100, "g0", t0, 37)]
    explicit = [UsageRow("t", "a", "", H100, "g0", t0, 37, milli=37_000)]
    a, b = rate(make_book(), plain), rate(make_book(), explicit)
    assert a.canonical_json() == b.canonical_json()
    assert b"gpu_milli_seconds" not in a.canonical_json()


def test_a_shared_document_round_trips() -> None:
    inv = rate(make_book(), shared("a", "2026-01-05T10:00", 3, 333, seconds=7))
    doc = json.loads(inv.canonical_json())
    # 333 milli x 21 s = 6,993 milli-GPU-s metered; the job's billable usage is rounded up to
    # the plan's 1 GPU-s increment: 7,000, so the line is 7 whole GPU-s (no milli key needed)
    (job,) = doc["usage"]["jobs"]
    assert (job["gpu_seconds"], job["gpu_milli_seconds"], job["billable_seconds"]) == (21, 6993, 7)
    assert doc["lines"][0]["seconds"] == 7 and "gpu_milli_seconds" not in doc["lines"][0]
    assert Invoice.from_document(doc).canonical_json() == inv.canonical_json()


def test_a_line_split_by_a_price_change_keeps_exact_milli_gpu_seconds() -> None:
    # H100 on-demand 3.60 until Jan 6, then 7.20. A 333-milli job: 60 s on Jan 5 (19,980
    # milli-GPU-s at 3.60) and 60 s on Jan 6 (19,980, plus the job's padding to a whole GPU-s:
    # 39,960 -> 40,000, i.e. 40 more at the last price, 20,020 at 7.20)
    book = make_book(
        rates=[
            {
                "gpu_model": H100,
                "billing_class": "on_demand",
                "price_per_gpu_hour": "7.20",
                "effective_from": "2026-01-06",
            }
        ]
    )
    book_rates = [r for r in book.rates if r.billing_class == "on_demand" and r.gpu_model == H100]
    assert len(book_rates) == 2
    inv = rate(
        book,
        shared("a", "2026-01-05T10:00", 1, 333) + shared("a", "2026-01-06T10:00", 1, 333),
    )
    first, second = inv.lines
    assert (first.gpu_milli_seconds, first.seconds) == (19_980, 19)
    assert (second.gpu_milli_seconds, second.seconds) == (20_020, 20)
    # 19,980 x 3.60 / 3,600,000 = 0.01998 -> 0.02; 20,020 x 7.20 / 3,600,000 = 0.04004 -> 0.04
    assert amounts(inv) == [("usage", "0.02"), ("usage", "0.04")]
    doc = json.loads(inv.canonical_json())
    assert [ln.get("gpu_milli_seconds") for ln in doc["lines"]] == [19_980, 20_020]
    assert Invoice.from_document(doc).canonical_json() == inv.canonical_json()


def test_late_shared_usage_becomes_an_exact_adjustment() -> None:
    book = make_book()
    before = rate(book, shared("a", "2026-01-05T10:00", 60, 250))  # 0.25 GPU-h = 0.90
    after = rate(
        book, shared("a", "2026-01-05T10:00", 60, 250) + shared("b", "2026-01-06T10:00", 1, 125)
    )
    # late job b: 125 milli x 60 s = 7,500 milli-GPU-s, billable rounded up to 8 GPU-s = 8,000
    # = 0.002222 GPU-h; the usage line goes from 900,000 (0.90) to 908,000 (0.908 -> 0.91)
    (delta,) = differences(before, after)
    assert (delta.milli, delta.amount, delta.quantity) == (
        8_000,
        Decimal("0.01"),
        Decimal("0.002222"),
    )
    (line,) = adjustment_lines(before, [delta])
    assert (line.seconds, line.gpu_milli_seconds, line.amount) == (8, 8_000, Decimal("0.01"))
