"""Property: billing's rating equals the independent reference model (tests/unit/billing/
reference.py) on random ledgers and random price books, line by line and in total."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.pricebook import parse_pricebook
from billing.rating import UsageRow
from tests.unit.billing import reference
from tests.unit.billing.builders import A100, H100, JAN, rate

MIG = f"{A100} MIG 3g.40gb"


def dec(places: int, lo: int, hi: int) -> st.SearchStrategy[str]:
    """A decimal string with at most ``places`` decimals in [lo, hi] units of 10**-places."""
    return st.integers(lo, hi).map(lambda n: str(Decimal(n).scaleb(-places)))


def jan(d: int) -> str:
    return f"2026-01-{d:02d}"


@st.composite
def books(draw: Any) -> dict[str, Any]:
    r = [
        {
            "gpu_model": m,
            "billing_class": k,
            "price_per_gpu_hour": draw(dec(6, 100_000, 9_000_000)),
            "effective_from": "2025-01-01",
        }
        for m in (H100, A100)
        for k in ("on_demand", "spot", "reserved")
    ]
    if draw(st.booleans()):  # a list price change inside the month
        r.append(
            {
                "gpu_model": H100,
                "billing_class": "on_demand",
                "price_per_gpu_hour": draw(dec(6, 100_000, 9_000_000)),
                "effective_from": jan(draw(st.integers(2, 28))),
            }
        )
    tiers = draw(
        st.sampled_from(
            [
                [],
                [
                    {"up_to_gpu_hours": 1, "discount_pct": 0},
                    {"discount_pct": draw(dec(4, 1, 500_000))},
                ],
            ]
        )
    )
    c: dict[str, Any] = {
        "name": "T",
        "plan": "p",
        "default_class": draw(st.sampled_from(["on_demand", "reserved"])),
    }
    if draw(st.booleans()):
        c["rates"] = [
            {
                "gpu_model": H100,
                "billing_class": "on_demand",
                "price_per_gpu_hour": draw(dec(6, 100_000, 9_000_000)),
                "effective_from": jan(draw(st.integers(1, 28))),
            }
        ]
    if draw(st.booleans()):
        c["discount_pct"] = draw(dec(4, 1, 300_000))
    if draw(st.booleans()):
        c["starts_on"] = draw(st.sampled_from(["2025-06-01", jan(draw(st.integers(2, 31)))]))
        if draw(st.booleans()):
            c["commitments"] = [
                {
                    "gpu_model": A100,
                    "gpu_hours_per_month": draw(st.sampled_from(["0.5", "1", "2.25"])),
                    "rate": draw(dec(6, 100_000, 5_000_000)),
                    "overage_rate": draw(dec(6, 100_000, 5_000_000)),
                }
            ]
        if draw(st.booleans()):
            c["minimum_monthly_spend"] = draw(dec(2, 1, 2_000))
    if draw(st.booleans()):
        c["energy"] = {"pue": draw(dec(2, 100, 200)), "price_per_kwh": draw(dec(6, 1, 500_000))}
    c["credits"] = [
        {
            "id": f"C{i}",
            "amount": draw(dec(2, 1, 500)),
            "valid_from": draw(st.sampled_from(["2025-01-01", "2026-01-10"])),
            **draw(st.sampled_from([{}, {"valid_until": "2026-06-30"}])),
            **draw(
                st.sampled_from(
                    [
                        {},
                        {"gpu_model": A100},
                        {"billing_class": "spot"},
                        {"gpu_model": H100, "billing_class": "on_demand"},
                    ]
                )
            ),
        }
        for i in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        c["tax_rate"] = draw(dec(4, 0, 2_500))
        if draw(st.booleans()):
            c["tax_rates"] = [
                {
                    "rate": draw(dec(4, 0, 2_500)),
                    "effective_from": draw(st.sampled_from(["2026-01-31", "2026-02-01"])),
                }
            ]
    return {
        "currency": "USD",
        "issuer": {"name": "I"},
        "rates": r,
        "plans": {
            "p": {
                "minimum_seconds": draw(st.sampled_from([0, 60])),
                "increment_seconds": draw(st.sampled_from([1, 60])),
                "tiers": tiers,
            }
        },
        "tenants": {"t": c},
    }


rows_st = st.lists(
    st.builds(
        lambda tenant, job, model, klass, minute, secs, mj: reference.Row(
            tenant,
            job,
            klass,
            model,
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
            secs,
            mj,
        ),
        st.sampled_from(["t", "t", "__idle__"]),
        st.sampled_from(["j1", "j2", "j3"]),
        st.sampled_from([H100, A100, MIG]),
        st.sampled_from(["", "on_demand", "spot", "reserved"]),
        st.integers(0, 31 * 1440 - 1),
        st.integers(1, 60),
        st.integers(0, 10**9),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), rows_st)
def test_rating_matches_the_reference_model(raw: dict[str, Any], rows: list[reference.Row]) -> None:
    book = parse_pricebook(raw, source="property")
    usage = [
        UsageRow(r.tenant, r.job, r.klass, r.model, "g0", r.minute, r.seconds, r.energy_mj)
        for r in rows
    ]
    inv = rate(book, usage)
    got = sorted(
        (ln.kind, ln.gpu_model, ln.billing_class, ln.unit_price, ln.seconds, ln.amount)
        for ln in inv.lines
    )
    want = sorted(reference.rate(raw, "t", 2026, 1, rows))
    assert got == want
    assert inv.total == sum((x[5] for x in want), Decimal(0))
    assert JAN.first_day.month == 1


shared_rows_st = st.lists(
    st.builds(
        lambda tenant, job, model, klass, minute, secs, mj, share: reference.Row(
            tenant,
            job,
            klass,
            model,
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
            secs,
            mj,
            share,
        ),
        st.sampled_from(["t", "t", "__idle__"]),
        st.sampled_from(["j1", "j2", "j3"]),
        st.sampled_from([H100, A100, MIG]),
        st.sampled_from(["", "on_demand", "spot", "reserved"]),
        st.integers(0, 31 * 1440 - 1),
        st.integers(1, 60),
        st.integers(0, 10**9),
        st.one_of(st.just(1000), st.integers(1, 999)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), shared_rows_st)
def test_shared_usage_rating_matches_the_reference_model(
    raw: dict[str, Any], rows: list[reference.Row]
) -> None:
    # Shares (contract v2): each row holds its seconds at a share in milli-GPUs; the reference
    # counts milli-GPU-seconds from the README's rules alone.
    book = parse_pricebook(raw, source="property")
    usage = [
        UsageRow(
            r.tenant,
            r.job,
            r.klass,
            r.model,
            "g0",
            r.minute,
            r.seconds,
            r.energy_mj,
            milli=r.seconds * r.share,
        )
        for r in rows
    ]
    inv = rate(book, usage)
    got = sorted(
        (ln.kind, ln.gpu_model, ln.billing_class, ln.unit_price, ln.gpu_milli_seconds, ln.amount)
        for ln in inv.lines
    )
    want = sorted(reference.rate_milli(raw, "t", 2026, 1, rows))
    assert got == want
    assert inv.total == sum((x[5] for x in want), Decimal(0))
    # the document's seconds are the whole part of the exact milli-GPU-seconds
    assert sorted((ln.kind, ln.seconds) for ln in inv.lines) == sorted(
        (k, s) for k, _, _, _, s, _ in reference.rate(raw, "t", 2026, 1, rows)
    )
