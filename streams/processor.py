"""The usage processor: validate -> count exactly -> persist, one chunk of records at a time.

Kept free of Faust so the commit path can be read and tested on its own. The Faust app
(:mod:`streams.app`) calls :meth:`UsageProcessor.process` with each chunk and acks the chunk's
offsets only after it returns. The steps, and what their order prevents:

1. Validate every record (v1 or v2) into frames (:mod:`streams.intake`). Bad records and
   bad samples or frames become rejections; nothing raises. Seconds dated beyond the
   clock-skew allowance are *parked* (rejected with code ``future_timestamp``); parked
   payloads whose time has come are re-admitted here too.
2. Reload, from the ledger, the state of GPU-minutes not in memory (after a restart or
   eviction), so a replayed second is recognised and a late one merges exactly.
3. Count the good frames (duplicates add nothing; conflicting claims follow the rule in
   :mod:`streams.conflict_rule`).
4. Write the raw archive (the newly counted seconds of each frame), then the ledger rows changed by this chunk, then conflicts,
   rejections and re-admissions. All are idempotent (the ledger merges by union, so another
   worker writing the same GPU-minute, before or after, cannot undo these writes); a crash
   anywhere here means the chunk is redelivered and re-written with no effect on totals. If a write raises, the in-memory state
   is dropped before the error propagates, so that a retry of the same chunk reloads the
   ledger and counts it again instead of finding every second "already counted". Once all
   are written, the rows' per-second readings leave memory (the ledger holds them; the masks
   and the sums stay), which bounds the state per device to masks.
5. Only now return: the caller acks (and later commits) the chunk's offsets. Committing
   before step 4 could lose usage on a crash; committing after can only cause replays.
6. Return closed minutes and rejections for the output topics (derived, replayable streams).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.frame import Frame
from streams.aggregate import Aggregator, FreshSpan, MinuteRow
from streams.intake import parse, parse_parked, rejection_index
from streams.records import RejectedRecord, SourceRecord
from streams.sink import UsageSink

#: How often parked (future-dated) samples are checked for re-admission, in seconds.
READMIT_INTERVAL_S = 30.0

log = logging.getLogger(__name__)


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
    conflicts: int = 0
    parked: int = 0
    readmitted: int = 0
    flushes: int = 0
    flush_seconds: float = 0.0


@dataclass
class ChunkOutput:
    closed: list[MinuteRow] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)


class UsageProcessor:
    def __init__(
        self,
        sink: UsageSink,
        *,
        grace_s: int = 120,
        max_future_skew_s: int = 300,
        keep_closed_s: int = 600,
    ) -> None:
        self.sink = sink
        # the aggregator reads a row's dropped readings back through the sink, rarely
        self.aggregator = Aggregator(grace_s=grace_s, reload=lambda keys: self.sink.load(keys))
        self.max_future_skew_s = max_future_skew_s
        self.keep_closed_s = keep_closed_s
        self.stats = ProcessorStats()
        self._next_readmit = 0.0

    def process(self, records: Sequence[SourceRecord]) -> ChunkOutput:
        # The cyclic garbage collector is paused for the chunk: its collections, triggered by
        # the chunk's allocations, traverse the whole minute state each time (they cost as
        # much as counting, measured by bench/bench_worker.py), while the chunk creates no
        # reference cycles to collect. Whatever cycles there are wait for the next collection
        # after the chunk; nothing is leaked or skipped.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._process(records)
        except BaseException:
            # The in-memory state may hold counts the ledger does not: forget it, so a retry
            # reloads the ledger and counts this chunk again (step 4).
            self.aggregator.clear()
            raise
        finally:
            if paused:
                gc.enable()

    def _process(self, records: Sequence[SourceRecord]) -> ChunkOutput:
        # 1. validate
        out = ChunkOutput()
        good: list[tuple[str, list[Frame]]] = []
        now = time.time()
        stats = self.stats
        skew = self.max_future_skew_s
        for rec in records:
            stats.records += 1
            parsed = parse(rec.value, now=now, max_future_skew_s=skew)
            node_id = parsed.node_id
            for r in parsed.rejections:
                index = rejection_index(r)
                out.rejected.append(
                    RejectedRecord(
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        index,
                        r.code,
                        r.reason,
                        node_id,
                        r.raw or rec.value,
                    )
                )
                if index < 0:
                    stats.rejected_records += 1
                elif r.code == "future_timestamp":
                    stats.parked += 1
                else:
                    stats.rejected_samples += 1
            if parsed.accepted:
                good.append((node_id, parsed.frames))
                stats.gap_seconds += parsed.gap_seconds
        readmitted = self._due_parked(records, now, good)
        # 2. reload state the aggregator does not hold (watermarks first: they decide which
        #    reloaded minutes had closed)
        unknown = self.aggregator.unknown_nodes(node for node, _ in good)
        if unknown:
            self.aggregator.seed_watermarks(self.sink.node_watermarks(unknown))
        missing = set()
        for _node, frames in good:
            missing |= self.aggregator.missing(frames)
        if missing:
            self.aggregator.preload(missing, self.sink.load(missing))
        # 3. count
        fresh: list[FreshSpan] = []
        for node_id, frames in good:
            result = self.aggregator.add(node_id, frames)
            stats.samples += sum(f.n for f in frames)
            stats.new_seconds += result.new_seconds
            stats.duplicates += result.duplicates
            stats.late += result.late
            stats.conflicts += result.conflicts
            fresh.extend(result.fresh)
        # 4. persist (idempotent writes)
        t0 = time.monotonic()
        self.sink.write_raw(fresh)
        self.sink.write_ledger(self.aggregator.take_dirty())
        self.sink.write_conflicts(self.aggregator.take_conflicts())
        self.sink.write_rejected(out.rejected)
        self.sink.mark_readmitted(readmitted)
        # the ledger now holds every row written or reloaded: their readings leave memory
        # (state stays masks and sums; an older state written again would still merge)
        self.aggregator.forget_written()
        self.stats.readmitted += len(readmitted)
        self.stats.flushes += 1
        self.stats.flush_seconds += time.monotonic() - t0
        # 6. derived outputs; memory stays bounded by evicting closed, flushed minutes
        out.closed = self.aggregator.close_ready()
        self.aggregator.evict_closed(self.keep_closed_s)
        return out

    def _due_parked(
        self,
        records: Sequence[SourceRecord],
        now: float,
        good: list[tuple[str, list[Frame]]],
    ) -> list[RejectedRecord]:
        """Parked seconds whose time is now within the skew allowance join this chunk.

        A parked payload is never lost: it stays in ``usage_rejected`` until it is counted here,
        and its re-admission is recorded only after the ledger holds it (step 4)."""
        if not records or now < self._next_readmit:
            return []
        self._next_readmit = now + READMIT_INTERVAL_S
        due: list[RejectedRecord] = []
        for topic in sorted({r.topic for r in records}):
            for parked in self.sink.load_parked(topic):
                frames = parse_parked(parked.raw, now=now, max_future_skew_s=self.max_future_skew_s)
                if frames is not None:
                    good.append((parked.node_id, frames))
                    due.append(parked)
        return due

    def reset(self) -> None:
        """Partitions moved: drop cached state (another worker may own those GPUs now)."""
        self.aggregator.clear()
