"""The node's clock offset from the broker's, measured on delivery acknowledgements.

When the topic stamps records with the broker's clock (``message.timestamp.type=
LogAppendTime``), an acknowledgement carries the broker's time: the agent's offset is
``broker - (send + ack) / 2``, known to within half the round trip. Brokers that keep the
producer's timestamp (CreateTime, e.g. the embedded broker) give no broker time: the offset
stays unknown. The tightest recent measurement is kept; a warning is logged once when the
offset exceeds ``warn_s`` beyond its uncertainty (samples are stamped with the node's clock).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("agents.kafka")  # reported with the node's delivery


class ClockOffset:
    def __init__(self, warn_s: float = 2.0) -> None:
        self.warn_s = warn_s
        self.offset_ms: float | None = None  # broker clock - agent clock
        self.uncertainty_ms: float | None = None  # half the round trip of that measurement
        self._warned = False

    def measure(self, broker_ms: int | None, sent_ms: int) -> bool:
        """Learn from one acknowledgement; True if the kept measurement changed."""
        if broker_ms is None or broker_ms == sent_ms or broker_ms < 0:
            return False  # the record kept our own timestamp (CreateTime): nothing learned
        ack_ms = time.time() * 1000
        half_rtt = max(0.0, ack_ms - sent_ms) / 2
        offset = broker_ms - (sent_ms + ack_ms) / 2
        kept = False
        prev = self.uncertainty_ms
        if prev is None or half_rtt <= prev * 2:
            self.offset_ms, self.uncertainty_ms = offset, half_rtt
            kept = True
        beyond = abs(offset) - half_rtt > self.warn_s * 1000
        if beyond and not self._warned:
            log.warning(
                "this node's clock is %+.1f s off the broker's (±%.1f s); samples are stamped with "
                "the node's clock: fix NTP on this node",
                -offset / 1000,
                half_rtt / 1000,
            )
        self._warned = beyond
        return kept
