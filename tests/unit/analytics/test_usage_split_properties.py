"""Properties of the capacity split: every milli-GPU-second lands in exactly one of internal,
external and idle; day rows add up to their model, models to the fleet; external revenue is
conserved (the lines' sum, placed on models and, usage-driven, on days)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.ledger_facts import RevenueLine
from analytics.usage_split import ALL_DAYS, FLEET, TenantUsage, split_capacity

MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")
DAYS = ("2025-03-01", "2025-03-02", "2025-03-03")
TENANTS = ("a", "b", "lab", "ops", "__idle__")
INTERNAL = frozenset({"lab", "ops"})

usage_st = st.lists(
    st.builds(
        TenantUsage,
        st.sampled_from(DAYS),
        st.sampled_from(MODELS),
        st.sampled_from(TENANTS),
        st.integers(1, 10**9),
    ),
    max_size=30,
)
lines_st = st.lists(
    st.builds(
        RevenueLine,
        st.sampled_from(("a", "b")),
        st.sampled_from((*MODELS, "")),
        st.decimals(min_value=-1000, max_value=10_000, places=2),
    ),
    max_size=8,
)
TINY = Decimal("1e-15")


@settings(max_examples=200, deadline=None)
@given(usage_st, lines_st)
def test_split_conserves_capacity_and_revenue(
    usage: list[TenantUsage], lines: list[RevenueLine]
) -> None:
    rows = split_capacity(usage, INTERNAL, lines)
    if not usage:
        assert rows == ()
        return
    by = {(r.gpu_model, r.day): r for r in rows}
    # every milli-GPU-second once, in its slot
    for key, slot in (("internal", INTERNAL), ("idle", {"__idle__"})):
        total = sum(u.milli for u in usage if u.tenant in slot)
        assert getattr(by[(FLEET, ALL_DAYS)], f"{key}_milli") == total
    assert by[(FLEET, ALL_DAYS)].capacity_milli == sum(u.milli for u in usage)
    models = {u.gpu_model for u in usage}
    days = {u.day for u in usage}
    for m in models:
        day_rows = [r for (mm, d), r in by.items() if mm == m and d != ALL_DAYS]
        total = by[(m, ALL_DAYS)]
        for field in ("internal_milli", "external_milli", "idle_milli"):
            assert sum(getattr(r, field) for r in day_rows) == getattr(total, field)
        # usage-driven revenue: the model's days carry its total (exact up to Decimal context)
        assert abs(sum(r.external_revenue for r in day_rows) - total.external_revenue) < TINY
    for d in days:
        assert by[(FLEET, d)].capacity_milli == sum(
            by[(m, d)].capacity_milli for m in models if (m, d) in by
        )
    # revenue: the fleet's total is every line's sum, whatever could take it
    assert abs(by[(FLEET, ALL_DAYS)].external_revenue - sum(ln.amount for ln in lines)) < TINY
