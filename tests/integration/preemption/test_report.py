"""The report's preemptions section: per GPU model and preempted tenant, the count of records
and the GPU-hours lost, by hand; a record matching no allocation is warned about, not counted;
records outside the period are left out. Both outputs (terminal, HTML) show it."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from analytics.page import render_html
from analytics.preemptions import PREEMPTIONS_TITLE
from analytics.report import build_report
from analytics.summary import print_summary
from schemas.preemption import PREEMPTION_COLUMNS, PreemptionReported
from tests.ledger_rows import LedgerRow, insert_ledger

pytestmark = pytest.mark.integration

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
FULL = (1 << 60) - 1


def minutes(
    tenant: str, job: str, gpu: str, model: str, n: int, share: int = 1000
) -> list[LedgerRow]:
    return [
        LedgerRow(T0 + timedelta(minutes=i), tenant, job, gpu, model, FULL, share_milli=share)
        for i in range(n)
    ]


def record(job: str, gpu: str, at: datetime, **kw: Any) -> list[object]:
    doc = {"tenant": "hooli", "job": job, "gpu_uuid": gpu, "share_milli": 1000}
    doc |= {"at": int(at.timestamp()), "preempted_by": "research", **kw}
    return PreemptionReported.model_validate(doc, context={"now": 4e9}).row()


def test_the_report_counts_preemptions_and_lost_gpu_hours(clickhouse: Any, tmp_path: Path) -> None:
    # given: hooli's spot job s1 on two H100s for 60 min, preempted on both at 10:45 with a
    # checkpoint at 10:30 on g0 and none on g1; s2 on an A100 at 500 milli for 30 min,
    # preempted at 10:20; a record naming no allocation; one in April (another period)
    insert_ledger(
        clickhouse,
        minutes("hooli", "s1", "g0", H100, 60)
        + minutes("hooli", "s1", "g1", H100, 60)
        + minutes("hooli", "s2", "g2", A100, 30, share=500)
        + minutes("acme", "x", "g3", A100, 60),
    )
    at = T0 + timedelta(minutes=45)
    rows = [
        record("s1", "g0", at, checkpoint_at=int((T0 + timedelta(minutes=30)).timestamp())),
        record("s1", "g1", at),
        record("s2", "g2", T0 + timedelta(minutes=20), share_milli=500),
        record("ghost", "g9", at),
        record("s1", "g0", datetime(2025, 4, 2, tzinfo=UTC)),
    ]
    clickhouse.insert("preemptions", rows, column_names=PREEMPTION_COLUMNS)
    book = tmp_path / "book.toml"
    book.write_text('[tenants.hooli]\nname = "H"\n[tenants.research]\nkind = "internal"\n')

    # when
    report = build_report(clickhouse, "2025-03", pricebook_path=book)

    # then: H100 lost 15 min (g0, from the checkpoint) + 45 min (g1, from the start) = 1 GPU-h;
    # A100 lost 20 min at half a GPU = 1/6 GPU-h; the ghost is counted but matches nothing
    got = {
        (p.gpu_model, p.tenant): (p.preemptions, p.lost_milli, p.unmatched)
        for p in report.preemptions
    }
    assert got == {
        (H100, "hooli"): (2, 3_600_000, 0),
        (A100, "hooli"): (1, 20 * 60 * 500, 0),
        ("", "hooli"): (1, 0, 1),
    }
    assert any("1 preemption record(s) match no allocation" in w for w in report.warnings)
    page = render_html(report)
    assert PREEMPTIONS_TITLE in page and "(no ledger match)" in page and "1.000" in page
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200))
    text = out.getvalue()
    assert PREEMPTIONS_TITLE in text and "0.167" in text and "1.167" in text


def test_no_preemptions_no_section(clickhouse: Any, tmp_path: Path) -> None:
    insert_ledger(clickhouse, minutes("acme", "x", "g3", A100, 10))
    book = tmp_path / "book.toml"
    book.write_text('[tenants.acme]\nname = "A"\n')
    report = build_report(clickhouse, "2025-03", pricebook_path=book)
    assert report.preemptions == ()
    assert PREEMPTIONS_TITLE not in render_html(report)
