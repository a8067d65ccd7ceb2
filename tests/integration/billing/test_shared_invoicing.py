"""Shared GPUs billed end to end against the embedded ClickHouse: ledger rows at shares ->
run -> invoice lines -> finalize -> reconcile. Truth is computed by hand in the comments.

Ledger (January 2026, H100 on-demand 3.60 per GPU-hour = 0.000001 per milli-GPU-second):
- g0, one hour, shared: t/a at 600 milli, u/b at 300 milli, the idle remainder at 100 milli;
- g1, one hour, a whole GPU: t/c.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.period import Period
from billing.reconcile import LEDGER, RAW, reconcile_period
from billing.service import finalize_period, run_period
from tests.integration.billing.shared_ledger import insert_shared
from tests.ledger_rows import LedgerRow
from tests.unit.billing.builders import H100, make_book

pytestmark = pytest.mark.integration

JAN = Period(2026, 1)
FULL = (1 << 60) - 1
BOOK = make_book(
    tenants={
        "t": {"name": "Tenant T", "plan": "flat"},
        "u": {"name": "Umbrella", "plan": "flat"},
    }
)


def hour(tenant: str, job: str, gpu: str, share: int, *, minutes: int = 60) -> list[tuple]:
    t0 = datetime(2026, 1, 5, 10, 0)
    return [
        (LedgerRow(t0 + timedelta(minutes=i), tenant, job, gpu, H100, FULL), share)
        for i in range(minutes)
    ]


def shared_ledger(client: Any) -> None:
    insert_shared(
        client,
        hour("t", "a", "g0", 600)
        + hour("u", "b", "g0", 300)
        + hour("__idle__", "", "g0", 100)
        + hour("t", "c", "g1", 1000),
    )


def test_shares_are_rated_exactly_and_the_idle_remainder_is_not_billed(clickhouse: Any) -> None:
    shared_ledger(clickhouse)
    run = run_period(clickhouse, BOOK, JAN)
    by_tenant = {i.tenant: i for i in run.drafted}
    assert sorted(by_tenant) == ["t", "u"]  # the idle remainder is nobody's invoice
    # t: 0.6 GPU-h on g0 + 1 GPU-h on g1 = 1.6 GPU-h x 3.60 = 5.76 (5,760,000 milli-GPU-s)
    (t_line,) = by_tenant["t"].lines
    assert (t_line.kind, t_line.quantity, t_line.amount) == (
        "usage",
        Decimal("1.600000"),
        Decimal("5.76"),
    )
    assert (t_line.seconds, t_line.gpu_milli_seconds) == (5760, 5_760_000)
    # u: 0.3 GPU-h x 3.60 = 1.08
    (u_line,) = by_tenant["u"].lines
    assert (u_line.quantity, u_line.amount, u_line.gpu_milli_seconds) == (
        Decimal("0.300000"),
        Decimal("1.08"),
        1_080_000,
    )
    # the per-job breakdown: seconds held whatever the share, and the share-weighted usage
    jobs = {j.job: j for j in by_tenant["t"].jobs}
    assert (jobs["a"].gpu_seconds, jobs["a"].gpu_milli_seconds, jobs["a"].billable_seconds) == (
        3600,
        2_160_000,
        2160,
    )
    assert (jobs["c"].gpu_seconds, jobs["c"].gpu_milli_seconds, jobs["c"].billable_seconds) == (
        3600,
        3_600_000,
        3600,
    )
    # the document carries milli-GPU-seconds only where a share makes them differ
    doc = json.loads(by_tenant["t"].canonical_json())
    by_job = {j["job"]: j for j in doc["usage"]["jobs"]}
    assert by_job["a"]["gpu_milli_seconds"] == 2_160_000
    assert "gpu_milli_seconds" not in by_job["c"]
    # invoice_lines hold the exact milli-GPU-seconds (migration 0032)
    rows = clickhouse.query(
        "SELECT tenant, gpu_seconds, gpu_milli_seconds, amount FROM invoice_lines FINAL "
        "WHERE is_deleted = 0 ORDER BY tenant"
    ).result_rows
    assert [(r[0], int(r[1]), int(r[2]), Decimal(r[3])) for r in rows] == [
        ("t", 5760, 5_760_000, Decimal("5.76")),
        ("u", 1080, 1_080_000, Decimal("1.08")),
    ]


def test_reconcile_conserves_milli_gpu_seconds_on_a_shared_gpu(clickhouse: Any) -> None:
    shared_ledger(clickhouse)
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.differences
    balances = {g.gpu: g for g in report.gpus}
    # g0: billed (600 + 300) x 3600 + idle 100 x 3600 = 1000 x 3600 observed seconds
    g0 = balances["g0"]
    assert (g0.billed, g0.idle, g0.observed, g0.source) == (3_240_000, 360_000, 3600, LEDGER)
    assert (balances["g1"].billed, balances["g1"].idle) == (3_600_000, 0)


def test_reconcile_finds_shares_that_overfill_a_gpu(clickhouse: Any) -> None:
    # two allocations claiming 600 milli each of the same GPU-seconds: 1.2 GPUs in one
    insert_shared(
        clickhouse, hour("t", "a", "g0", 600, minutes=1) + hour("u", "b", "g0", 600, minutes=1)
    )
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert not report.ok
    assert "GPU g0: billed 72 + idle 0 = 72 GPU-seconds, but 60 observed" in report.differences[-1]


def test_reconcile_reads_the_v2_raw_archive_of_a_shared_gpu(clickhouse: Any) -> None:
    # one minute of g0 shared (600 + 300 + idle 100), and its frame-minute in the v2 raw archive
    # (usage_frames, migration 0031): observed comes from the archive's 60 distinct seconds
    insert_shared(
        clickhouse,
        hour("t", "a", "g0", 600, minutes=1)
        + hour("u", "b", "g0", 300, minutes=1)
        + hour("__idle__", "", "g0", 100, minutes=1),
    )
    frame = {
        "sm_util": [50.0] * 60,
        "mem_util": [10.0] * 60,
        "mem_used": [1] * 60,
        "mem_total": 80,
        "power_w": [300.0] * 60,
        "energy_j": [300.0] * 60,
        "temp_c": [],
    }
    clickhouse.insert(
        "usage_frames",
        [
            [
                datetime(2026, 1, 5, 10, 0),
                "g0",
                "",
                FULL,
                H100,
                "n1",
                ["t", "u"],
                ["a", "b"],
                [600, 300],
                json.dumps(frame),
            ]
        ],
        column_names=[
            "minute",
            "gpu_uuid",
            "mig_uuid",
            "seconds_mask",
            "gpu_model",
            "node_id",
            "tenants",
            "jobs",
            "share_milli",
            "frame",
        ],
    )
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.differences
    (g0,) = report.gpus
    # billed (600 + 300) x 60 + idle 100 x 60 = 1000 x 60 observed seconds, from the archive
    assert (g0.billed, g0.idle, g0.observed, g0.source) == (54_000, 6_000, 60, RAW)
