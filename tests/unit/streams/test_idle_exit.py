"""`--exit-when-idle`: a worker idle on its own partitions waits for the whole group."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.idle_exit import IdleExit


class Lag:
    """The group's lag as the broker would answer it, one answer per call."""

    def __init__(self, *answers: dict[str, int] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.closed = False

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


def run_checks(idle: IdleExit, n: int, *, records: int = 5, caught_up_here: bool = True) -> None:
    async def go() -> None:
        for _ in range(n):
            idle.check(
                records=records, last_record_at=time.monotonic() - 10, caught_up_here=caught_up_here
            )
            await asyncio.sleep(0.01)  # the group check runs in the executor
            while idle._task is not None:
                await asyncio.sleep(0.01)

    asyncio.run(go())


def test_a_partition_behind_in_the_group_keeps_an_idle_worker_running(capsys) -> None:  # type: ignore[no-untyped-def]
    # given a group with partition 2 uncommitted (held by a member killed -9), then caught up
    lag = Lag({"usage[2]": 480}, {"usage[2]": 480}, {})
    stops: list[int] = []
    idle = IdleExit(3, "g", lag, stop=lambda: stops.append(1))
    # when the worker, idle on its own partitions, checks three times
    run_checks(idle, 2)
    # then it does not stop while the group is behind, and says which partition
    assert stops == [] and lag.calls == 2
    assert "usage[2]" in capsys.readouterr().err
    run_checks(idle, 1)
    # and stops once the group has committed everywhere, closing its lag readers first
    assert stops == [1] and lag.closed


@pytest.mark.parametrize(
    ("records", "caught_up_here"),
    [(0, True), (5, False)],
    ids=["nothing processed yet", "own partitions not caught up"],
)
def test_the_group_is_not_asked_before_the_worker_is_idle_itself(
    records: int, caught_up_here: bool
) -> None:
    lag = Lag({})
    stops: list[int] = []
    idle = IdleExit(3, "g", lag, stop=lambda: stops.append(1))
    run_checks(idle, 3, records=records, caught_up_here=caught_up_here)
    assert (lag.calls, stops) == (0, [])


def test_a_broker_that_cannot_answer_never_counts_as_caught_up() -> None:
    lag = Lag(OSError("broker away"), {})
    stops: list[int] = []
    idle = IdleExit(3, "g", lag, stop=lambda: stops.append(1))
    run_checks(idle, 1)
    assert stops == []
    run_checks(idle, 1)
    assert stops == [1]
