"""Liveness of the worker, its exit codes, and the one way it dies.

A meter that stops counting while its process looks healthy is the worst failure it can have,
so the worker never limps on: a crashed processor, a stalled consumer, a broker it cannot
reach at start or a stop that does not finish all end the process with a stated, non-zero
status (:class:`ExitCode`) and one line on stderr, and its supervisor restarts it. Restarting
is always safe: offsets are committed only after ClickHouse holds a chunk, and the processor
is idempotent, so a redelivered chunk changes no total.

:class:`Health` is plain bookkeeping, written by the event loop and read by the watchdog and
metrics threads (single attribute reads and writes of floats and ints, safe under the GIL).
It runs in threads on purpose: the processor's ClickHouse writes are synchronous, so a hung
write blocks the event loop, and a check that needed the loop would hang with it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

log = logging.getLogger(__name__)

#: Extra time the worker may take to start (connect, join its group) before the first tick of
#: its event loop; a group join on Apache Kafka waits up to the rebalance timeout (60 s).
STARTUP_ALLOWANCE_S = 90.0


class ExitCode(IntEnum):
    """How ``gpumeter worker`` ends. Anything but OK means: restart me (or fix configuration)."""

    OK = 0  #: stopped on request (SIGTERM/SIGINT, --exit-when-idle) after a clean shutdown
    CONFIG = 2  #: configuration or arguments are invalid (nothing to restart until fixed)
    UNAVAILABLE = 69  #: the broker could not be reached within --broker-wait-s at start
    SOFTWARE = 70  #: a processor, timer or persistence step raised; nothing of it was committed
    STALLED = 75  #: liveness failed: no progress for --stall-exit-s while records were waiting
    STOP_TIMEOUT = 76  #: a requested stop did not finish within --stop-timeout-s


def fatal(code: ExitCode, message: str, *, exc_info: bool = False) -> None:
    """Log, print one line, and end the process now, without running any more of Faust.

    ``os._exit`` on purpose: a normal exit would run Faust's shutdown, which acks and commits
    whatever it holds; dying here commits nothing, so every unflushed record is redelivered.
    Callable from any thread.
    """
    log.critical("%s (exit %d %s)", message, int(code), code.name, exc_info=exc_info)
    try:
        print(
            f"gpumeter worker: {message} (exit {int(code)} {code.name})",
            file=sys.stderr,
            flush=True,
        )
    finally:
        logging.shutdown()
        os._exit(int(code))


@dataclass
class Health:
    """When the worker last made progress, and whether it is stuck.

    Progress is a completed chunk, or an observation that nothing is waiting (lag 0: an idle
    topic is healthy). The worker is *stalled* when, for longer than ``stall_after_s``:

    - a chunk has been in the processor (a hung ClickHouse write, a deadlock), or
    - records were waiting (lag > 0) and no chunk completed (a processor that died or never
      receives its records while the consumer lives on), or
    - the event loop did not tick (something blocks it outside a chunk), or
    - the lag could not be measured (a rebalance that does not end, a broker that is away:
      the worker cannot tell whether it keeps up, so it says so).
    """

    stall_after_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    last_chunk_done: float = 0.0
    last_caught_up: float = 0.0
    last_loop_tick: float = 0.0
    chunk_started: float | None = None
    #: records waiting on the assigned partitions (fetch high watermark minus processed
    #: position); None until measured
    lag: int | None = None
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    log_rewinds: int = 0
    stop_requested: float | None = None
    ticked: bool = False
    #: when lag was last measured (a rebalance that never ends, a consumer that cannot
    #: answer or a broker that is away all stop the measurement)
    last_lag_observed: float = 0.0

    def __post_init__(self) -> None:
        now = self.clock()
        self.started = self.last_chunk_done = self.last_loop_tick = now
        self.last_lag_observed = now + STARTUP_ALLOWANCE_S  # joining the group takes a while

    # -- written by the event loop ---------------------------------------------------------
    def chunk_begins(self) -> None:
        self.chunk_started = self.clock()

    def chunk_done(self) -> None:
        self.chunk_started = None
        self.last_chunk_done = self.clock()

    def observe_lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        now = self.clock()
        self.last_loop_tick = self.last_lag_observed = now
        self.ticked = True
        self.partition_lag = dict(partition_lag)
        self.lag = sum(partition_lag.values())
        if self.lag == 0:
            self.last_caught_up = now

    def loop_tick(self) -> None:
        self.last_loop_tick = self.clock()
        self.ticked = True

    # -- read from any thread ---------------------------------------------------------------
    def progress_age(self) -> float:
        """Seconds since the worker last completed a chunk or had nothing to do."""
        return max(0.0, self.clock() - max(self.last_chunk_done, self.last_caught_up))

    def stalled(self) -> str | None:
        """Why the worker is stuck, or None when it is live."""
        now = self.clock()
        limit = self.stall_after_s
        started = self.chunk_started
        if started is not None and now - started > limit:
            return (
                f"a chunk has been in the processor for {now - started:.0f} s (limit {limit:.0f} s)"
            )
        # A chunk is processed synchronously and blocks the loop while it runs: judged above.
        # Before the first tick the worker is starting (joining its group): allowed longer.
        loop_limit = limit if self.ticked else limit + STARTUP_ALLOWANCE_S
        if started is None and now - self.last_loop_tick > loop_limit:
            if not self.ticked:
                return f"the worker has not started within {now - self.last_loop_tick:.0f} s"
            return f"the event loop has not ticked for {now - self.last_loop_tick:.0f} s"
        if self.ticked and now - self.last_lag_observed > limit:
            return (
                f"lag could not be measured for {now - self.last_lag_observed:.0f} s (the "
                "consumer group keeps rebalancing, or the broker does not answer)"
            )
        age = self.progress_age()
        if self.lag and age > limit:
            return (
                f"no chunk completed for {age:.0f} s while {self.lag:,} records were "
                f"waiting (limit {limit:.0f} s)"
            )
        return None


class Watchdog:
    """A daemon thread that ends the process when the worker stalls or will not stop.

    ``stall_exit_s`` <= 0 disables the stall exit (liveness is still reported); the stop
    timeout always applies once a stop was requested.
    """

    def __init__(
        self, health: Health, *, stall_exit: bool, stop_timeout_s: float, period_s: float = 1.0
    ) -> None:
        self.health = health
        self.stall_exit = stall_exit
        self.stop_timeout_s = stop_timeout_s
        self.period_s = period_s
        self._stalled_checks = 0
        self._thread = threading.Thread(target=self._run, name="gpumeter-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def check(self) -> None:
        """One round of checks (the thread calls this every ``period_s``)."""
        h = self.health
        if h.stop_requested is not None:
            waited = h.clock() - h.stop_requested
            if waited > self.stop_timeout_s:
                fatal(
                    ExitCode.STOP_TIMEOUT,
                    f"stop requested {waited:.0f} s ago and not finished (limit "
                    f"{self.stop_timeout_s:.0f} s); exiting without committing anything "
                    "further (unacked records are redelivered)",
                )
            return
        if self.stall_exit:
            reason = h.stalled()
            # Exit on the second stalled check in a row: /healthz has said 503 with the reason
            # for at least one period before the process goes, so an operator (or a probe)
            # can see why, and a momentary blip is confirmed before it ends the process.
            self._stalled_checks = self._stalled_checks + 1 if reason else 0
            if reason and self._stalled_checks >= 2:
                fatal(
                    ExitCode.STALLED,
                    f"worker stalled: {reason}; exiting so that a "
                    "supervisor restarts it (uncommitted records are redelivered)",
                )

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            self.check()
