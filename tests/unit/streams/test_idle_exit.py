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


def test_a_retriable_error_is_retried_then_ends_the_run_if_it_lasts() -> None:
    # given a coordinator that keeps moving (retriable) while the worker is idle
    from kafka.errors import CoordinatorNotAvailableError

    from streams.health import ExitCode

    lag = Lag(*(CoordinatorNotAvailableError() for _ in range(3)))
    stops: list[int] = []
    deaths: list[tuple[ExitCode, str]] = []
    idle = IdleExit(
        3,
        "g",
        lag,
        stop=lambda: stops.append(1),
        give_up_s=0.05,
        die=lambda c, m: deaths.append((c, m)),
    )
    # when the first read fails, the worker keeps waiting and neither stops nor dies
    run_checks(idle, 1)
    assert (stops, deaths) == ([], [])
    # then once the failures have lasted past give_up_s, the run ends UNAVAILABLE, not OK
    time.sleep(0.1)
    run_checks(idle, 1)
    assert stops == [] and [c for c, _ in deaths] == [ExitCode.UNAVAILABLE]
    assert "'g'" in deaths[0][1]


def test_a_success_resets_the_failing_streak() -> None:
    lag = Lag(OSError("away"), {"usage[0]": 1}, OSError("away"), {})
    stops: list[int] = []
    deaths: list[object] = []
    idle = IdleExit(
        3, "g", lag, stop=lambda: stops.append(1), give_up_s=0.05, die=lambda c, m: deaths.append(c)
    )
    run_checks(idle, 2)
    time.sleep(0.1)
    run_checks(idle, 2)  # the streak started again at the third read: not past give_up_s
    assert deaths == [] and stops == [1]


def test_an_error_that_waiting_cannot_fix_ends_the_run_at_once_naming_the_group() -> None:
    # given an ACL that refuses the group's offsets (kafka-python: not retriable)
    from kafka.errors import GroupAuthorizationFailedError

    from streams.health import ExitCode

    lag = Lag(GroupAuthorizationFailedError())
    deaths: list[tuple[ExitCode, str]] = []
    stops: list[int] = []
    idle = IdleExit(
        3, "meter", lag, stop=lambda: stops.append(1), die=lambda c, m: deaths.append((c, m))
    )
    run_checks(idle, 1)
    assert stops == [] and [c for c, _ in deaths] == [ExitCode.CONFIG]
    assert "'meter'" in deaths[0][1] and "Describe" in deaths[0][1]


@pytest.mark.parametrize(
    "error",
    ["SaslAuthenticationFailedError", "UnsupportedVersionError", "TopicAuthorizationFailedError"],
)
def test_credentials_acls_and_old_brokers_are_configuration_errors(error: str) -> None:
    import kafka.errors

    from streams.health import ExitCode

    deaths: list[tuple[ExitCode, str]] = []
    idle = IdleExit(
        3, "meter", Lag(getattr(kafka.errors, error)()), die=lambda c, m: deaths.append((c, m))
    )
    run_checks(idle, 1)
    assert [c for c, _ in deaths] == [ExitCode.CONFIG]


@pytest.mark.parametrize("error", [ValueError("bug"), "IllegalStateError"])
def test_an_unexpected_error_ends_the_run_at_once_as_a_software_failure(
    error: Exception | str,
) -> None:
    # given an error that is neither a passing broker failure nor a deployment's refusal
    import kafka.errors

    from streams.health import ExitCode

    exc = getattr(kafka.errors, error)() if isinstance(error, str) else error
    deaths: list[tuple[ExitCode, str]] = []
    stops: list[int] = []
    idle = IdleExit(
        3, "meter", Lag(exc), stop=lambda: stops.append(1), die=lambda c, m: deaths.append((c, m))
    )
    run_checks(idle, 1)
    # then the run ends at once with 70 (not 2: no configuration change would fix it)
    assert stops == [] and [c for c, _ in deaths] == [ExitCode.SOFTWARE]
    assert "'meter'" in deaths[0][1]


def test_once_the_stop_is_requested_no_further_check_runs() -> None:
    # given a worker idle with its group caught up: the first check requests the stop
    lag = Lag({}, {})
    stops: list[int] = []
    deaths: list[object] = []
    idle = IdleExit(
        3, "meter", lag, stop=lambda: stops.append(1), die=lambda c, m: deaths.append((c, m))
    )
    run_checks(idle, 1)
    assert stops == [1] and lag.closed
    # when the status timer ticks again during the shutdown
    run_checks(idle, 3)
    # then the group is not read again (its readers stay closed) and the stop is not repeated
    assert lag.calls == 1 and stops == [1] and deaths == []
