"""The worker's no-silent-failure wrapper and its per-partition progress: no services."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import streams.app
from streams.consumer import Progress, fingerprint
from streams.health import ExitCode


class Exited(BaseException):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ExitCode, str]]:
    calls: list[tuple[ExitCode, str]] = []

    def fake_fatal(code: ExitCode, message: str, **_: object) -> None:
        calls.append((code, message))
        raise Exited  # the real one never returns (os._exit)

    monkeypatch.setattr(streams.app, "fatal", fake_fatal)
    return calls


def test_any_exception_in_a_processor_or_timer_ends_the_process_with_70(exits) -> None:
    async def body() -> None:
        raise KeyError("boom")

    with pytest.raises(Exited):
        asyncio.run(streams.app.guarded("the usage processor", body)())
    assert exits[0][0] == ExitCode.SOFTWARE and "the usage processor raised KeyError" in exits[0][1]


def test_a_cancellation_is_faust_stopping_the_body_not_a_failure(exits) -> None:
    async def body() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(streams.app.guarded("the usage processor", body)())
    assert exits == []


def test_a_failed_persist_exits_70_without_returning(exits) -> None:
    def process(records: list[object]) -> None:
        raise OSError("ClickHouse gone")

    with pytest.raises(Exited):
        streams.app.persist_or_exit(process, [])
    assert exits[0][0] == ExitCode.SOFTWARE


def event(topic: str, partition: int, offset: int, ts: float, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(
        value=value,
        message=SimpleNamespace(
            topic=topic, partition=partition, offset=offset, timestamp=ts, value=value
        ),
    )


def test_progress_keeps_the_next_offset_and_what_was_seen_at_the_last_one() -> None:
    p = Progress()
    p.done([event("u", 0, 5, 1.5, b"a"), event("u", 0, 6, 1.6, b"b"), event("u", 1, 2, 1.0, b"c")])
    p.done([event("u", 0, 4, 9.9, b"old")])  # a redelivered earlier record changes nothing
    assert p.next_offset == {("u", 0): 7, ("u", 1): 3}
    assert p.last[("u", 0)] == fingerprint(6, 1.6, b"b")
    assert fingerprint(6, 1.6, b"b") != fingerprint(6, 1.7, b"b")  # a re-send differs
    p.forget(("u", 0))
    assert ("u", 0) not in p.next_offset and ("u", 0) not in p.last


def test_a_closed_minute_message_carries_the_rows_share() -> None:
    import orjson

    from streams.aggregate import MinuteRow

    # given a row holding 300 milli-GPUs for seconds 0 and 1 (device energy 1000 + 1001 mJ)
    row = MinuteRow(
        1_795_651_200,
        "acme",
        "j1",
        "",
        "GPU-1",
        "",
        "H100",
        "n1",
        claimed_mask=0b11,
        readings={0: (50.0, 1.0, 1000), 1: (50.0, 1.0, 1001)},
        share_milli=300,
    )
    # then its message says the share, milli-GPU-seconds and the share of the energy
    key, value = streams.app.minutely_message(row)
    doc = orjson.loads(value)
    assert key == b"GPU-1"
    assert (doc["share_milli"], doc["gpu_seconds"], doc["gpu_milli_seconds"]) == (300, 2, 600)
    assert doc["energy_mj"] == 2001 * 300 // 1000
