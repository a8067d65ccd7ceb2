"""The demo's ground-truth check reads milli-GPU-seconds: on a fleet with shared GPUs and MIG
slices, ledger rows counted second by second from the agents' device seconds pass every check,
and one milli-GPU-second moved between tenants fails it."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from rich.console import Console

from agents.simulator import SimulatedFleet
from gpumeter.ground_truth import compare_with_ground_truth
from kernel.names import IDLE_TENANT


class FakeResult:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


class FakeClient:
    """Answers the check's one query with rows shaped like ``usage_minutely FINAL``'s sums:
    (tenant, job, gpu_model, hour, gpu_seconds, gpu_milli_seconds, active_seconds, energy_mj)."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def query(self, sql: str, parameters: dict[str, Any]) -> FakeResult:
        assert "gpu_milli_seconds" in sql and "usage_minutely FINAL" in sql
        return FakeResult(self.rows)


def ledger_rows(fleet: SimulatedFleet) -> list[tuple[Any, ...]]:
    secs: Counter[tuple[str, str, str, int]] = Counter()
    milli: Counter[tuple[str, str, str, int]] = Counter()
    for sampler in fleet.samplers():
        for ts in range(fleet.start, fleet.end):
            for d in sampler.seconds(ts):
                hour = ts - ts % 3600
                used = 0
                for s in d.allocations:
                    secs[(s.tenant, s.job, d.gpu_model, hour)] += 1
                    milli[(s.tenant, s.job, d.gpu_model, hour)] += s.milli
                    used += s.milli
                if used < 1000:
                    secs[(IDLE_TENANT, "", d.gpu_model, hour)] += 1
                    milli[(IDLE_TENANT, "", d.gpu_model, hour)] += 1000 - used
    return [(*k, secs[k], milli[k], secs[k], 0) for k in secs]


def check(fleet: SimulatedFleet, rows: list[tuple[Any, ...]]) -> list[Any]:
    console = Console(file=io.StringIO(), width=200)
    return compare_with_ground_truth(console, FakeClient(rows), fleet, fleet.start, fleet.end)


def test_a_ledger_equal_to_the_device_seconds_passes_every_check() -> None:
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, duration_s=3600, seed=2, shares=True)
    checks = check(fleet, ledger_rows(fleet))
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert any(c.name == "idle milli-GPU-seconds" and c.expected > 0 for c in checks)


def test_one_milli_gpu_second_moved_between_tenants_fails() -> None:
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, duration_s=3600, seed=2, shares=True)
    rows = ledger_rows(fleet)
    allocated = [i for i, r in enumerate(rows) if r[0] != IDLE_TENANT]
    a, b = (
        next(i for i in allocated),
        next(i for i in allocated if rows[i][0] != rows[allocated[0]][0]),
    )
    rows[a] = (*rows[a][:5], rows[a][5] - 1, *rows[a][6:])
    rows[b] = (*rows[b][:5], rows[b][5] + 1, *rows[b][6:])
    failed = {c.name for c in check(fleet, rows) if not c.ok}
    assert f"tenant {rows[a][0]} milli-GPU-seconds" in failed
    assert f"tenant {rows[b][0]} milli-GPU-seconds" in failed
    assert "(tenant, job, GPU model, hour) cells matching" in failed
