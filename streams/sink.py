"""The port the processors write through. :class:`streams.clickhouse.sink.LedgerSink` is the
real one; ``tests/fakes/ledger.py`` is the in-memory one, and one contract test suite
(``tests/integration/test_sink_contract.py``) runs against both.

Every write is idempotent on its identity, and ledger rows merge by union, so any write may be
repeated, reordered or done by another worker too. A write that fails raises
:class:`streams.errors.SinkBackpressure` (transient: wait ``retry_after`` and retry the chunk)
or :class:`streams.errors.SinkError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from streams.minute_state import Conflict, FreshSpan, GpuGroupKey, MinuteRow
from streams.records import RejectedRecord


class UsageSink(Protocol):
    # -- reads (state a restarted or rebalanced worker needs) --------------------------------
    def load(self, keys: Iterable[GpuGroupKey]) -> list[MinuteRow]:
        """The stored rows of these physical GPU-minutes (parent and slices)."""
        ...

    def node_watermarks(self, nodes: Iterable[str]) -> dict[str, int]:
        """The newest stored second of each node."""
        ...

    def load_parked(self, topic: str) -> list[RejectedRecord]:
        """Samples parked for a future timestamp and not yet re-admitted."""
        ...

    # -- writes, in the processor's commit order ----------------------------------------------
    def write_raw(self, spans: Sequence[FreshSpan]) -> None:
        """Archive newly counted seconds (per-second truth), a frame-minute at a time."""
        ...

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None: ...

    def write_conflicts(self, conflicts: Sequence[Conflict]) -> None: ...

    def write_rejected(self, records: Sequence[RejectedRecord]) -> None: ...

    def mark_readmitted(self, records: Sequence[RejectedRecord]) -> None: ...

    def write_work_units(self, rows: Sequence[Sequence[Any]]) -> None: ...
