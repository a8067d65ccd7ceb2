"""The preemptions processor: ``gpu.preemptions.v1`` records into the ``preemptions`` table.

Same policy as usage and work units (streams/work.py): validate every record
(:meth:`schemas.preemption.PreemptionReported.parse`: strict, nothing coerced), reject a bad
one with a reason (into ``usage_rejected``, code ``invalid_preemption``, with the topic,
partition and offset and the raw bytes), never raise on input, and write before the chunk's
offsets are acked. The write is idempotent: the table is a ReplacingMergeTree on the record's
identity (tenant, job, gpu_uuid, mig_uuid, at), so a replayed chunk changes nothing.

What a preemption cost is not computed here: the ``preemption_losses`` view counts it from the
ledger (migration 0033), whenever the usage arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.preemption import PREEMPTION_COLUMNS, PreemptionReported
from schemas.reason import MAX_REASON_CHARS
from schemas.validation import describe
from streams.records import RejectedRecord, SourceRecord

#: The rejection code of a refused preemption record (``usage_rejected.code``).
REJECT_CODE = "invalid_preemption"


class PreemptionSink(Protocol):
    """What the processor writes through: the preemption rows and the rejected records."""

    def write_preemptions(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def write_rejected(self, records: Sequence[RejectedRecord]) -> None: ...


class PreemptionProcessor:
    def __init__(self, sink: PreemptionSink, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.clock = clock
        self.accepted = 0
        self.rejected = 0

    def process(self, records: Sequence[SourceRecord]) -> list[RejectedRecord]:
        """Validate and store one chunk; returns the records refused. Raises only when the store fails (the chunk is then retried)."""
        now = self.clock()
        rows: list[list[object]] = []
        rejected: list[RejectedRecord] = []
        for rec in records:
            try:
                report = PreemptionReported.parse(rec.value, now=now)
            except ValidationError as exc:
                why = describe(exc)
            except ValueError as exc:  # not JSON, or not a JSON object
                why = f"not a preemption record: {exc}"[:MAX_REASON_CHARS]
            else:
                rows.append(report.row())
                continue
            rejected.append(
                RejectedRecord(
                    rec.topic, rec.partition, rec.offset, -1, REJECT_CODE, why, "", rec.value
                )
            )
        # Rows first, then rejections; both before the caller acks the chunk's offsets, so a
        # crash in between replays the chunk, which rewrites the same identities.
        self.sink.write_preemptions(rows)
        self.sink.write_rejected(rejected)
        self.accepted += len(rows)
        self.rejected += len(rejected)
        return rejected


class ClickHousePreemptionSink:
    """:class:`PreemptionSink` over the worker's ledger sink: its client and its error
    classification (a transient ClickHouse failure is back-pressure, the chunk is retried)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def write_preemptions(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.ledger._call(
                "insert preemptions",
                lambda: self.ledger.client.insert(
                    "preemptions", rows, column_names=list(PREEMPTION_COLUMNS)
                ),
            )

    def write_rejected(self, records: Sequence[RejectedRecord]) -> None:
        self.ledger.write_rejected(records)
