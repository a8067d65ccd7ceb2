"""Noticing a broker log that went backwards, instead of skipping what it holds now.

A broker that lost its log (the embedded broker keeps it in memory only, so a restart empties
it; on Apache Kafka: a deleted and recreated topic, an unclean leader election) leaves a running
consumer positioned beyond the new end of the log. Kafka would answer the next fetch with
OFFSET_OUT_OF_RANGE and the consumer would reset; the embedded broker instead waits for data,
and once the log grows past the old position the worker reads on from there: everything before
it is skipped silently (measured: committed 132, new log end 0, offsets 0-131 never read).

The rule (documented in ``streams/README.md``): for every assigned partition, compare the
consumer's position with the partition's **fetch high watermark** (the log end carried by each
fetch response; the embedded broker's ListOffsets end can trail the true end while a producer
batches, 11,474 for 11,520, so it is not used). The log went backwards when

- the position is beyond the high watermark, or
- the high watermark is lower than one seen before on this assignment,

on ``confirm`` consecutive checks (one check could see a response from just before a seek).
Then the worker logs an ERROR naming topic, partition, position and end, counts it in
``gpumeter_worker_log_rewinds_total``, and re-reads the partition from the earliest retained
offset. Re-reading is harmless: every GPU-second already counted is recognised as a duplicate.

Offsets cannot see a new log that has already grown past the worker's old position before any
check saw it shorter; :mod:`streams.consumer` also compares the record at the last processed
offset with what the worker saw there, which can.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rewind:
    """A partition whose log went behind the worker."""

    tp: Hashable
    position: int
    end: int
    reason: str


@dataclass
class LogGuard:
    confirm: int = 2
    _suspect: dict[Hashable, int] = field(default_factory=dict)
    _max_end: dict[Hashable, int] = field(default_factory=dict)

    def observe(self, tp: Hashable, position: int | None, end: int | None) -> Rewind | None:
        """One check of one partition; a :class:`Rewind` once the loss is confirmed."""
        if position is None or end is None or end < 0:
            return None
        seen = self._max_end.get(tp, -1)
        reason = None
        if position > end:
            reason = f"position {position} is beyond the log end {end}"
        elif end < seen:
            reason = f"the log end went back from {seen} to {end}"
        if reason is None:
            self._suspect.pop(tp, None)
            self._max_end[tp] = max(seen, end)
            return None
        n = self._suspect.get(tp, 0) + 1
        self._suspect[tp] = n
        if n < self.confirm:
            return None
        return Rewind(tp, position, end, reason)

    def rewound(self, tp: Hashable) -> None:
        """The worker re-reads ``tp`` from the start: forget what was seen of the old log."""
        self._suspect.pop(tp, None)
        self._max_end.pop(tp, None)

    def forget(self, tps: object) -> None:
        """Partitions revoked: a later assignment starts fresh."""
        for tp in list(self._max_end) + list(self._suspect):
            if tp in tps:  # type: ignore[operator]
                self.rewound(tp)
