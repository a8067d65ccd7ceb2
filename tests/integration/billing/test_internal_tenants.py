"""Internal tenants (``kind = "internal"``): no invoice, no number; their usage is showback.

Expected values are computed by hand: 3.60 per H100 GPU-hour is 0.001 per GPU-second, and one
GPU-hour is 3,600,000 milli-GPU-seconds (seconds x share)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.errors import BillingError
from billing.period import Period
from billing.reconcile import reconcile_period
from billing.service import finalize_period, reconcile_with_showback, run_period
from billing.showback import coverage_difference
from tests.integration.billing.shared_ledger import insert_shared
from tests.ledger_rows import LedgerRow
from tests.unit.billing.builders import A100, H100, make_book

pytestmark = pytest.mark.integration

JAN, FEB = Period(2026, 1), Period(2026, 2)
FULL = (1 << 60) - 1


def book(lab_kind: str = "internal") -> Any:
    return make_book(
        tenants={
            "t": {"name": "Tenant T", "plan": "flat"},
            "lab": {"name": "Research lab", "plan": "flat", "kind": lab_kind},
        }
    )


def rows(
    tenant: str,
    job: str,
    gpu: str,
    share: int,
    *,
    model: str = H100,
    minutes: int = 60,
    day: int = 5,
) -> list[tuple[LedgerRow, int]]:
    t0 = datetime(2026, 1, day, 10, 0)
    return [
        (LedgerRow(t0 + timedelta(minutes=i), tenant, job, gpu, model, FULL), share)
        for i in range(minutes)
    ]


def ledger(client: Any) -> None:
    insert_shared(
        client,
        rows("t", "a", "g0", 600)  # t: 0.6 GPU-h of H100
        + rows("lab", "r", "g0", 300)  # lab: 0.3 GPU-h of H100
        + rows("__idle__", "", "g0", 100)
        + rows("t", "c", "g1", 1000)  # t: 1 GPU-h of H100
        + rows("lab", "s", "g2", 1000, model=A100, minutes=30),  # lab: 0.5 GPU-h of A100
    )


def test_internal_tenant_gets_no_invoice_and_its_usage_is_shown_back(clickhouse: Any) -> None:
    # given a ledger shared by an external tenant t and an internal tenant lab
    ledger(clickhouse)
    # when the period is run
    run = run_period(clickhouse, book(), JAN)
    # then only t is invoiced: (0.6 + 1.0) GPU-h x 3.60 = 5.76
    assert [i.tenant for i in run.drafted] == ["t"]
    (t_line,) = run.drafted[0].lines
    assert (t_line.quantity, t_line.amount) == (Decimal("1.600000"), Decimal("5.76"))
    assert run.drafted[0].total == Decimal("5.76")
    # and lab's usage is stated per GPU model, share-weighted, not invoiced
    shown = [(s.tenant, s.gpu_model, s.gpu_milli_seconds, s.gpu_hours) for s in run.showback]
    assert shown == [
        ("lab", A100, 1000 * 1800, Decimal("0.5")),
        ("lab", H100, 300 * 3600, Decimal("0.3")),
    ]
    stored = clickhouse.query("SELECT DISTINCT tenant FROM invoices FINAL").result_rows
    assert stored == [("t",)]


def test_external_invoice_is_the_same_whether_or_not_another_tenant_is_internal(
    clickhouse: Any,
) -> None:
    ledger(clickhouse)
    as_external = {i.tenant: i for i in run_period(clickhouse, book("external"), JAN).drafted}
    # lab as an external tenant: 0.3 + 0.5 GPU-h; H100 0.3 x 3.60 = 1.08, A100 0.5 x 1.80 = 0.90
    assert as_external["lab"].total == Decimal("1.98")
    t_doc = as_external["t"].canonical_json()
    # (lab now has a draft: marking it internal for the same period is refused, nothing written)
    with pytest.raises(BillingError, match="lab are internal in the price book but have a draft"):
        run_period(clickhouse, book(), JAN)
    docs = clickhouse.query(
        "SELECT tenant, document FROM invoices FINAL ORDER BY tenant"
    ).result_rows
    assert [t for t, _ in docs] == ["lab", "t"]
    assert dict(docs)["t"].encode() == t_doc


def test_finalize_numbers_external_tenants_only_and_reconcile_passes(clickhouse: Any) -> None:
    ledger(clickhouse)
    b = book()
    run_period(clickhouse, b, JAN)
    # without the book's internal tenants, finalize refuses: lab has usage and no invoice
    with pytest.raises(BillingError, match="tenants lab have usage but no draft"):
        finalize_period(clickhouse, JAN)
    (inv,) = finalize_period(clickhouse, JAN, internal=b.internal_tenants)
    assert (inv.tenant, inv.number) == ("t", "GM-2026-000001")  # gapless: lab takes no number
    # reconcile: lab's usage without an invoice is showback, not a difference
    report, shown = reconcile_with_showback(clickhouse, JAN, b.internal_tenants)
    assert report.ok, report.differences
    assert shown == ["lab"]
    assert report.checked == ["GM-2026-000001"]
    # conservation still counts lab's share as allocated: g0 = (600 + 300 + 100) x 3600
    g0 = next(g for g in report.gpus if g.gpu == "g0")
    assert (g0.billed, g0.idle, g0.observed) == (3_240_000, 360_000, 3600)
    # the plain reconcile reports exactly the difference the showback drops
    plain = reconcile_period(clickhouse, JAN)
    assert plain.differences == [coverage_difference("lab", JAN)]


def test_internal_late_usage_in_a_closed_period_is_not_carried_forward(clickhouse: Any) -> None:
    ledger(clickhouse)
    b = book()
    run_period(clickhouse, b, JAN)
    finalize_period(clickhouse, JAN, internal=b.internal_tenants)
    # given late usage of both tenants in the closed January
    insert_shared(
        clickhouse, rows("lab", "late", "g3", 1000, day=20) + rows("t", "late", "g4", 500, day=20)
    )
    # when February is run
    run = run_period(clickhouse, b, FEB)
    # then t's late 0.5 GPU-h (x 3.60 = 1.80) corrects its January invoice; lab's late usage,
    # which would be carried forward (no January invoice), is withheld: lab gets no invoice
    assert [i.tenant for i in run.drafted] == ["t"]
    (adj,) = run.drafted[0].lines
    assert (adj.kind, adj.ref_period, adj.reference, adj.amount) == (
        "adjustment",
        "2026-01",
        "GM-2026-000001",
        Decimal("1.80"),
    )
    assert run.showback == []  # lab used nothing in February
