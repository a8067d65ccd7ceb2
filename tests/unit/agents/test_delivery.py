"""Delivery against a scripted producer: replacement of a broken producer, refill of a broker
whose log went backwards, operator resend requests, clock offset. (Against the real embedded
broker: tests/integration/test_agent_broker_restart.py.)"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from agents.kafka import RESEND_FILE, Delivery
from agents.spool import Spool


@dataclass
class Md:
    partition: int
    offset: int
    timestamp: int


@dataclass
class ScriptedProducer:
    """Acknowledges every send at once on partition 0 with the next offset of its log.
    ``restart()`` empties the log, as a restarted in-memory broker does."""

    sent: list[bytes] = field(default_factory=list)  # every record the broker received
    next_offset: int = 0
    generation: int = 0
    resets: int = 0
    clock_offset_ms: int | None = None  # broker clock - agent clock; None: CreateTime topic

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> Any:
        self.sent.append(value)
        ts = (
            timestamp_ms
            if self.clock_offset_ms is None
            else (timestamp_ms or 0) + self.clock_offset_ms
        )
        self.next_offset += 1
        return Answer(Md(0, self.next_offset - 1, ts or 0))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def healthy(self) -> None:
        pass

    def reset(self, reason: str = "", *, force: bool = False) -> bool:
        self.generation += 1
        self.resets += 1
        return True

    def restart(self) -> None:
        self.next_offset = 0


class Answer:
    """A future the broker has already answered: callbacks run as they are attached."""

    def __init__(self, md: Md | None, error: BaseException | None = None) -> None:
        self.md, self.error = md, error

    def add_callback(self, f: Any) -> None:
        if self.error is None:
            f(self.md)

    def add_errback(self, f: Any) -> None:
        if self.error is not None:
            f(self.error)


class FailingProducer(ScriptedProducer):
    """Every send is answered with ``error`` (``raise_now``: send() itself raises it)."""

    def __init__(self, error: BaseException, raise_now: bool = False) -> None:
        super().__init__()
        self.error, self.raise_now = error, raise_now

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> Any:
        if self.raise_now:
            raise self.error
        return Answer(None, self.error)


def fill(spool: Spool, n: int) -> None:
    for _ in range(n):
        seq = spool.next_seq
        spool.append(
            seq, f"batch-{seq}".encode(), n_samples=1, first_ts=1000 + seq, last_ts=1000 + seq
        )


def pump_until_quiet(d: Delivery, rounds: int = 20) -> None:
    for _ in range(rounds):
        d._retry_at = 0.0  # no real waiting in a unit test
        d.pump()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path, max_bytes=1024**2, fsync=False)


def test_a_non_retriable_error_replaces_the_producer_at_once(spool: Spool) -> None:
    # given the error a restarted broker keeps answering to InitProducerId
    producer = FailingProducer(
        KafkaError("Unexpected error in InitProducerIdResponse: [Error -1] UnknownError")
    )
    d = Delivery(spool, producer, "t", b"n")
    fill(spool, 3)
    # when a send fails with it (the answer is processed by the next pump)
    d.pump()
    d.pump()
    # then the producer is replaced (a new producer id), not retried forever
    assert producer.resets >= 1 and d.stats.producer_resets == producer.resets


def test_producer_replacements_are_spaced_by_a_bounded_backoff() -> None:
    from agents.kafka import ResettableProducer

    class Dummy:
        def close(self, timeout: float | None = None) -> None:
            pass

    class Resettable(ResettableProducer):
        def _new(self) -> Any:
            return Dummy()

    p = Resettable({}, min_backoff_s=0.0, max_backoff_s=30.0)
    p._backoff_s = 1.0
    p._last_reset = -1e9
    assert p.reset("broken") is True  # backoff doubles: 2 s
    assert p.reset("broken again") is False  # too soon
    assert p.reset("no answer at all", force=True) is True
    for _ in range(10):
        p.reset("x", force=True)
    assert p._backoff_s == 30.0  # capped
    p.healthy()
    assert p._backoff_s == 0.0 and p.generation == 12


def test_repeated_retriable_errors_replace_the_producer_too(spool: Spool) -> None:
    # given a broker that is away: send() times out waiting for metadata (retriable)
    producer = FailingProducer(KafkaTimeoutError("Failed to update metadata"), raise_now=True)
    d = Delivery(spool, producer, "t", b"n")
    fill(spool, 3)
    d.pump()
    d._retry_at = 0.0
    d.pump()
    assert producer.resets == 0  # two failures: retriable, keep the producer
    d._retry_at = 0.0
    d.pump()
    assert producer.resets == 1  # the third in a row: replace it


def test_a_log_that_went_backwards_is_refilled_from_the_retained_batches(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # given ten batches delivered and acknowledged (offsets 0..9) and retained
    producer = ScriptedProducer()
    d = Delivery(spool, producer, "t", b"n")
    fill(spool, 10)
    pump_until_quiet(d)
    assert spool.acked == 9 and len(producer.sent) == 10
    producer.sent.clear()
    # when the broker restarts empty and the next batch is acknowledged at offset 0
    producer.restart()
    fill(spool, 1)
    with caplog.at_level(logging.ERROR):
        pump_until_quiet(d)
    # then the loss is detected, said loudly, and every retained batch is sent again
    assert d.stats.log_rewinds == 1
    assert "went backwards" in caplog.text
    assert sorted(producer.sent) == sorted(f"batch-{s}".encode() for s in range(11))
    assert d.stats.resent == 10 and d.drained()


def test_an_operator_resend_request_is_served_and_removed(spool: Spool) -> None:
    producer = ScriptedProducer()
    d = Delivery(spool, producer, "t", b"n")
    fill(spool, 6)
    pump_until_quiet(d)
    producer.sent.clear()  # the broker keeps its log; only what arrives from now on counts
    # when `gpumeter agent resend --since 1003` writes its request file
    (spool.directory / RESEND_FILE).write_text("1003")
    d._next_request_check = 0.0
    pump_until_quiet(d)
    # then the batches ending at or after that second are sent again, and the request is gone
    assert producer.sent == [f"batch-{s}".encode() for s in (3, 4, 5)]
    assert not (spool.directory / RESEND_FILE).exists()


def test_the_clock_offset_is_measured_from_broker_timestamps_and_warned_about(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # given a broker stamping LogAppendTime 7 s ahead of this node
    producer = ScriptedProducer(clock_offset_ms=7000)
    d = Delivery(spool, producer, "t", b"n", clock_warn_s=2.0)
    fill(spool, 2)
    with caplog.at_level(logging.WARNING):
        pump_until_quiet(d)
    assert d.stats.clock_offset_ms == pytest.approx(7000, abs=50)
    assert "clock is -7.0 s off the broker" in caplog.text


def test_a_createtime_topic_gives_no_clock_offset(spool: Spool) -> None:
    producer = ScriptedProducer(clock_offset_ms=None)
    d = Delivery(spool, producer, "t", b"n")
    fill(spool, 2)
    pump_until_quiet(d)
    assert d.stats.clock_offset_ms is None
