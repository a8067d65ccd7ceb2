"""Delivery of spooled batches to Kafka with kafka-python: acks=all, idempotent, lz4, keyed by node.

:class:`Delivery` drains a :class:`~agents.spool.Spool` in sequence order. A batch leaves the
spool only when the broker acknowledged it *and* every earlier batch (the spool acknowledges a
contiguous prefix). When a send fails (broker down, timeout), delivery rewinds to the oldest
unacknowledged batch and sends again from there: some batches may reach the broker twice, which
is harmless because sample ids are deterministic; none is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.spool import Spool

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, client_id: str = "gpumeter-agent", **overrides: Any) -> ResettableProducer:
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=20,
        max_in_flight_requests_per_connection=5,  # the idempotent producer keeps order up to 5
        request_timeout_ms=5_000,
        delivery_timeout_ms=15_000,
        # send() must never stall sampling: while the broker is away it fails fast and the
        # batch simply stays in the spool.
        max_block_ms=100,
        max_request_size=8 * 1024**2,
        reconnect_backoff_max_ms=2_000,
        # A fixed protocol version: without it the constructor probes the broker and raises
        # when the broker is down at start-up, before the agent has sampled anything.
        # Kafka >= 3.0 and the embedded Tansu broker speak it.
        api_version=(3, 9),
    )
    config.update(overrides)
    return ResettableProducer(config)


class ResettableProducer:
    """A KafkaProducer that can be replaced by a fresh one.

    kafka-python's idempotent producer, once a batch has expired (an outage longer than
    ``delivery_timeout_ms``), drops its producer id and never obtains a new one: no later send
    completes even after the broker is back (seen with kafka-python 3.0). Delivery then calls
    :meth:`reset`; a new producer gets a new id, and every unacknowledged batch is re-sent
    from the spool (duplicates are harmless: sample ids are deterministic).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer = self._new()
        self.generation = 0
        self._last_reset = 0.0

    def _new(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(**self._config)

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        return self._producer.send(topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def reset(self, min_interval_s: float = 5.0) -> bool:
        """Replace the producer (at most once per ``min_interval_s``: several nodes share one)."""
        if time.monotonic() - self._last_reset < min_interval_s:
            return False
        self._last_reset = time.monotonic()
        old, self._producer = self._producer, self._new()
        self.generation += 1
        try:
            old.close(timeout=0)
        except Exception as exc:  # its pending batches fail; delivery re-sends them
            log.debug("closing the replaced producer: %s", exc)
        return True

    def close(self, timeout: float | None = None) -> None:
        try:
            self._producer.close(timeout=timeout)
        except Exception as exc:  # e.g. batches still pending while the broker is away
            log.warning("closing the Kafka producer: %s", exc)


@dataclass
class DeliveryStats:
    sent: int = 0  # batches handed to the producer (including re-sends)
    acked: int = 0  # batches acknowledged by the broker
    failures: int = 0  # failed sends (each causes a rewind)
    last_error: str = ""


class Delivery:
    """Sends one node's spool to ``topic``. Call :meth:`pump` often from the owner thread."""

    def __init__(
        self, spool: Spool, producer: Any, topic: str, key: bytes, *, max_in_flight: int = 500
    ) -> None:
        self.spool = spool
        self.producer = producer
        self.topic = topic
        self.key = key
        self.max_in_flight = max_in_flight
        self.stats = DeliveryStats()
        self._cursor = spool.acked  # highest seq handed to the producer
        self._acked: set[int] = set()  # acknowledged above the contiguous watermark
        self._results: queue.SimpleQueue[tuple[int, BaseException | None]] = queue.SimpleQueue()
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._generation = getattr(producer, "generation", 0)
        self._last_answer = time.monotonic()
        self.stall_after_s = 30.0  # > delivery_timeout_ms: no answer at all means a stuck producer

    def pump(self) -> None:
        """Process broker answers, then send what is pending (unless backing off)."""
        self._drain_results()
        generation = getattr(self.producer, "generation", 0)
        if generation != self._generation:
            # The producer was replaced; sends in flight on the old one may never be answered.
            self._generation = generation
            self._cursor = self.spool.acked
        elif self._cursor > self.spool.acked and time.monotonic() - self._last_answer > self.stall_after_s:
            log.warning("no answer from the broker for %.0f s with batches in flight; "
                        "replacing the producer and resending from %d", self.stall_after_s,
                        self.spool.acked + 1)
            self._last_answer = time.monotonic()
            if hasattr(self.producer, "reset"):
                self.producer.reset(min_interval_s=0)
            self._cursor = self.spool.acked
        if time.monotonic() < self._retry_at:
            return
        in_flight = self._cursor - self.spool.acked
        if in_flight >= self.max_in_flight:
            return
        for entry, payload in self.spool.pending(after_seq=self._cursor):
            if self._cursor == self.spool.acked:
                self._last_answer = time.monotonic()  # the stall clock starts with the first send
            try:
                future = self.producer.send(self.topic, key=self.key, value=payload)
            except Exception as exc:  # KafkaTimeoutError while the broker is away, buffer full
                self._fail(entry.seq, exc)
                return
            seq = entry.seq
            future.add_callback(lambda _md, s=seq: self._results.put((s, None)))
            future.add_errback(lambda e, s=seq: self._results.put((s, e)))
            self._cursor = seq
            self.stats.sent += 1
            if seq - self.spool.acked >= self.max_in_flight:
                break

    def drained(self) -> bool:
        return self.spool.pending_count == 0

    def flush(self, timeout: float = 30.0, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Pump until everything spooled is acknowledged, ``timeout`` passes or we must stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop():
            self.pump()
            if self.drained():
                return True
            # KafkaTimeoutError: not everything answered yet; keep pumping
            with contextlib.suppress(Exception):
                self.producer.flush(timeout=0.2)
            time.sleep(0.01)
        self._drain_results()
        return self.drained()

    def _drain_results(self) -> None:
        while True:
            try:
                seq, error = self._results.get_nowait()
            except queue.Empty:
                break
            self._last_answer = time.monotonic()
            if error is None:
                self.stats.acked += 1
                if seq > self.spool.acked:  # a re-sent batch may be acknowledged twice
                    self._acked.add(seq)
                self._backoff_s = 0.5
            else:
                self._fail(seq, error)
        watermark = self.spool.acked
        while watermark + 1 in self._acked:
            watermark += 1
            self._acked.discard(watermark)
        if watermark > self.spool.acked:
            self.spool.ack(watermark)
        # Entries the spool dropped under its size bound are settled too.
        self._cursor = max(self._cursor, self.spool.acked)

    def _fail(self, seq: int, error: BaseException) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"
        if seq <= self._cursor:
            log.warning("send of batch %d failed (%s); resending from %d", seq, error,
                        self.spool.acked + 1)
            self._cursor = self.spool.acked  # rewind: resend everything unacknowledged
        if "Expiring" in str(error) and hasattr(self.producer, "reset"):
            self.producer.reset()  # an expired batch leaves the idempotent producer stuck
        # Exponential backoff, capped: an explicit retry signal instead of a busy loop.
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 10.0)
