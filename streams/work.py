"""The work-units processor: ``gpu.work.v1`` records (tokens served, ...) into ``work_units``.

Same policy as usage: validate every record, reject bad ones with a reason (into
``usage_rejected``, code ``invalid_work``, with the topic, partition and offset), never raise
on input, and write before the chunk's offsets are acked. The write is idempotent: the table is
a ReplacingMergeTree on the report's identity (tenant, job, unit, source, window_start).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.validation import describe
from schemas.work import WorkUnitsReported
from streams.records import RejectedRecord, SourceRecord
from streams.sink import UsageSink


class WorkProcessor:
    def __init__(self, sink: UsageSink) -> None:
        self.sink = sink
        self.accepted = 0
        self.rejected = 0

    def process(self, records: Sequence[SourceRecord]) -> list[RejectedRecord]:
        context = {"now": time.time()}
        rows: list[list[object]] = []
        rejected: list[RejectedRecord] = []
        for rec in records:
            try:
                report = WorkUnitsReported.model_validate_json(rec.value, context=context)
            except ValidationError as exc:
                rejected.append(
                    RejectedRecord(
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        -1,
                        "invalid_work",
                        describe(exc),
                        "",
                        rec.value,
                    )
                )
                continue
            rows.append(report.row())
        self.sink.write_work_units(rows)
        self.sink.write_rejected(rejected)
        self.accepted += len(rows)
        self.rejected += len(rejected)
        return rejected
