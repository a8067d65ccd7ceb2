"""infra/OPERATIONS.md: the sizing table is the output of infra/sizing.py (measured inputs, stated
policy), so the page and the arithmetic cannot drift apart."""

from __future__ import annotations

import math

from infra.sizing import RAW_BYTES_PER_SAMPLE, WORKER_GPU_SECONDS_PER_S, plan, render_table
from tests.unit.infra.conftest import INFRA


def test_the_sizing_table_on_the_page_is_the_computed_one() -> None:
    page = (INFRA / "OPERATIONS.md").read_text()
    start = page.index("<!-- sizing-table")
    block = page[page.index("\n", start) + 1 : page.index("<!-- /sizing-table -->")].strip()
    assert block == render_table([1_000, 10_000, 100_000]), "run: python -m infra.sizing"


def test_the_plan_carries_three_times_the_load_and_rebuilds_a_period_within_a_day() -> None:
    for gpus in (1_000, 10_000, 100_000, 250_000):
        p = plan(gpus)
        assert p.workers * WORKER_GPU_SECONDS_PER_S >= 3 * gpus and p.workers >= 2
        assert p.partitions % 12 == 0 and p.partitions >= 4 * p.workers
        assert p.rebuild_h <= 24
        assert math.isclose(p.raw_gb_day, gpus * 86_400 * RAW_BYTES_PER_SAMPLE / 1e9)
