"""Delivery of spooled batches to Kafka with kafka-python: acks=all, idempotent, lz4, keyed by node.

:class:`Delivery` drains a :class:`~agents.spool.Spool` in sequence order. A batch leaves the
spool's pending set only when the broker acknowledged it *and* every earlier batch (the spool
acknowledges a contiguous prefix). When a send fails (broker down, timeout), delivery rewinds to
the oldest unacknowledged batch and sends again from there: some batches may reach the broker
twice, which is harmless because sample ids are deterministic; none is skipped.

Recovery and refill:

- **A broken producer is replaced.** kafka-python's idempotent producer can get stuck for good
  (an expired batch drops its producer id; a restarted broker answers ``InitProducerId`` with
  ``UnknownError`` forever). Delivery replaces the producer on any non-retriable error and after
  :data:`RESET_AFTER_FAILURES` failures in a row, and after :attr:`Delivery.stall_after_s`
  without any answer; replacements are spaced by a bounded backoff (1 s doubling to 30 s).
- **A broker that lost acknowledged data is refilled.** Each acknowledgement carries the offset
  the broker gave the record. Offsets only grow on a partition's log, so an acknowledgement
  *below* one seen before means the log went backwards (a memory-only broker restarted, a topic
  was deleted and recreated): delivery logs it and re-sends every batch the spool still retains.
  An operator can ask for the same with ``gpumeter agent resend --since T`` (a ``resend`` file
  in the node's spool directory, served by the running agent). Duplicates are harmless.
- **Clock offset.** When the topic stamps records with the broker's clock
  (``message.timestamp.type=LogAppendTime``), each acknowledgement carries the broker's time:
  the agent's offset is ``broker - (send + ack) / 2``, known to within half the round trip. It is
  kept in :class:`DeliveryStats` and a warning is logged when it exceeds
  :attr:`Delivery.clock_warn_s`. Brokers that keep the producer's timestamp (CreateTime, e.g. the
  embedded broker) give no broker time: the offset is then reported as unknown.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.clock_offset import ClockOffset
from agents.producer import ResettableProducer as ResettableProducer
from agents.producer import make_producer as make_producer
from agents.resend import RESEND_FILE as RESEND_FILE
from agents.resend import describe_retained
from agents.spool import Spool

log = logging.getLogger(__name__)

#: Failed sends in a row after which the producer is replaced even if the errors look retriable.
RESET_AFTER_FAILURES = 3


@dataclass
class DeliveryStats:
    sent: int = 0  # batches handed to the producer (including re-sends)
    acked: int = 0  # batches acknowledged by the broker
    failures: int = 0  # failed sends (each causes a rewind)
    last_error: str = ""
    resent: int = 0  # acknowledged batches sent again (refill after loss, operator resend)
    log_rewinds: int = 0  # times an acknowledgement showed the broker's log went backwards
    producer_resets: int = 0  # producer replacements this delivery asked for
    clock_offset_ms: float | None = None  # broker clock - agent clock; None: not measurable
    clock_uncertainty_ms: float | None = None  # half the round trip of that measurement


class Delivery:
    """Sends one node's spool to ``topic``. Call :meth:`pump` often from the owner thread."""

    def __init__(
        self,
        spool: Spool,
        producer: Any,
        topic: str,
        key: bytes,
        *,
        max_in_flight: int = 500,
        clock_warn_s: float = 2.0,
    ) -> None:
        self.spool = spool
        self.producer = producer
        self.topic = topic
        self.key = key
        self.max_in_flight = max_in_flight
        self.clock_warn_s = clock_warn_s
        self.stats = DeliveryStats()
        self._cursor = spool.acked  # highest seq handed to the producer
        self._acked: set[int] = set()  # acknowledged above the contiguous watermark
        self._results: queue.SimpleQueue[tuple[int, bool, Any, BaseException | None, int]] = (
            queue.SimpleQueue()
        )
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._consecutive_failures = 0
        self._generation = getattr(producer, "generation", 0)
        self._last_answer = time.monotonic()
        self.stall_after_s = 30.0  # > delivery_timeout_ms: no answer at all means a stuck producer
        self._high_offset: dict[int, int] = {}  # partition -> highest offset acknowledged
        self._resend: list[int] = []  # acknowledged seqs to send again, ascending
        self._resend_in_flight: set[int] = set()
        self._next_request_check = 0.0
        self._clock = ClockOffset(clock_warn_s)
        self._rewinds_seen = getattr(producer, "log_rewinds", 0)

    # -- the loop ------------------------------------------------------------------------------
    def pump(self) -> None:
        """Process broker answers, then send what is pending (unless backing off)."""
        self._drain_results()
        self._check_resend_request()
        rewinds = getattr(self.producer, "log_rewinds", 0)
        if rewinds != self._rewinds_seen:  # another node of this process saw the broker lose data
            self._rewinds_seen = rewinds
            n = self.request_resend(None)
            log.warning(
                "%s: the broker lost acknowledged data; re-sending the %d batch(es) this "
                "spool retains",
                self.key.decode(errors="replace"),
                n,
            )
        generation = getattr(self.producer, "generation", 0)
        if generation != self._generation:
            # The producer was replaced; sends in flight on the old one may never be answered.
            self._generation = generation
            self._rewind()
        elif (self._cursor > self.spool.acked or self._resend_in_flight) and (
            time.monotonic() - self._last_answer > self.stall_after_s
        ):
            log.warning(
                "no answer from the broker for %.0f s with batches in flight; resending from %d",
                self.stall_after_s,
                self.spool.acked + 1,
            )
            self._last_answer = time.monotonic()
            self._reset_producer("no answer", force=True)
            self._rewind()
        if time.monotonic() < self._retry_at:
            return
        if not self._send_resends():
            return
        in_flight = self._cursor - self.spool.acked
        if in_flight >= self.max_in_flight:
            return
        for entry, payload in self.spool.pending(after_seq=self._cursor):
            if not self._send(entry.seq, payload, resend=False):
                return
            self._cursor = entry.seq
            if entry.seq - self.spool.acked >= self.max_in_flight:
                break

    def drained(self) -> bool:
        return self.spool.pending_count == 0 and not self._resend and not self._resend_in_flight

    def flush(self, timeout: float = 30.0, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Pump until everything spooled is acknowledged, ``timeout`` passes or we must stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop():
            self.pump()
            if self.drained():
                return True
            # KafkaTimeoutError: not everything answered yet; keep pumping
            with contextlib.suppress(Exception):
                self.producer.flush(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            time.sleep(0.01)
        self._drain_results()
        return self.drained()

    # -- resend --------------------------------------------------------------------------------
    def request_resend(self, since_ts: int | None = None) -> int:
        """Send again every retained (acknowledged) batch that ends at or after ``since_ts``
        (all of them when None). Returns how many were queued."""
        seqs = [e.seq for e in self.spool.retained(since_ts)]
        self._resend = sorted(set(self._resend) | set(seqs))
        return len(seqs)

    def _check_resend_request(self) -> None:
        now = time.monotonic()
        if now < self._next_request_check:
            return
        self._next_request_check = now + 1.0
        path = Path(self.spool.directory) / RESEND_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return
        try:
            since = int(text) if text else None
        except ValueError:
            log.error("ignoring %s: expected an epoch second, got %r", path, text[:40])
            path.unlink(missing_ok=True)
            return
        n = self.request_resend(since)
        log.warning("resend requested (%s): %d retained batch(es) queued", path, n)
        path.unlink(missing_ok=True)

    def _send_resends(self) -> bool:
        """Send queued resends first (older data). False if a send failed."""
        if not self._resend:
            return True
        entries = {e.seq: e for e in self.spool.retained()}
        todo, self._resend = self._resend, []
        wanted = [entries[s] for s in todo if s in entries]  # beyond retention now: gone
        sent: set[int] = set()
        ok = True
        for entry, payload in self.spool.read(wanted):
            if len(self._resend_in_flight) >= self.max_in_flight or not self._send(
                entry.seq, payload, resend=True
            ):
                ok = False
                break
            sent.add(entry.seq)
        self._resend = [s for s in todo if s in entries and s not in sent]
        return ok and not self._resend

    # -- internals -----------------------------------------------------------------------------
    def _send(self, seq: int, payload: bytes, *, resend: bool) -> bool:
        if self._cursor == self.spool.acked and not self._resend_in_flight:
            self._last_answer = time.monotonic()  # the stall clock starts with the first send
        sent_ms = int(time.time() * 1000)
        try:
            future = self.producer.send(
                self.topic, key=self.key, value=payload, timestamp_ms=sent_ms
            )
        except Exception as exc:  # KafkaTimeoutError while the broker is away, buffer full
            self._fail(seq, resend, exc)
            return False
        future.add_callback(
            lambda md, s=seq, r=resend: self._results.put((s, r, md, None, sent_ms))
        )
        future.add_errback(lambda e, s=seq, r=resend: self._results.put((s, r, None, e, sent_ms)))
        self.stats.sent += 1
        if resend:
            self._resend_in_flight.add(seq)
            self.stats.resent += 1
        return True

    def _drain_results(self) -> None:
        while True:
            try:
                seq, resend, md, error, sent_ms = self._results.get_nowait()
            except queue.Empty:
                break
            self._last_answer = time.monotonic()
            if resend:
                self._resend_in_flight.discard(seq)
            if error is not None:
                self._fail(seq, resend, error)
                continue
            self.stats.acked += 1
            self._consecutive_failures = 0
            self._backoff_s = 0.5
            if hasattr(self.producer, "healthy"):
                self.producer.healthy()
            if md is not None:
                self._check_offset(md)
                self._measure_clock(md, sent_ms)
            if not resend and seq > self.spool.acked:  # a re-sent batch may be acknowledged twice
                self._acked.add(seq)
        watermark = self.spool.acked
        while watermark + 1 in self._acked:
            watermark += 1
            self._acked.discard(watermark)
        if watermark > self.spool.acked:
            self.spool.ack(watermark)
        self._acked = {s for s in self._acked if s > self.spool.acked}
        # Entries the spool dropped under its size bound are settled too.
        self._cursor = max(self._cursor, self.spool.acked)

    def _check_offset(self, md: Any) -> None:
        partition, offset = getattr(md, "partition", None), getattr(md, "offset", -1)
        if partition is None or offset is None or offset < 0:
            return
        high = self._high_offset.get(partition, -1)
        if offset <= high:
            self.stats.log_rewinds += 1
            if hasattr(self.producer, "log_rewinds"):
                self.producer.log_rewinds += 1
                self._rewinds_seen = self.producer.log_rewinds
            n = self.request_resend(None)
            log.error(
                "the broker's log for %s[%d] went backwards: offset %d acknowledged after %d. "
                "It lost acknowledged data (restarted in-memory broker, recreated topic); "
                "re-sending the %d batch(es) this spool still retains (%s)",
                self.topic,
                partition,
                offset,
                high,
                n,
                describe_retained(self.spool),
            )
        self._high_offset[partition] = offset

    def _measure_clock(self, md: Any, sent_ms: int) -> None:
        if self._clock.measure(getattr(md, "timestamp", None), sent_ms):
            self.stats.clock_offset_ms = self._clock.offset_ms
            self.stats.clock_uncertainty_ms = self._clock.uncertainty_ms

    def _rewind(self) -> None:
        self._cursor = self.spool.acked
        self._resend = sorted(set(self._resend) | self._resend_in_flight)
        self._resend_in_flight.clear()

    def _fail(self, seq: int, resend: bool, error: BaseException) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"
        self._consecutive_failures += 1
        if resend:
            self._resend = sorted(set(self._resend) | {seq})
        elif seq <= self._cursor:
            log.warning(
                "send of batch %d failed (%s); resending from %d", seq, error, self.spool.acked + 1
            )
            self._cursor = self.spool.acked  # rewind: resend everything unacknowledged
        retriable = getattr(error, "retriable", False) or "Expiring" in str(error)
        if "Expiring" in str(error) or not retriable:
            # An expired batch, or an error the producer will not get over by retrying
            # (e.g. InitProducerId answered UnknownError by a restarted broker).
            self._reset_producer(f"{type(error).__name__}: {error}")
        elif self._consecutive_failures >= RESET_AFTER_FAILURES:
            self._reset_producer(f"{self._consecutive_failures} failed sends in a row")
        # Exponential backoff, capped: an explicit retry signal instead of a busy loop.
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 10.0)

    def _reset_producer(self, reason: str, *, force: bool = False) -> None:
        reset = getattr(self.producer, "reset", None)
        if reset is not None and reset(reason, force=force):
            self.stats.producer_resets += 1
