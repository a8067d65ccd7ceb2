"""``--exit-when-idle``: end a batch run only when the whole topic is done, not just this worker.

Idle means, all at once:

1. no new record for ``idle_s`` seconds (and at least one was processed);
2. caught up on every partition assigned to this worker, *measured just now* (after a
   rebalance a partition can take seconds to fetch: a partition not fetched yet counts as
   waiting, see :mod:`streams.consumer`);
3. the consumer group's committed offsets at the end of every partition of its topics,
   whoever holds them (:class:`streams.group_lag.GroupLag`). A member killed with -9 keeps its
   partitions, unread, until its session expires, and no worker sees them in its own
   assignment: without this check two live workers once both ended a batch with a partition
   never read.

The group check is a blocking kafka-python call, run in the loop's executor, one at a time.
While the group is behind, the worker says which partitions (every 30 s) and keeps waiting.

A check that fails never counts as caught up. What it does next depends on the failure:

- a retriable error (broker away, coordinator moving: kafka-python's ``retriable`` errors and
  ``OSError``) is logged and retried at the next check; if the group could not be read at all
  for ``give_up_s`` (120 s by default), the run ends with exit 69 (UNAVAILABLE): a batch that
  waits for ever on a lag nobody can read is a stuck meter that looks alive;
- a refusal by the deployment (an ACL refusing DescribeGroups/OffsetFetch on the group,
  credentials the broker refuses, an unsupported broker) cannot pass by waiting: the run ends
  at once with exit 2 (CONFIG) and says what the worker needs;
- anything else (an unexpected error of the client or of this code) ends the run at once
  with exit 70 (SOFTWARE).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from streams.health import ExitCode, fatal

log = logging.getLogger(__name__)


class IdleExit:
    def __init__(
        self,
        idle_s: float,
        group: str,
        behind: Callable[[], dict[str, int]],
        *,
        stop: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM),
        give_up_s: float = 120.0,
        die: Callable[[ExitCode, str], None] = fatal,
    ) -> None:
        self.idle_s = idle_s
        self.group = group
        self._behind = behind  # "topic[partition]" -> records the group has not committed
        self._stop = stop
        self._give_up_s = give_up_s
        self._die = die
        self._task: asyncio.Future[None] | None = None
        self._said = -60.0
        self._failing_since: float | None = None  # first failed read of a failing streak
        self.stopping = False  # the stop was requested: no further group check

    def check(self, *, records: int, last_record_at: float, caught_up_here: bool) -> None:
        """Called every second (the status timer): start a group check once idle here."""
        if (
            records
            and time.monotonic() - last_record_at > self.idle_s
            and caught_up_here
            and self._task is None
            and not self.stopping
        ):
            self._task = asyncio.ensure_future(self._exit_if_group_caught_up())

    async def _exit_if_group_caught_up(self) -> None:
        try:
            behind = await asyncio.get_running_loop().run_in_executor(None, self._behind)
        except Exception as exc:  # noqa: BLE001 - classified below; never counts as caught up
            self._task = None
            self._failed(exc)
            return
        self._task = None
        self._failing_since = None
        if not behind:
            close = getattr(self._behind, "close", None)
            if close is not None:
                close()  # the lag readers' connections, before the worker stops
            # Once: the status timer keeps ticking while the worker shuts down, and a check
            # then would reopen the readers and signal the stop again.
            self.stopping = True
            self._stop()
        elif time.monotonic() - self._said >= 30:
            self._said = time.monotonic()
            print(
                f"worker: idle here, but group {self.group!r} is behind on {behind} "
                "(topic[partition]: records; held by another member or not yet reassigned); "
                "--exit-when-idle waits for it",
                file=sys.stderr,
                flush=True,
            )

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if configuration_error(exc):
            self._die(
                ExitCode.CONFIG,
                f"--exit-when-idle cannot read the committed offsets of group {self.group!r}: "
                f"{exc!r}; the worker needs Describe on the group and its topics "
                "(OffsetFetch, DescribeGroups, ListOffsets), credentials the broker accepts, "
                "and a broker that supports these requests",
            )
        elif not retriable(exc):
            self._die(
                ExitCode.SOFTWARE,
                f"--exit-when-idle failed reading group {self.group!r}'s lag: {exc!r} "
                "(neither a passing broker failure nor a refusal by the broker's "
                "configuration); the run cannot tell whether every partition was processed",
            )
        elif now - self._failing_since > self._give_up_s:
            self._die(
                ExitCode.UNAVAILABLE,
                f"--exit-when-idle could not read group {self.group!r}'s lag for "
                f"{now - self._failing_since:.0f} s (last error {exc!r}); the run cannot tell "
                "whether every partition was processed",
            )
        else:
            log.warning("cannot read the group's lag (retrying): %r", exc)


def configuration_error(exc: BaseException) -> bool:
    """A refusal that only a change of the deployment fixes: an ACL (authorization), failed
    SASL credentials, a broker too old for the requests."""
    from kafka.errors import (
        AuthorizationError,
        SaslAuthenticationFailedError,
        UnsupportedVersionError,
    )

    return isinstance(
        exc, AuthorizationError | SaslAuthenticationFailedError | UnsupportedVersionError
    )


def retriable(exc: BaseException) -> bool:
    """A failure that can pass by waiting: kafka-python's retriable errors (a broker nobody
    reaches is a retriable ``KafkaTimeoutError`` "Unable to bootstrap"), network errors."""
    from kafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError | TimeoutError)


class GroupLagReader:
    """What the group has not committed on ``topics``, per "topic[partition]" (clients opened
    on the first call, in the executor; closed by :meth:`close`)."""

    def __init__(
        self, bootstrap: str, group: str, topics: tuple[str, ...], options: dict[str, Any]
    ) -> None:
        self.bootstrap, self.group, self.topics, self.options = bootstrap, group, topics, options
        self._readers: list[Any] = []

    def __call__(self) -> dict[str, int]:
        if not self._readers:
            from streams.group_lag import GroupLag

            self._readers.extend(
                GroupLag(self.bootstrap, self.group, t, **self.options) for t in self.topics
            )
        return {f"{r.topic}[{p}]": n for r in self._readers for p, n in sorted(r.behind().items())}

    def close(self) -> None:
        for r in self._readers:
            r.close()
        self._readers.clear()


def group_lag_reader(
    bootstrap: str, group: str, topics: tuple[str, ...], options: dict[str, Any]
) -> GroupLagReader:
    return GroupLagReader(bootstrap, group, topics, options)
