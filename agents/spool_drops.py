"""What the spool was forced to give up, kept in ``dropped.json`` so that nothing is dropped
silently: counters of dropped batches and samples, and the dropped seconds still owed to the
broker as ``spool_full`` gaps.

A dropped second is *unreported* until a batch that carries it (``append(..., reports=...)``)
is acknowledged. Until then that batch is a *carrier*: if the carrier itself is dropped, the
seconds it carried become unreported again, with its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agents.segment import SpoolEntry
from agents.span import merge, subtract

Span = tuple[int, int]  # [start, end) seconds


class DropAccount:
    """The counters and owed gaps of one spool; :meth:`to_json` is the ``dropped.json`` text."""

    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        doc = doc or {}
        self.batches = int(doc.get("batches", 0))
        self.samples = int(doc.get("samples", 0))
        #: Dropped seconds not yet reported to the broker, as merged [start, end) ranges.
        self.unreported_gaps: list[Span] = [(int(g[0]), int(g[1])) for g in doc.get("gaps", [])]
        #: Pending batches that carry dropped seconds (seq -> gaps): owed again if dropped.
        self.carriers: dict[int, list[Span]] = {
            int(k): [(int(g[0]), int(g[1])) for g in v]
            for k, v in dict(doc.get("carriers", {})).items()
        }

    def carry(self, seq: int, reports: list[Span]) -> None:
        """Batch ``seq`` was stored carrying ``reports``: they are no longer unreported."""
        self.carriers[seq] = list(reports)
        self.unreported_gaps = subtract(self.unreported_gaps, list(reports))

    def settle(self, acked_seq: int) -> bool:
        """Batches up to ``acked_seq`` were acknowledged: what they carried is reported. True if
        that changed anything (the state file is then rewritten)."""
        if not any(c <= acked_seq for c in self.carriers):
            return False
        self.carriers = {c: g for c, g in self.carriers.items() if c > acked_seq}
        return True

    def lose(self, entries: Iterable[SpoolEntry]) -> None:
        """Unacknowledged ``entries`` were dropped: count them; their seconds, and the gaps
        they carried, are owed again."""
        gone = list(entries)
        spans = [(e.first_ts if e.first_ts is not None else e.last_ts, e.last_ts + 1) for e in gone]
        for e in gone:
            spans += self.carriers.pop(e.seq, [])
        self.count(len(gone), sum(e.n_samples for e in gone), spans)

    def count(self, batches: int, samples: int, spans: list[Span]) -> None:
        self.batches += batches
        self.samples += samples
        self.unreported_gaps = merge(self.unreported_gaps + spans)

    def to_json(self) -> str:
        return json.dumps(
            {
                "batches": self.batches,
                "samples": self.samples,
                "gaps": [list(g) for g in self.unreported_gaps],
                "carriers": {str(k): [list(g) for g in v] for k, v in self.carriers.items()},
            }
        )
