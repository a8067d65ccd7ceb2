"""The demo's preemption check fails when ClickHouse disagrees with the simulator."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from agents.preemption_sim import SimulatedPreemption
from gpumeter.preemption_truth import compare_preemptions_with_ground_truth

AT = 1_767_250_000


def preemption(job: str, lost: int, share: int = 1000) -> SimulatedPreemption:
    return SimulatedPreemption("hooli", job, "GPU-1", "H100", share, AT, None, "research", lost)


class Client:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def query(self, sql: str) -> Any:
        assert "preemption_losses" in sql
        return SimpleNamespace(result_rows=self.rows)


def checks(
    fleet_preemptions: list[SimulatedPreemption], rows: list[tuple[Any, ...]]
) -> dict[str, bool]:
    fleet = SimpleNamespace(preemptions=fleet_preemptions)
    console = Console(file=io.StringIO(), width=200)
    return {
        c.name: c.ok for c in compare_preemptions_with_ground_truth(console, Client(rows), fleet)
    }


def test_agreement_passes_and_each_disagreement_fails() -> None:
    truth = [preemption("a", 100), preemption("b", 30, share=250)]
    good = [("hooli", "a", "GPU-1", AT, 100_000), ("hooli", "b", "GPU-1", AT, 7_500)]
    assert all(checks(truth, good).values())
    wrong_loss = [good[0], ("hooli", "b", "GPU-1", AT, 7_501)]
    assert checks(truth, wrong_loss) == {
        "preemption records stored": True,
        "preemptions whose lost milli-GPU-seconds match": False,
        "lost milli-GPU-seconds (all preemptions)": False,
    }
    missing = checks(truth, good[:1])
    assert not missing["preemption records stored"]
    assert checks([], []) == {}
