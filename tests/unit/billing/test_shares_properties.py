"""Invariants of rating shared usage, for any usage (hypothesis): every milli-GPU-second is
billed once to its own tenant, and how the ledger aggregates rows does not change a line."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.rating import UsageRow
from tests.unit.billing.builders import A100, H100, make_book, rate

FLAT = make_book(tenants={"t": {"plan": "flat"}, "u": {"plan": "flat", "discount_pct": 3}})

row = st.builds(
    lambda tenant, job, model, gpu, minute, secs, share, mj: UsageRow(
        tenant,
        job,
        "",
        model,
        gpu,
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
        secs,
        mj,
        milli=secs * share,
    ),
    st.sampled_from(["t", "u", "__idle__"]),
    st.sampled_from(["j1", "j2", "j3"]),
    st.sampled_from([H100, A100]),
    st.sampled_from(["g0", "g1"]),
    st.integers(0, 31 * 1440 - 1),
    st.integers(1, 60),
    st.one_of(st.just(1000), st.integers(1, 999)),
    st.integers(0, 10**9),
)
rows_st = st.lists(row, max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows_st)
def test_every_milli_gpu_second_is_billed_once_to_its_tenant(rows: list[UsageRow]) -> None:
    held, metered = Counter(), Counter()
    for r in rows:
        held[r.tenant] += r.gpu_seconds
        metered[r.tenant] += r.gpu_milli_seconds
    for tenant in ("t", "u"):
        inv = rate(FLAT, rows, tenant=tenant)
        assert sum(j.gpu_seconds for j in inv.jobs) == held[tenant]
        assert sum(j.gpu_milli_seconds for j in inv.jobs) == metered[tenant]
        # flat plan (per second, no minimum): each job is rounded up to a whole GPU-second
        billed = sum(ln.gpu_milli_seconds for ln in inv.lines if ln.kind == "usage")
        assert billed == sum(1000 * j.billable_seconds for j in inv.jobs)
        for j in inv.jobs:
            assert 0 <= 1000 * j.billable_seconds - j.gpu_milli_seconds < 1000


@settings(max_examples=100, deadline=None)
@given(rows_st, st.randoms(use_true_random=False))
def test_splitting_shared_rows_within_a_day_does_not_change_the_lines(
    rows: list[UsageRow], rnd: random.Random
) -> None:
    # A row's seconds held at one share, cut into two rows of the same day (as another minute
    # aggregation would store them): the same milli-GPU-seconds, the same lines and totals.
    split: list[UsageRow] = []
    for r in rows:
        share = r.gpu_milli_seconds // r.gpu_seconds
        if r.gpu_seconds < 2:
            split.append(r)
            continue
        cut = rnd.randrange(1, r.gpu_seconds)
        for secs, mj in ((cut, r.energy_mj), (r.gpu_seconds - cut, 0)):
            minute = r.start.replace(hour=rnd.randrange(24), minute=rnd.randrange(60))
            split.append(
                replace(r, start=minute, gpu_seconds=secs, milli=secs * share, energy_mj=mj)
            )
    for tenant in ("t", "u"):
        a, b = rate(FLAT, rows, tenant=tenant), rate(FLAT, split, tenant=tenant)
        assert [(ln.kind, ln.amount, ln.gpu_milli_seconds) for ln in a.lines] == [
            (ln.kind, ln.amount, ln.gpu_milli_seconds) for ln in b.lines
        ]
        assert a.total == b.total
