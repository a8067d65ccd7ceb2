"""The consumer check during a shutdown: Faust closes the consumer thread's loop under it.

CI once ended a batch run (``--exit-when-idle``) with exit 70: the SIGTERM stopped the app,
the consumer's thread closed its loop, and the check that was running at that moment got
``RuntimeError: Event loop is closed`` from ``consumer.position``. A stopping worker has
nothing left to measure; the same error while the worker runs is a real failure.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest

from streams.consumer import ConsumerCheck, Progress
from streams.health import Health


class TP(NamedTuple):
    topic: str
    partition: int


class ClosedLoopConsumer:
    """A consumer whose thread's loop is closed; ``stops_during_call``: the stop begins while
    the check waits in ``position`` (the race CI hit)."""

    def __init__(self, *, stopping: bool, stops_during_call: bool = False) -> None:
        self._thread = SimpleNamespace(should_stop=stopping)
        self.should_stop = False
        self.stops_during_call = stops_during_call

    def assignment(self) -> set[Any]:
        return {TP("gpu.usage.v1", 0)}

    def highwater(self, tp: Any) -> int:
        return 10

    async def position(self, tp: Any) -> int:
        if self.stops_during_call:
            self._thread.should_stop = True
        raise RuntimeError("Event loop is closed")


def check_with(
    *, app_stopping: bool, thread_stopping: bool, stops_during_call: bool = False
) -> ConsumerCheck:
    consumer = ClosedLoopConsumer(stopping=thread_stopping, stops_during_call=stops_during_call)
    app = SimpleNamespace(
        consumer=consumer,
        producer=SimpleNamespace(),
        rebalancing=False,
        should_stop=app_stopping,
    )
    return ConsumerCheck(app, Health(stall_after_s=60), Progress())  # type: ignore[arg-type]


@pytest.mark.parametrize(("app_stopping", "thread_stopping"), [(True, False), (False, True)])
def test_a_check_cut_short_by_the_shutdown_is_not_a_failure(
    app_stopping: bool, thread_stopping: bool
) -> None:
    # given a worker whose app or consumer thread has begun to stop
    check = check_with(app_stopping=app_stopping, thread_stopping=thread_stopping)
    # when the check runs into the closed loop, then it returns quietly
    asyncio.run(check.run())


def test_a_stop_that_begins_while_the_check_waits_on_the_consumer_is_not_a_failure() -> None:
    # given a running worker whose stop begins while the check is inside ``position``
    check = check_with(app_stopping=False, thread_stopping=False, stops_during_call=True)
    # then the check returns quietly
    asyncio.run(check.run())


def test_the_same_error_while_running_is_raised_so_the_worker_ends() -> None:
    # given a worker that is not stopping, whose consumer fails the same way
    check = check_with(app_stopping=False, thread_stopping=False)
    # then the check raises (``guarded`` turns it into exit 70)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        asyncio.run(check.run())


class Exited(BaseException):
    pass


@pytest.mark.parametrize("during_call", [False, True])
def test_a_crashed_consumer_thread_is_not_taken_for_a_shutdown(
    monkeypatch: pytest.MonkeyPatch, during_call: bool
) -> None:
    # given a consumer thread that crashed (mode stops a crashed service: should_stop is true)
    import streams.consumer

    deaths: list[str] = []

    def fake_fatal(code: object, message: str, **_: object) -> None:
        deaths.append(message)
        raise Exited  # the real one never returns

    monkeypatch.setattr(streams.consumer, "fatal", fake_fatal)
    check = check_with(app_stopping=False, thread_stopping=not during_call)
    thread = check.app.consumer._thread  # type: ignore[attr-defined]
    if during_call:  # the crash happens while the check waits in position()
        consumer = check.app.consumer

        async def crash(tp: Any) -> int:
            thread.should_stop = True
            thread.crash_reason = RuntimeError("fetcher died")
            raise RuntimeError("Event loop is closed")

        consumer.position = crash  # type: ignore[method-assign]
    else:
        thread.crash_reason = RuntimeError("fetcher died")
    # then the worker ends (exit 70), naming the crash
    with pytest.raises(Exited):
        asyncio.run(check.run())
    assert deaths and "crashed" in deaths[0] and "fetcher died" in deaths[0]
