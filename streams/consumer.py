"""Watching the worker's Faust consumer: lag, crashed services, and a broker log that went back.

Runs in a Faust timer every second (:meth:`ConsumerCheck.run`). Two ways of noticing that the
broker's log is no longer the one the worker read (see :mod:`streams.rewind` for why it
matters and ``streams/README.md`` for the rule):

1. offsets: the position beyond the fetch high watermark, or the high watermark going back
   (:class:`~streams.rewind.LogGuard`);
2. content: after every partition assignment (a restarted broker makes the worker rejoin its
   group) and every ``probe_every_s``, an *anchor* record the worker processed is fetched again
   by a separate consumer and compared with what the worker saw there (its timestamp and a CRC
   of its value); only when it is found does the anchor advance to the latest processed
   record. A log that was recreated and refilled past the worker's position passes (1) but
   not (2), even when the worker has already read on in the new log (its records cannot vouch
   for themselves: the anchor is older than them).

A confirmed loss is handled in two phases, because records of the old log may still sit in the
processor's buffer, and an ack of one after the reset would be committed as an offset of the new
log: the partition is paused (Faust stops delivering it), and once nothing of it is unacked and
no chunk is in the processor, the consumer seeks to offset 0 (the earliest retained offset, by
the consumer's reset policy), Faust's bookkeeping of the partition is reset and it is resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faust
from aiokafka.errors import IllegalStateError, KafkaError, OffsetOutOfRangeError
from faust.exceptions import ConsumerNotStarted

from streams.health import ExitCode, Health, fatal
from streams.rewind import LogGuard

log = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass(frozen=True)
class Fingerprint:
    """What the worker saw at one offset: enough to tell another record there."""

    offset: int
    timestamp_ms: int
    crc: int


def fingerprint(offset: int, timestamp_s: float | None, value: bytes | None) -> Fingerprint:
    return Fingerprint(offset, round((timestamp_s or 0.0) * 1000), zlib.crc32(value or b""))


@dataclass
class Progress:
    """Per partition: the offset after the last record processed (for lag) and its fingerprint."""

    next_offset: dict[Key, int] = field(default_factory=dict)
    last: dict[Key, Fingerprint] = field(default_factory=dict)

    def done(self, events: Sequence[faust.EventT]) -> None:
        for e in events:
            m = e.message
            key = (m.topic, m.partition)
            if m.offset + 1 > self.next_offset.get(key, -1):
                self.next_offset[key] = m.offset + 1
                value = e.value if isinstance(e.value, bytes) else m.value
                self.last[key] = fingerprint(m.offset, m.timestamp, value)

    def forget(self, key: Key) -> None:
        self.next_offset.pop(key, None)
        self.last.pop(key, None)


class LogProbe:
    """Reads single records by offset with a consumer of its own (no group, no commits)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._consumer: Any = None

    async def record_at(
        self, tp: Any, offset: int, timeout_s: float = 3.0
    ) -> Fingerprint | None | Literal[False]:
        """The fingerprint of the record at ``offset``; False when the log ends before it;
        None when it could not tell (no answer in time, broker away)."""
        try:
            return await self._record_at(tp, offset, timeout_s)
        except KafkaError as exc:
            # The broker is away or the topic is being recreated: cannot tell now; the check
            # runs again at the next assignment or period.
            log.warning(
                "could not re-read %s[%d] at offset %d to verify the log: %r",
                tp.topic,
                tp.partition,
                offset,
                exc,
            )
            await self.stop()
            return None

    async def _record_at(
        self, tp: Any, offset: int, timeout_s: float
    ) -> Fingerprint | None | Literal[False]:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

        if self._consumer is None:
            conf = self.app.conf
            consumer = AIOKafkaConsumer(
                bootstrap_servers=[f"{u.host}:{u.port or 9092}" for u in conf.broker],
                enable_auto_commit=False,
                auto_offset_reset="none",
                fetch_max_wait_ms=200,
                **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
            )
            try:
                await consumer.start()
            except KafkaError:
                await consumer.stop()
                raise
            self._consumer = consumer
        c = self._consumer
        atp = TopicPartition(tp.topic, tp.partition)
        c.assign([atp])
        c.seek(atp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                batch = await c.getmany(atp, timeout_ms=300, max_records=1)
            except OffsetOutOfRangeError:  # Kafka's answer: the offset is not in the log
                # Below the log start while the log goes on past it: retention deleted it, and
                # everything up to it, which the worker had processed. Not a loss.
                ends = await c.end_offsets([atp])
                return None if ends.get(atp, 0) > offset else False
            for r in batch.get(atp, []):
                if r.offset == offset:
                    return Fingerprint(offset, r.timestamp, zlib.crc32(r.value or b""))
                if r.offset > offset:  # compacted or truncated away
                    return False
            end = c.highwater(atp)
            if end is not None and end <= offset:
                return False
        return None

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class ConsumerCheck:
    def __init__(
        self, app: faust.App, health: Health, progress: Progress, probe_every_s: float = 10.0
    ) -> None:
        self.app = app
        self.health = health
        self.progress = progress
        self.guard = LogGuard()
        self.probe = LogProbe(app)
        self.probe_every_s = probe_every_s
        self._probe_due = 0.0
        #: partitions paused for a rewind, with the reason
        self.pending: dict[Any, str] = {}
        #: per partition, a record the worker processed that the next probe must still find
        #: in the broker's log; it advances to the latest processed record only after it was
        #: found, so records read from a replaced log can never vouch for themselves
        self.anchor: dict[Key, Fingerprint] = {}

    # -- Faust signals ------------------------------------------------------------------------
    def assigned(self) -> None:
        """A (re)assignment: a restarted broker makes the worker rejoin; check content soon."""
        self._probe_due = 0.0

    def revoked(self, tps: Any) -> None:
        self.guard.forget(tps)
        for tp in list(self.pending):
            if tp in tps:
                del self.pending[tp]

    # -- the timer ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Lag, lost logs, and Faust services that crashed."""
        health = self.health
        health.loop_tick()
        app = self.app
        self._fail_if_crashed()
        if self._stopping():
            return
        if getattr(app, "rebalancing", False):
            # Faust is revoking or assigning: positions are about to be reset to the committed
            # offsets, so neither measure nor rewind now (a seek here could be undone by the
            # assignment). Liveness counts the time without a measurement.
            return
        try:
            assigned = sorted(app.consumer.assignment())
            await self._rewind_pending()
            lags = await self._offsets(assigned)
            if lags is None:
                return
            self._anchor_new(assigned)
            if time.monotonic() >= self._probe_due and health.chunk_started is None:
                self._probe_due = time.monotonic() + self.probe_every_s
                await self._probe(assigned)
        except (ConsumerNotStarted, IllegalStateError, AssertionError) as exc:
            # No group joined yet, or a partition revoked between two calls (the consumer runs
            # in its own thread; aiokafka asserts a partition is assigned): the next check
            # starts over. Liveness keeps judging by the last lag seen.
            log.debug("consumer check skipped: %r", exc)
            return
        except Exception as exc:
            self._fail_if_crashed()  # a crash stops services too: never taken for a shutdown
            if self._stopping():
                # The worker is shutting down (--exit-when-idle, SIGTERM): Faust stops the
                # consumer's thread and closes its loop while this timer may still be inside
                # a call to it ("Event loop is closed"). Nothing is measured any more, and no
                # chunk depends on this check, so the shutdown goes on; the same error while
                # running is a real failure and ends the worker (``guarded``).
                log.debug("consumer check interrupted by the shutdown: %r", exc)
                return
            raise
        health.observe_lag(lags)

    def _fail_if_crashed(self) -> None:
        """A Faust service that crashed ends the worker (it would otherwise look alive)."""
        app = self.app
        for svc in (app, app.consumer, app.producer, getattr(app.consumer, "_thread", None)):
            reason = getattr(svc, "crash_reason", None)
            if reason is not None:
                fatal(ExitCode.SOFTWARE, f"{type(svc).__name__} crashed: {reason!r:.300}")

    def _stopping(self) -> bool:
        """The app, its consumer or the consumer's thread has begun to stop."""
        app = self.app
        consumer = app.consumer
        services = (app, consumer, getattr(consumer, "_thread", None))
        return any(getattr(s, "should_stop", False) is True for s in services)

    async def _offsets(self, assigned: list[Any]) -> dict[Key, int] | None:
        """Lag per partition against the fetch high watermark; feeds the log guard."""
        consumer = self.app.consumer
        lags: dict[Key, int] = {}
        for tp in assigned:
            end = consumer.highwater(tp)
            try:
                position = await asyncio.wait_for(consumer.position(tp), 5.0)
            except TimeoutError:  # the broker is away
                return None
            rewind = self.guard.observe(tp, position, end)
            if rewind is not None:
                self._lost(tp, rewind.reason)
            if tp in self.pending:
                continue
            if end is None or end < 0:
                # Assigned but no fetch answered yet: records may be waiting. Counted as one
                # waiting record, so the worker is neither "idle" (--exit-when-idle would end
                # a batch run with a partition never read) nor healthy forever if it never
                # fetches (the stall limit applies).
                lags[(tp.topic, tp.partition)] = 1
                continue
            done = self.progress.next_offset.get((tp.topic, tp.partition))
            lags[(tp.topic, tp.partition)] = max(
                0, end - (done if done is not None else position or 0)
            )
        return lags

    def _anchor_new(self, assigned: list[Any]) -> None:
        """Partitions with records processed but no anchor yet: the first one becomes it."""
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if key not in self.anchor and key in self.progress.last:
                self.anchor[key] = self.progress.last[key]

    async def _probe(self, assigned: list[Any]) -> None:
        for tp in assigned:
            key = (tp.topic, tp.partition)
            seen = self.anchor.get(key)
            if seen is None or tp in self.pending:
                continue
            latest = self.progress.last.get(key, seen)
            now = await self.probe.record_at(tp, seen.offset)
            if now is None:  # no answer: try again soon
                self._probe_due = min(self._probe_due, time.monotonic() + 5.0)
                continue
            if now is False:
                self._lost(
                    tp,
                    f"the record at offset {seen.offset} that this worker processed "
                    "is no longer in the log",
                )
            elif (now.timestamp_ms, now.crc) != (seen.timestamp_ms, seen.crc):  # a Fingerprint
                self._lost(
                    tp,
                    f"the record at offset {seen.offset} is not the one this worker "
                    "processed there (the log was recreated)",
                )
            else:
                self.anchor[key] = latest

    def _lost(self, tp: Any, reason: str) -> None:
        if tp in self.pending:
            return
        log.error(
            "the broker's log of %s[%d] is not the one this worker read (%s): the broker "
            "lost data or the topic was recreated; re-reading the partition from its "
            "earliest offset (records already counted are recognised as duplicates)",
            tp.topic,
            tp.partition,
            reason,
        )
        self.pending[tp] = reason
        self.app.consumer.pause_partitions([tp])

    async def _rewind_pending(self) -> None:
        if not self.pending or self.health.chunk_started is not None:
            return
        consumer = self.app.consumer
        unacked = {m.tp for m in consumer._unacked_messages}  # type: ignore[attr-defined]
        for tp in [tp for tp in self.pending if tp not in unacked]:
            await consumer.seek(tp, 0)
            # Faust's bookkeeping is about the old log; kept, it would refuse to ack and
            # commit the re-read offsets below the old position.
            consumer._committed_offset[tp] = None  # type: ignore[attr-defined]
            consumer._acked.pop(tp, None)  # type: ignore[attr-defined]
            consumer._acked_index.pop(tp, None)  # type: ignore[attr-defined]
            consumer._gap.pop(tp, None)  # type: ignore[attr-defined]
            self.progress.forget((tp.topic, tp.partition))
            self.anchor.pop((tp.topic, tp.partition), None)
            self.guard.rewound(tp)
            del self.pending[tp]
            consumer.resume_partitions([tp])
            self.health.log_rewinds += 1
            log.error("re-reading %s[%d] from its earliest offset", tp.topic, tp.partition)
