"""The usage processor: validate -> count exactly -> persist, one chunk of records at a time.

Kept free of Faust so the commit path can be read and tested on its own. The Faust app
(:mod:`streams.app`) calls :meth:`UsageProcessor.process` with each chunk and acks the chunk's
offsets only after it returns. The steps, and what their order prevents:

1. Validate every record. Bad records and bad samples become rejections; nothing raises.
2. Reload, from the ledger, the state of GPU-minutes not in memory (after a restart or
   eviction), so a replayed second is recognised and a late one merges exactly.
3. Count the good samples (duplicates add nothing).
4. Write the raw archive, then the ledger rows changed by this chunk, then rejections.
   All three are idempotent; a crash anywhere here means the chunk is redelivered and
   re-written with no effect on totals.
5. Only now return: the caller acks (and later commits) the chunk's offsets. Committing
   before step 4 could lose usage on a crash; committing after can only cause replays.
6. Return closed minutes and rejections for the output topics (derived, replayable streams).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.usage import GpuSecond
from schemas.validation import parse_batch
from streams.aggregate import Aggregator, MinuteRow
from streams.clickhouse.sink import LedgerSink, RejectedRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass
class ProcessorStats:
    records: int = 0
    samples: int = 0
    new_seconds: int = 0
    duplicates: int = 0
    late: int = 0
    rejected_records: int = 0
    rejected_samples: int = 0
    gap_seconds: int = 0
    flushes: int = 0
    flush_seconds: float = 0.0


@dataclass
class ChunkOutput:
    closed: list[MinuteRow] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)


class UsageProcessor:
    def __init__(self, sink: LedgerSink, *, grace_s: int = 120, max_future_skew_s: int = 300,
                 keep_closed_s: int = 600) -> None:
        self.sink = sink
        self.aggregator = Aggregator(grace_s=grace_s)
        self.max_future_skew_s = max_future_skew_s
        self.keep_closed_s = keep_closed_s
        self.stats = ProcessorStats()

    def process(self, records: Sequence[SourceRecord]) -> ChunkOutput:
        # 1. validate
        out = ChunkOutput()
        good: list[tuple[str, Sequence[GpuSecond]]] = []
        now = time.time()
        for rec in records:
            self.stats.records += 1
            parsed = parse_batch(rec.value, now=now)
            node_id = parsed.batch.node_id if parsed.batch else ""
            for r in parsed.rejections:
                out.rejected.append(RejectedRecord(
                    rec.topic, rec.partition, rec.offset,
                    -1 if r.sample_index is None else r.sample_index, r.code, r.reason, node_id,
                    r.raw or rec.value,
                ))
                if r.sample_index is None:
                    self.stats.rejected_records += 1
                else:
                    self.stats.rejected_samples += 1
            if parsed.batch is not None:
                good.append((node_id, parsed.batch.samples))
                self.stats.gap_seconds += sum(g.end - g.start for g in parsed.batch.gaps)
        # 2. reload state the aggregator does not hold
        missing = set()
        for _node, samples in good:
            missing |= self.aggregator.missing(samples)
        if missing:
            self.aggregator.preload(missing, self.sink.load(missing))
        # 3. count
        fresh: list[tuple[str, GpuSecond]] = []
        for node_id, samples in good:
            result = self.aggregator.add(node_id, samples)
            self.stats.samples += len(samples)
            self.stats.new_seconds += result.new_seconds
            self.stats.duplicates += result.duplicates
            self.stats.late += result.late
            fresh.extend((node_id, s) for s in result.new_samples)
        # 4. persist (idempotent writes)
        t0 = time.monotonic()
        self.sink.write_raw(fresh)
        self.sink.write_ledger(self.aggregator.take_dirty())
        self.sink.write_rejected(out.rejected)
        self.stats.flushes += 1
        self.stats.flush_seconds += time.monotonic() - t0
        # 6. derived outputs; memory stays bounded by evicting closed, flushed minutes
        out.closed = self.aggregator.close_ready()
        self.aggregator.evict_closed(self.keep_closed_s)
        return out

    def reset(self) -> None:
        """Partitions moved: drop cached state (another worker may own those GPUs now)."""
        self.aggregator.clear()
