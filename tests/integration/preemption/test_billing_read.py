"""Billing's read of the preemption records: the jobs with a record whose ``at`` lies in the
period [start, end), per tenant; a redelivered record counts once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.period import Period
from billing.preemptions import PreemptionRecords
from schemas.preemption import PREEMPTION_COLUMNS, PreemptionReported

pytestmark = pytest.mark.integration

JAN_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
FEB_START = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


def rec(tenant: str, job: str, at: int, gpu: str = "GPU-1") -> list[object]:
    doc = {"tenant": tenant, "job": job, "gpu_uuid": gpu, "share_milli": 1000, "at": at}
    return PreemptionReported.model_validate(doc, context={"now": FEB_START * 2}).row()


def test_preempted_jobs_of_a_period(clickhouse) -> None:  # type: ignore[no-untyped-def]
    rows = [
        rec("hooli", "first-second", JAN_START),
        rec("hooli", "last-second", FEB_START - 1),
        rec("hooli", "last-second", FEB_START - 1),  # redelivered
        rec("hooli", "last-second", FEB_START - 100, gpu="GPU-2"),  # another device
        rec("hooli", "december", JAN_START - 1),
        rec("hooli", "february", FEB_START),
        rec("acme", "a1", JAN_START + 86_400),
    ]
    clickhouse.insert("preemptions", rows, column_names=PREEMPTION_COLUMNS)
    records = PreemptionRecords(clickhouse)
    assert records.preempted_jobs(Period(2026, 1)) == {
        "hooli": frozenset({"first-second", "last-second"}),
        "acme": frozenset({"a1"}),
    }
    assert records.preempted_jobs(Period(2026, 1), tenants=["acme", "nobody"]) == {
        "acme": frozenset({"a1"})
    }
    assert records.preempted_jobs(Period(2026, 2)) == {"hooli": frozenset({"february"})}
