"""The streams context's errors: one root, and the two ways a sink write can fail.

A sink never sleeps and retries on its own: a failure it classifies as transient (the server
is busy, a connection dropped, too many parts) is raised as :class:`SinkBackpressure` with the
time to wait, and the caller decides (pause and retry the same chunk, which the processor makes
safe, or give up and exit so a supervisor restarts the worker). Anything else is a
:class:`SinkError` carrying the server's code and name.
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of the stream worker's errors."""


class SinkError(StreamError):
    """A sink operation failed for a reason waiting will not fix (bad SQL, schema, data)."""

    def __init__(
        self, op: str, message: str, code: int | None = None, name: str | None = None
    ) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op
        self.code = code
        self.name = name


class SinkBackpressure(SinkError):
    """The store cannot take the write now; the same write may succeed after ``retry_after``
    seconds (quixstreams' SinkBackpressureError, without a topic: the processor is retried
    whole)."""

    def __init__(
        self,
        op: str,
        message: str,
        retry_after: float,
        code: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(op, message, code, name)
        self.retry_after = retry_after
