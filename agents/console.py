"""What the agent command prints while it runs: the status line, the stop signal handler and
the delivery summary."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


class Stop:
    """SIGTERM/SIGINT: the first asks the agent to stop (sampling ends, delivery gets
    :data:`~agents.agent.STOP_GRACE_S` to send what it can, the rest stays spooled); a second
    one stops at once."""

    def __init__(self) -> None:
        self.now = False
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.now

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.now:
            raise KeyboardInterrupt
        self.now = True
        self.signal_name = signal.Signals(signum).name
        print(
            f"\n{self.signal_name}: stopping; unacknowledged batches stay in the spool "
            "(sent on the next start)",
            file=sys.stderr,
            flush=True,
        )


def delivery_report(agents: Sequence[Any], producer: object) -> str:
    """One line: producer replacements, broker log rewinds and refills, clock offset."""
    stats = [a.delivery.stats for a in agents]
    offsets = [s for s in stats if s.clock_offset_ms is not None]
    if offsets:
        best = min(offsets, key=lambda s: s.clock_uncertainty_ms or 0.0)
        clock = (
            f"clock offset vs broker {-(best.clock_offset_ms or 0) / 1000:+.3f} s "
            f"(±{(best.clock_uncertainty_ms or 0) / 1000:.3f} s)"
        )
    else:
        clock = "clock offset vs broker unknown (the topic keeps producer timestamps: CreateTime)"
    return (
        f"delivery: producer replaced {getattr(producer, 'resets', 0)} time(s); broker log went "
        f"backwards {sum(s.log_rewinds for s in stats)} time(s); "
        f"{sum(s.resent for s in stats)} acknowledged batch(es) re-sent; {clock}"
    )


def fmt_ts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class StatusLine:
    """One self-overwriting status line on a terminal; periodic plain lines otherwise."""

    def __init__(self, enabled: bool = True, every_s: float = 5.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1:
                sys.stderr.write("\r\x1b[2K" + text)
                sys.stderr.flush()
                self._last = now
        elif now - self._last >= self.every_s:
            print(text, file=sys.stderr, flush=True)
            self._last = now

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
