"""Shared GPUs in the views and the report: utilization counts shares (allocated
milli-GPU-seconds / 1000 x observed GPU-seconds), the idle remainder of a shared GPU is idle,
and the report shows how full shared GPUs are packed. Truth by hand in the comments.

Ledger (2025-03-01 10:00-11:00 UTC, H100): g0 shared by t/a at 600 and u/b at 300 milli, the
idle remainder at 100; g1 a whole GPU for t/c. 7,200 GPU-seconds observed in all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from analytics.economics import compute
from analytics.ledger_facts import load_facts, parse_period
from analytics.page import render_html
from analytics.summary import print_summary
from tests.integration.analytics.scenario import MODEL, register
from tests.integration.billing.shared_ledger import insert_shared
from tests.ledger_rows import LedgerRow

pytestmark = pytest.mark.integration

FULL = (1 << 60) - 1
T0 = datetime(2025, 3, 1, 10, 0)


def hour(tenant: str, job: str, gpu: str, share: int) -> list[tuple[LedgerRow, int]]:
    return [
        (LedgerRow(T0 + timedelta(minutes=i), tenant, job, gpu, MODEL, FULL), share)
        for i in range(60)
    ]


def shared_ledger(client: Any) -> None:
    insert_shared(
        client,
        hour("t", "a", "g0", 600)
        + hour("u", "b", "g0", 300)
        + hour("__idle__", "", "g0", 100)
        + hour("t", "c", "g1", 1000),
    )


def test_views_count_shares(clickhouse: Any) -> None:
    shared_ledger(clickhouse)
    ((avail, alloc, idle, shared, packed, util, shared_h, packed_pct),) = clickhouse.query(
        "SELECT available_milli_seconds, allocated_milli_seconds, idle_milli_seconds, "
        "shared_milli_seconds, shared_allocated_milli_seconds, utilization_pct, "
        "shared_gpu_hours, shared_packed_pct FROM utilization_daily"
    ).result_rows
    # observed 2 GPUs x 3600 s; allocated 0.9 x 3600 + 3600 = 6840 GPU-s; idle 0.1 x 3600
    assert (avail, alloc, idle) == (7_200_000, 6_840_000, 360_000)
    # g0 was split for its whole hour: 3600 GPU-s shared, 90% of it packed
    assert (shared, packed, shared_h, packed_pct) == (3_600_000, 3_240_000, 1.0, 90.0)
    assert util == 95.0  # 6840 / 7200
    ((idle_s, idle_h),) = clickhouse.query(
        "SELECT idle_seconds, idle_gpu_hours FROM idle_capacity_daily"
    ).result_rows
    assert (idle_s, idle_h) == (360.0, 0.1)
    rows = clickhouse.query(
        "SELECT job, gpu_seconds, gpu_milli_seconds, gpu_hours FROM "
        "tenant_usage_hourly(tenant = 't') ORDER BY job"
    ).result_rows
    # gpu_seconds: seconds held whatever the share; gpu_hours: what the tenant is billed for
    assert rows == [("a", 3600, 2_160_000, 0.6), ("c", 3600, 3_600_000, 1.0)]


def test_report_shows_how_full_shared_gpus_are_packed(clickhouse: Any) -> None:
    from rich.console import Console

    shared_ledger(clickhouse)
    report = compute(
        load_facts(clickhouse, parse_period("2025-03-01")),
        register(),
        now=datetime(2025, 3, 2, tzinfo=UTC),
    )
    f = report.fleet
    assert f.utilization == Decimal("0.95")  # 6,840,000 / 7,200,000
    assert (f.allocated_s, f.idle_s, f.available_s) == (6840, 360, 7200)
    model, fleet = report.sharing
    assert model.key == MODEL and fleet.key == "fleet"
    assert (model.gpus, model.shared_h, model.packed_h, model.remainder_h) == (
        1,
        Decimal(1),
        Decimal("0.9"),
        Decimal("0.1"),
    )
    assert (model.packed, model.shared_fraction) == (Decimal("0.9"), Decimal("0.5"))
    # tenants are ranked by share-weighted GPU-hours: t 1.6, u 0.3
    assert [(t.tenant, t.allocated_h) for t in report.tenants] == [
        ("t", Decimal("1.6")),
        ("u", Decimal("0.3")),
    ]
    console = Console(record=True, width=250)
    print_summary(report, console)
    text = console.export_text()
    assert "Shared GPUs: how full they are packed" in text and "90.0%" in text
    html = render_html(report)
    assert 'id="chart-sharing"' in html and "<h2>Shared GPUs</h2>" in html


def test_a_fleet_without_shares_shows_no_sharing(clickhouse: Any) -> None:
    insert_shared(clickhouse, hour("t", "c", "g1", 1000))
    report = compute(load_facts(clickhouse, parse_period("2025-03-01")), register())
    assert report.sharing == ()
    assert 'id="chart-sharing"' not in render_html(report)
