"""Billing against the embedded ClickHouse: run, finalize, late usage, reconcile, export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.errors import InvoiceFinalizedError
from billing.period import Period
from billing.reconcile import LEDGER, RAW, reconcile_period
from billing.service import finalize_period, run_period
from billing.store import BillingStore
from tests.unit.billing.builders import A100, H100, make_book

pytestmark = pytest.mark.integration

JAN, FEB = Period(2026, 1), Period(2026, 2)
FULL = (1 << 60) - 1
COLS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "gpu_model",
    "node_id",
    "seconds_mask",
    "gpu_seconds",
    "energy_mj",
    "version",
]
BOOK = make_book(
    tenants={
        "t": {"name": "Tenant T", "plan": "flat", "tax_rate": "0.10"},
        "u": {
            "name": "Umbrella",
            "plan": "flat",
            "default_class": "reserved",
            "starts_on": "2025-01-01",
            "commitments": [
                {
                    "gpu_model": A100,
                    "gpu_hours_per_month": 1,
                    "rate": "1.00",
                    "overage_rate": "2.00",
                }
            ],
        },
    }
)
DEMO_BOOK = Path(__file__).resolve().parents[3] / "billing" / "pricebook.demo.toml"


#: The ledger that merges by union (migration 0003): masks and per-second readings are stored,
#: gpu_seconds / energy_mj are ALIAS columns computed from them.
UNION_COLS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "gpu_model",
    "node_id",
    "claimed_mask",
    "released_mask",
    "energy_map",
    "version",
]


def insert(
    client: Any,
    tenant: str,
    job: str,
    start: str,
    count: int,
    *,
    gpu: str = "g0",
    model: str = H100,
    mask: int = FULL,
    klass: str = "",
) -> None:
    """``count`` full minutes of ledger rows, written directly into usage_minutely (1000 mJ
    per counted second), in whichever ledger layout the migrations created."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    secs = bin(mask).count("1")
    union = client.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'usage_minutely' AND name = 'claimed_mask'"
    ).result_rows[0][0]
    if union:
        first = (mask & -mask).bit_length() - 1  # the energy is read at a counted second
        client.insert(
            "usage_minutely",
            [
                [
                    t0 + timedelta(minutes=i),
                    tenant,
                    job,
                    klass,
                    gpu,
                    model,
                    "n1",
                    mask,
                    0,
                    ([first], [secs * 1000]),
                    secs,
                ]
                for i in range(count)
            ],
            column_names=UNION_COLS,
        )
        return
    client.insert(
        "usage_minutely",
        [
            [
                t0 + timedelta(minutes=i),
                tenant,
                job,
                klass,
                gpu,
                model,
                "n1",
                mask,
                secs,
                secs * 1000,
                secs,
            ]
            for i in range(count)
        ],
        column_names=COLS,
    )


def test_late_usage_becomes_an_adjustment_and_reconciles(clickhouse: Any) -> None:
    # Given January: t ran 60 minutes on H100 (1 GPU-h x 3.60 = 3.60, tax 10% -> 3.96)
    insert(clickhouse, "t", "train", "2026-01-10T00:00", 60)
    insert(clickhouse, "__idle__", "", "2026-01-10T01:00", 30)
    run_period(clickhouse, BOOK, JAN)
    (jan,) = [i for i in finalize_period(clickhouse, JAN) if i.tenant == "t"]
    assert jan.total == Decimal("3.96") and jan.number.endswith("-000001")
    assert reconcile_period(clickhouse, JAN).ok

    # When 30 more minutes of January usage arrive after finalization
    insert(clickhouse, "t", "train", "2026-01-31T23:00", 30, gpu="g1")
    stale = reconcile_period(clickhouse, JAN)
    assert not stale.ok and "+1.80 USD (+1800 GPU-s)" in stale.differences[0]
    # ...and the finalized invoice refuses a re-run
    with pytest.raises(InvoiceFinalizedError, match="is finalized and immutable"):
        BillingStore(clickhouse).save(jan, created_at=datetime.now(UTC))
    assert run_period(clickhouse, BOOK, JAN).refused[0][0] == "t"

    # Then February's invoice (no February usage) carries an adjustment line for it
    insert(clickhouse, "t", "eval", "2026-02-02T00:00", 10)  # 600 s x 0.001 = 0.60
    run_period(clickhouse, BOOK, FEB)
    feb = BillingStore(clickhouse).invoice("t", FEB)
    assert feb is not None
    adj = [ln for ln in feb.invoice.lines if ln.kind == "adjustment"]
    assert [
        (ln.reference, ln.ref_period, ln.ref_kind, ln.seconds, str(ln.amount)) for ln in adj
    ] == [(jan.number, "2026-01", "usage", 1800, "1.80")]
    # 0.60 + 1.80 = 2.40; tax 0.24; total 2.64
    assert (feb.invoice.subtotal, feb.invoice.total) == (Decimal("2.40"), Decimal("2.64"))
    # The January invoice was not touched
    assert (
        BillingStore(clickhouse).invoice("t", JAN).invoice.canonical_json() == jan.canonical_json()
    )

    # And reconcile is clean (the adjustment is pending on February's draft) ...
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.lines()
    assert report.pending and jan.number in report.pending[0]
    # ... a re-run of February neither drops nor duplicates the adjustment
    run_period(clickhouse, BOOK, FEB)
    feb2 = BillingStore(clickhouse).invoice("t", FEB)
    assert feb2.invoice.canonical_json() == feb.invoice.canonical_json()
    finalize_period(clickhouse, FEB)
    assert reconcile_period(clickhouse, JAN).ok and reconcile_period(clickhouse, FEB).ok
    # A later month has nothing left to adjust
    assert not [
        ln
        for i in run_period(clickhouse, BOOK, Period(2026, 3)).drafted
        for ln in i.lines
        if ln.kind == "adjustment"
    ]


def test_commitment_tenant_is_invoiced_without_usage_and_numbers_are_gapless(
    clickhouse: Any,
) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 5)
    run_period(clickhouse, BOOK, JAN)
    jan = finalize_period(clickhouse, JAN)
    assert [(i.tenant, i.total) for i in jan] == [("t", Decimal("0.33")), ("u", Decimal("1.00"))]
    insert(clickhouse, "t", "b", "2026-02-03T00:00", 5)
    run_period(clickhouse, BOOK, FEB)
    feb = finalize_period(clickhouse, FEB)
    year = jan[0].issued_on.year  # numbered by issue year
    assert [i.number for i in jan + feb] == [f"GM-{year}-{n:06d}" for n in (1, 2, 3, 4)]
    assert finalize_period(clickhouse, FEB) == []  # nothing left to finalize


def test_draft_rerun_replaces_lines_exactly(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 5)
    insert(clickhouse, "t", "b", "2026-01-03T00:00", 5, model=A100, gpu="g9")
    run_period(clickhouse, BOOK, JAN)
    # With a price book that bills t without tax, the draft shrinks from 3 lines to 2
    smaller = make_book(tenants={"t": {"plan": "flat"}})
    run_period(clickhouse, smaller, JAN)
    stored = clickhouse.query(
        "SELECT line_no, kind FROM invoice_lines FINAL WHERE tenant = 't' ORDER BY line_no"
    ).result_rows
    assert stored == [(1, "usage"), (2, "usage")]
    (row,) = clickhouse.query("SELECT count() FROM invoices FINAL WHERE tenant='t'").result_rows
    assert row[0] == 1


def test_conservation_detects_a_second_billed_twice(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 2)
    insert(clickhouse, "__idle__", "", "2026-01-03T00:01", 1, mask=0b1)  # overlaps second 0
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert not report.ok
    assert report.gpus[0].source == LEDGER
    assert (
        "GPU g0: billed 120 + idle 1 = 121 GPU-seconds, but 120 observed" in report.differences[-1]
    )


def test_conservation_uses_the_raw_archive_when_it_covers_the_period(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 1)
    t0 = datetime(2026, 1, 3, tzinfo=UTC)
    clickhouse.insert(
        "usage_seconds",
        [
            [
                t0 + timedelta(seconds=s),
                "g0",
                H100,
                "n1",
                "t",
                "a",
                "",
                f"00000000-0000-0000-0000-{s:012d}",
            ]
            for s in range(60)
        ],
        column_names=[
            "ts",
            "gpu_uuid",
            "gpu_model",
            "node_id",
            "tenant",
            "job",
            "billing_class",
            "event_id",
        ],
    )
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.lines()
    assert report.gpus[0].source == RAW and report.gpus[0].observed == 60
