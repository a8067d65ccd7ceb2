"""Property: on random ledgers of shared and whole GPUs, the views count shares exactly.

Each GPU-minute is split among up to three allocations at random shares (summing to at most
1000 milli-GPUs), the rest stored as the idle remainder; the ground truth is computed here in
Python from the generated shares alone, independently of the views' SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.billing.shared_ledger import insert_shared
from tests.ledger_rows import LedgerRow

pytestmark = pytest.mark.integration

FULL = (1 << 60) - 1
T0 = datetime(2025, 3, 1, 10, 0)
MODEL = "NVIDIA H100 80GB HBM3"


@st.composite
def split(draw: Any) -> list[int]:
    """Shares of one GPU-minute: allocations in milli-GPUs, summing to at most 1000."""
    shares: list[int] = []
    left = 1000
    for _ in range(draw(st.integers(0, 3))):
        if left == 0:
            break
        s = draw(st.integers(1, left))
        shares.append(s)
        left -= s
    return shares


ledgers = st.dictionaries(
    st.tuples(st.sampled_from(["g0", "g1", "g2"]), st.integers(0, 119)), split(), max_size=25
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ledgers)
def test_allocated_plus_idle_is_observed_and_shared_capacity_is_exact(
    clickhouse: Any, ledger: dict[tuple[str, int], list[int]]
) -> None:
    clickhouse.command("TRUNCATE TABLE usage_minutely")
    rows: list[tuple[LedgerRow, int]] = []
    want: dict[str, list[int]] = {}  # gpu -> [available, allocated, idle, shared, packed]
    for (gpu, minute), shares in ledger.items():
        at = T0 + timedelta(minutes=minute)
        for i, s in enumerate(shares):
            rows.append((LedgerRow(at, f"t{i}", "j", gpu, MODEL, FULL), s))
        rest = 1000 - sum(shares)
        if rest:
            rows.append((LedgerRow(at, "__idle__", "", gpu, MODEL, FULL), rest))
        w = want.setdefault(gpu, [0, 0, 0, 0, 0])
        w[0] += 60 * 1000
        w[1] += 60 * sum(shares)
        w[2] += 60 * rest
        if any(s < 1000 for s in shares) or 0 < rest < 1000:  # the GPU was split this minute
            w[3] += 60 * 1000
            w[4] += 60 * sum(shares)
    insert_shared(clickhouse, rows)
    got = {
        g: [int(x) for x in rest]
        for g, *rest in clickhouse.query(
            "SELECT gpu_uuid, sum(available_milli_seconds), sum(allocated_milli_seconds), "
            "sum(idle_milli_seconds), sum(shared_milli_seconds), "
            "sum(shared_allocated_milli_seconds) FROM gpu_utilization_hourly GROUP BY gpu_uuid"
        ).result_rows
    }
    assert got == want
    daily = clickhouse.query(
        "SELECT sum(available_milli_seconds), sum(allocated_milli_seconds), "
        "sum(idle_milli_seconds) FROM utilization_daily"
    ).result_rows
    if want:
        avail, alloc, idle = (int(x) for x in daily[0])
        assert alloc + idle == avail == 1000 * 60 * len(ledger)
