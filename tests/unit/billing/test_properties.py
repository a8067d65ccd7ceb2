"""Invariants of rating, for any usage (hypothesis)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.rating import UsageRow
from tests.unit.billing.builders import A100, H100, make_book, rate

TENANTS = ["t", "u", "__idle__"]
BOOK = make_book(
    plans={
        "v": {
            "minimum_seconds": 60,
            "increment_seconds": 1,
            "tiers": [{"up_to_gpu_hours": 1, "discount_pct": 0}, {"discount_pct": 15}],
        }
    },
    tenant={
        "plan": "v",
        "discount_pct": "7.5",
        "tax_rate": "0.19",
        "energy": {"pue": "1.3", "price_per_kwh": "0.137"},
        "credits": [{"id": "C", "amount": "0.77", "valid_from": "2026-01-01"}],
    },
    rates=[
        {
            "gpu_model": H100,
            "billing_class": "on_demand",
            "price_per_gpu_hour": "2.95",
            "effective_from": "2026-01-16",
        }
    ],
)
# A second, simpler contract so "wrong tenant" is observable.
FLAT = make_book(tenants={"t": {"plan": "flat"}, "u": {"plan": "flat", "discount_pct": 3}})

row = st.builds(
    lambda tenant, job, model, klass, gpu, minute, secs, mj: UsageRow(
        tenant,
        job,
        klass,
        model,
        gpu,
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
        secs,
        mj,
    ),
    st.sampled_from(TENANTS),
    st.sampled_from(["j1", "j2", "j3"]),
    st.sampled_from([H100, A100]),
    st.sampled_from(["", "on_demand"]),
    st.sampled_from(["g0", "g1", "g2"]),
    st.integers(0, 31 * 1440 - 1),
    st.integers(1, 60),
    st.integers(0, 10**9),
)
rows_st = st.lists(row, max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows_st)
def test_line_amounts_sum_to_totals(rows: list[UsageRow]) -> None:
    inv = rate(BOOK, rows)
    assert inv.subtotal == sum(ln.amount for ln in inv.lines if ln.kind != "tax")
    assert inv.total == sum(ln.amount for ln in inv.lines)
    assert inv.total == inv.subtotal + inv.tax
    for ln in inv.lines:  # every line is already at the minor unit: nothing left to round
        assert ln.amount == ln.amount.quantize(Decimal("0.01"))


@settings(max_examples=150, deadline=None)
@given(rows_st)
def test_no_gpu_second_billed_twice_or_to_the_wrong_tenant(rows: list[UsageRow]) -> None:
    # Flat plan (no minimum, per second): billed seconds must equal metered seconds exactly.
    per_tenant = Counter()
    for r in rows:
        per_tenant[r.tenant] += r.gpu_seconds
    billed_total = 0
    for tenant in ("t", "u"):
        inv = rate(FLAT, rows, tenant=tenant)
        billed = sum(ln.seconds for ln in inv.lines if ln.kind == "usage")
        assert billed == per_tenant[tenant] == sum(j.gpu_seconds for j in inv.jobs)
        assert all(inv.tenant == tenant for _ in inv.jobs)
        billed_total += billed
    assert billed_total == sum(r.gpu_seconds for r in rows if r.tenant != "__idle__")


@settings(max_examples=150, deadline=None)
@given(rows_st, st.integers(2, 6), st.randoms(use_true_random=False))
def test_splitting_usage_across_more_rows_does_not_change_the_invoice(
    rows: list[UsageRow], parts: int, rnd: random.Random
) -> None:
    # Split each row's seconds and energy across up to ``parts`` rows in the same UTC day (as a
    # different minute aggregation would). Amounts are computed once per line from summed exact
    # seconds, so the result is identical, not merely within rounding.
    split: list[UsageRow] = []
    for r in rows:
        n = min(parts, r.gpu_seconds)
        cuts = sorted(rnd.sample(range(1, r.gpu_seconds), n - 1)) if n > 1 else []
        bounds = [0, *cuts, r.gpu_seconds]
        for i in range(n):
            minute = r.start.replace(hour=rnd.randrange(24), minute=rnd.randrange(60))
            mj = r.energy_mj if i == 0 else 0
            split.append(
                replace(r, start=minute, gpu_seconds=bounds[i + 1] - bounds[i], energy_mj=mj)
            )
    a, b = rate(BOOK, rows), rate(BOOK, split)
    assert [(ln.kind, ln.amount, ln.seconds) for ln in a.lines] == [
        (ln.kind, ln.amount, ln.seconds) for ln in b.lines
    ]
    assert a.total == b.total


@settings(max_examples=100, deadline=None)
@given(rows_st, st.randoms(use_true_random=False))
def test_rerun_is_byte_identical(rows: list[UsageRow], rnd: random.Random) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    a, b = rate(BOOK, rows), rate(BOOK, shuffled)
    assert a.canonical_json() == b.canonical_json()
    assert a.content_hash == b.content_hash
