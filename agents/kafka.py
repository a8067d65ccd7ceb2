"""Delivery of spooled batches to Kafka with kafka-python: acks=all, idempotent, lz4, keyed by node.

:class:`Delivery` drains a :class:`~agents.spool.Spool` in sequence order. A batch leaves the
spool only when the broker acknowledged it *and* every earlier batch (the spool acknowledges a
contiguous prefix). When a send fails (broker down, timeout), delivery rewinds to the oldest
unacknowledged batch and sends again from there: some batches may reach the broker twice, which
is harmless because sample ids are deterministic; none is skipped.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Any

from agents.spool import Spool

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, client_id: str = "gpumeter-agent", **overrides: Any) -> Any:
    from kafka import KafkaProducer

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
        max_block_ms=2_000,  # send() must not stall sampling for long when the broker is away
        max_request_size=8 * 1024**2,
        reconnect_backoff_max_ms=2_000,
    )
    config.update(overrides)
    return KafkaProducer(**config)


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

    def pump(self) -> None:
        """Process broker answers, then send what is pending (unless backing off)."""
        self._drain_results()
        if time.monotonic() < self._retry_at:
            return
        in_flight = self._cursor - self.spool.acked
        if in_flight >= self.max_in_flight:
            return
        for entry, payload in self.spool.pending(after_seq=self._cursor):
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

    def flush(self, timeout: float = 30.0) -> bool:
        """Pump until everything spooled is acknowledged or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if self.drained():
                return True
            try:
                self.producer.flush(timeout=0.2)
            except Exception:  # KafkaTimeoutError: not everything answered yet; keep pumping
                pass
            time.sleep(0.01)
        self._drain_results()
        return self.drained()

    def _drain_results(self) -> None:
        while True:
            try:
                seq, error = self._results.get_nowait()
            except queue.Empty:
                break
            if error is None:
                self.stats.acked += 1
                self._acked.add(seq)
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
        self._retry_at = time.monotonic() + 1.0
