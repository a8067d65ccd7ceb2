"""The preemption rule through the whole billing cycle: run, finalize, reconcile, and a
preemption recorded after finalization becoming a credit on the next invoice.

By hand: H100 on demand at 3.60/GPU-hour is 0.001 per GPU-second; the plan bills a job at least
60 s, except a preempted job (``preempted_minimum`` waived by default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.period import Period
from billing.reconcile import reconcile_period
from billing.service import finalize_period, run_period
from billing.store import BillingStore
from schemas.preemption import PREEMPTION_COLUMNS, PreemptionReported
from tests.ledger_rows import COLUMNS, LedgerRow, insert_ledger
from tests.unit.billing.builders import H100, make_book

pytestmark = pytest.mark.integration

JAN, FEB = Period(2026, 1), Period(2026, 2)
TWENTY = (1 << 20) - 1  # seconds 0..19 of a minute
BOOK = make_book(
    plans={"min60": {"minimum_seconds": 60, "increment_seconds": 1}},
    tenants={"t": {"name": "Tenant T", "plan": "min60"}},
)


def preempt(client: Any, job: str, gpu: str, at: datetime) -> None:
    doc = {
        "tenant": "t",
        "job": job,
        "gpu_uuid": gpu,
        "share_milli": 1000,
        "at": int(at.timestamp()),
    }
    rec = PreemptionReported.model_validate(doc, context={"now": at.timestamp()})
    client.insert("preemptions", [rec.row()], column_names=PREEMPTION_COLUMNS)


def insert_written_yesterday(client: Any, rows: list[LedgerRow]) -> None:
    """Ledger rows written a day ago: only what is stored after the run can make it late."""
    yesterday = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    client.insert(
        "usage_minutely",
        [r.values() + [yesterday] for r in rows],
        column_names=[*COLUMNS, "updated_at"],
    )


def job_of(invoice: Any, job: str) -> Any:
    return next(j for j in invoice.jobs if j.job == job)


def test_a_preempted_job_is_billed_without_its_minimum_and_reconciles(clickhouse: Any) -> None:
    # given two 20 s jobs in January, one of them preempted at its 21st second
    ten, eleven = datetime(2026, 1, 5, 10, 0), datetime(2026, 1, 5, 11, 0)
    insert_written_yesterday(
        clickhouse,
        [
            LedgerRow(ten, "t", "pre", "g0", H100, TWENTY),
            LedgerRow(eleven, "t", "full", "g1", H100, TWENTY),
        ],
    )
    preempt(clickhouse, "pre", "g0", datetime(2026, 1, 5, 10, 0, 20, tzinfo=UTC))
    # when the period is run and finalized
    run_period(clickhouse, BOOK, JAN)
    (jan,) = finalize_period(clickhouse, JAN)
    # then the preempted job is billed its 20 s and the other its 60 s minimum: 80 s = 0.08
    assert jan.total == Decimal("0.08")
    assert job_of(jan, "pre").preempted and not job_of(jan, "full").preempted
    # and reconcile re-rates it the same way
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.lines()

    # when the other job's preemption is recorded only after January was finalized
    preempt(clickhouse, "full", "g1", datetime(2026, 1, 5, 11, 0, 20, tzinfo=UTC))
    # then reconcile says January now bills 40 s too much ...
    stale = reconcile_period(clickhouse, JAN)
    assert not stale.ok and "-0.04 USD" in stale.differences[0], stale.lines()
    # ... and February's run credits it back
    run_period(clickhouse, BOOK, FEB)
    feb = BillingStore(clickhouse).invoice("t", FEB)
    assert feb is not None
    adj = [ln for ln in feb.invoice.lines if ln.kind == "adjustment"]
    assert [(ln.reference, str(ln.amount)) for ln in adj] == [(jan.number, "-0.04")]
    report = reconcile_period(clickhouse, JAN)
    assert report.ok and report.pending, report.lines()


def test_a_plan_that_charges_the_minimum_ignores_the_preemption(clickhouse: Any) -> None:
    book = make_book(
        plans={"strict": {"minimum_seconds": 60, "preempted_minimum": "charged"}},
        tenants={"t": {"name": "Tenant T", "plan": "strict"}},
    )
    insert_ledger(
        clickhouse, [LedgerRow(datetime(2026, 1, 5, 10, 0), "t", "pre", "g0", H100, TWENTY)]
    )
    preempt(clickhouse, "pre", "g0", datetime(2026, 1, 5, 10, 0, 20, tzinfo=UTC))
    run_period(clickhouse, book, JAN)
    (jan,) = finalize_period(clickhouse, JAN)
    assert jan.total == Decimal("0.06")
    assert reconcile_period(clickhouse, JAN).ok
