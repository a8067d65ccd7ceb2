"""The sink port in memory, with ClickHouse's semantics (checked against the real sink by
``tests/integration/test_sink_contract.py``)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from schemas.frame import Frame
from streams.aggregate import Conflict, FreshSpan, GpuGroupKey, MinuteRow
from streams.records import RejectedRecord

LedgerKey = tuple[int, str, str, str, str, int]  # (minute, gpu, mig, tenant, job, share_milli)
RawKey = tuple[str, str, int]  # (gpu, mig, ts): a second's identity


class FakeLedger:
    """The sink port in memory, with ClickHouse's semantics: ledger rows replace by key keeping
    the highest version (ReplacingMergeTree FINAL), raw seconds by their identity."""

    def __init__(self) -> None:
        self.ledger: dict[LedgerKey, MinuteRow] = {}
        self.raw: dict[RawKey, tuple[str, Frame]] = {}  # second -> (node, frame holding it)
        self.rejected: list[RejectedRecord] = []
        self.conflicts: dict[tuple[str, int, str, str, str, int], Conflict] = {}
        self.readmitted: set[tuple[str, int, int, int]] = set()
        self.work_units: list[list[Any]] = []
        self.loads: list[set[GpuGroupKey]] = []

    def load(self, keys: Iterable[GpuGroupKey]) -> list[MinuteRow]:
        wanted = set(keys)
        self.loads.append(wanted)
        return [copy_row(r) for r in self.ledger.values() if (r.gpu_uuid, r.minute) in wanted]

    def node_watermarks(self, nodes: Iterable[str]) -> dict[str, int]:
        wanted = set(nodes)
        out: dict[str, int] = {}
        for r in self.ledger.values():
            if r.node_id in wanted:
                out[r.node_id] = max(out.get(r.node_id, 0), r.minute + 59)
        return out

    def load_parked(self, topic: str) -> list[RejectedRecord]:
        return [
            r
            for r in self.rejected
            if r.code == "future_timestamp"
            and r.topic == topic
            and (r.topic, r.partition, r.offset, r.sample_index) not in self.readmitted
        ]

    def mark_readmitted(self, records: Sequence[RejectedRecord]) -> None:
        self.readmitted |= {(r.topic, r.partition, r.offset, r.sample_index) for r in records}

    def write_work_units(self, rows: Sequence[Sequence[Any]]) -> None:
        self.work_units.extend(list(r) for r in rows)

    def write_conflicts(self, conflicts: Sequence[Conflict]) -> None:
        for c in conflicts:
            key = (c.gpu_uuid, c.ts, c.loser_mig_uuid, *c.loser, c.loser_share_milli)
            self.conflicts[key] = c  # the losing row's identity, as usage_conflicts' ORDER BY

    def write_raw(self, spans: Sequence[FreshSpan]) -> None:
        for node_id, frame, minute, mask in spans:
            assert frame.start <= minute + (mask & -mask).bit_length() - 1
            assert minute + mask.bit_length() <= frame.end, "a span lies inside its frame"
            for s in range(60):
                if mask >> s & 1:
                    self.raw[(frame.gpu_uuid, frame.mig_uuid or "", minute + s)] = (node_id, frame)

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        """Merge by union, as usage_minutely (AggregatingMergeTree) does on FINAL."""
        for r in rows:
            key = (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job, r.share_milli)
            old = self.ledger.get(key)
            if old is None:
                self.ledger[key] = copy_row(r)  # a copy: the store owns its rows
            else:
                old.merge(r)

    def write_rejected(self, records: Sequence[RejectedRecord]) -> None:
        self.rejected.extend(records)

    def seconds_by_allocation(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for r in self.ledger.values():
            out[(r.tenant, r.job)] += r.gpu_seconds
        return out

    def milli_seconds_by_allocation(self) -> Counter[tuple[str, str]]:
        """Milli-GPU-seconds held per (tenant, job): seconds x share, summed."""
        out: Counter[tuple[str, str]] = Counter()
        for r in self.ledger.values():
            out[(r.tenant, r.job)] += r.gpu_milli_seconds
        return out

    def energy_by_allocation(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for r in self.ledger.values():
            out[(r.tenant, r.job)] += r.energy_mj
        return out


class ReplacingLedger(FakeLedger):
    """The ledger as 0001 stored it (ReplacingMergeTree(version)): the row with the highest
    version wins whole. Kept to show what the union ledger fixes (tests/unit/streams/
    test_many_writers.py)."""

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        for r in rows:
            key = (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job, r.share_milli)
            old = self.ledger.get(key)
            if old is None or r.version >= old.version:
                self.ledger[key] = copy_row(r)


def copy_row(r: MinuteRow) -> MinuteRow:
    return dataclasses.replace(r, readings=dict(r.settle()))
