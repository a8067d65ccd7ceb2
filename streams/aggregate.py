"""Exact per-minute aggregation of GPU-second samples: the heart of the exactness invariant.

State is kept per GPU-minute ``(gpu_uuid, mig_uuid, minute)``, the domain of the sample
identity. ``counted`` is a 60-bit mask of the seconds already counted for that GPU-minute,
whatever their allocation: a redelivered second finds its bit set and adds nothing. Each
allocation (tenant, job) within the GPU-minute has its own :class:`MinuteRow` with its own
mask and sums; the ledger stores these rows.

A row always holds the *full* state of its (allocation, GPU, minute) as far as this worker has
seen, and its ``version`` is the number of seconds it counts. So writing a row again is
idempotent, and a fuller row (a late second) supersedes the earlier one. After a restart the
state of a minute is reloaded from the ledger (:meth:`Aggregator.preload`): the stored mask says
exactly which seconds the stored sums contain, so merging later seconds stays exact.

Minutes close on event time: once a node's newest second is ``grace_s`` past a minute's end,
the minute is emitted as closed. A sample for a closed minute is still counted in its own minute
and re-emitted as a correction (same key, higher version), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.topics import IDLE_TENANT
from schemas.usage import GpuSecond

GpuMinuteKey = tuple[str, str, int]  # (gpu_uuid, mig_uuid or "", minute epoch)
_IDLE_ALLOCATION = (IDLE_TENANT, "")


@dataclass(slots=True)
class MinuteRow:
    """One ledger row: an allocation on one GPU for one minute."""

    minute: int
    tenant: str
    job: str
    billing_class: str
    gpu_uuid: str
    mig_uuid: str
    gpu_model: str
    node_id: str
    seconds_mask: int = 0
    active_mask: int = 0
    sm_util_sum: float = 0.0
    mem_util_sum: float = 0.0
    energy_mj: int = 0
    peak_mem_used: int = 0

    @property
    def gpu_seconds(self) -> int:
        return self.seconds_mask.bit_count()

    @property
    def active_seconds(self) -> int:
        return self.active_mask.bit_count()

    @property
    def version(self) -> int:
        return self.gpu_seconds

    @property
    def allocation(self) -> tuple[str, str]:
        return (self.tenant, self.job)


@dataclass(slots=True)
class GpuMinute:
    key: GpuMinuteKey
    counted: int = 0
    rows: dict[tuple[str, str], MinuteRow] = field(default_factory=dict)
    closed: bool = False


@dataclass
class AddResult:
    new_seconds: int = 0
    duplicates: int = 0
    late: int = 0  # counted into a minute that had already closed (a correction)
    new_samples: list[GpuSecond] = field(default_factory=list)


class Aggregator:
    def __init__(self, grace_s: int = 120) -> None:
        self.grace_s = grace_s
        self._minutes: dict[GpuMinuteKey, GpuMinute] = {}
        self._watermark: dict[str, int] = {}  # node_id -> newest second seen
        self._dirty: set[tuple[GpuMinuteKey, tuple[str, str]]] = set()
        self._corrections: set[GpuMinuteKey] = set()

    # -- state loading ---------------------------------------------------------------------
    def missing(self, samples: Iterable[GpuSecond]) -> set[GpuMinuteKey]:
        """GPU-minutes these samples touch that are not in memory (to load from the ledger)."""
        have = self._minutes
        out = set()
        for s in samples:
            ts = s.ts
            key = (s.gpu_uuid, s.mig_uuid or "", ts - ts % 60)
            if key not in have:
                out.add(key)
        return out

    def preload(self, keys: Iterable[GpuMinuteKey], rows: Iterable[MinuteRow]) -> None:
        """Install stored state for ``keys`` (rows may be empty: a minute never seen)."""
        for key in keys:
            self._minutes.setdefault(key, GpuMinute(key))
        for row in rows:
            key = (row.gpu_uuid, row.mig_uuid, row.minute)
            gm = self._minutes.setdefault(key, GpuMinute(key))
            if row.allocation in gm.rows:
                continue  # memory is at least as new as the store
            gm.rows[row.allocation] = row
            gm.counted |= row.seconds_mask
            gm.closed = True  # it reached the ledger before: any change now is a correction

    # -- counting --------------------------------------------------------------------------
    def add(self, node_id: str, samples: Iterable[GpuSecond]) -> AddResult:
        """Count samples; a second already counted for its GPU adds nothing."""
        # Hot loop (every sample passes here): attributes and methods are bound to locals.
        result = AddResult()
        minutes = self._minutes
        dirty_add = self._dirty.add
        corrections_add = self._corrections.add
        keep = result.new_samples.append
        duplicates = late = 0
        newest = self._watermark.get(node_id, 0)
        for s in samples:
            ts = s.ts
            second = ts % 60
            minute = ts - second
            mig = s.mig_uuid or ""
            key = (s.gpu_uuid, mig, minute)
            gm = minutes.get(key)
            if gm is None:
                gm = minutes[key] = GpuMinute(key)
            bit = 1 << second
            if gm.counted & bit:
                duplicates += 1
                continue
            gm.counted |= bit
            tenant = s.tenant
            alloc = (tenant, s.job) if tenant is not None else _IDLE_ALLOCATION
            row = gm.rows.get(alloc)
            if row is None:
                row = gm.rows[alloc] = MinuteRow(
                    minute, alloc[0], alloc[1], s.billing_class or "", s.gpu_uuid, mig,
                    s.gpu_model, node_id,
                )
            row.seconds_mask |= bit
            sm_util = s.sm_util
            if sm_util > 0:
                row.active_mask |= bit
            row.sm_util_sum += sm_util
            row.mem_util_sum += s.mem_util
            row.energy_mj += round(s.energy_j * 1000)
            mem_used = s.mem_used
            if mem_used > row.peak_mem_used:
                row.peak_mem_used = mem_used
            dirty_add((key, alloc))
            if gm.closed:
                late += 1
                corrections_add(key)
            keep(s)
            if ts > newest:
                newest = ts
        self._watermark[node_id] = newest
        result.new_seconds = len(result.new_samples)
        result.duplicates = duplicates
        result.late = late
        return result

    # -- output ----------------------------------------------------------------------------
    def take_dirty(self) -> list[MinuteRow]:
        """Rows changed since the last call (to upsert into the ledger), in a stable order."""
        rows = [self._minutes[k].rows[a] for k, a in self._dirty]
        self._dirty.clear()
        rows.sort(key=lambda r: (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job))
        return rows

    def close_ready(self) -> list[MinuteRow]:
        """Rows of minutes that just closed, plus corrections of already closed minutes."""
        out: list[MinuteRow] = []
        for key, gm in self._minutes.items():
            if gm.closed:
                continue
            newest = self._watermark.get(_node_of(gm), 0)
            if newest >= key[2] + 60 + self.grace_s:
                gm.closed = True
                out.extend(gm.rows.values())
        for key in self._corrections:
            out.extend(self._minutes[key].rows.values())
        self._corrections.clear()
        out.sort(key=lambda r: (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job))
        return out

    def evict_closed(self, keep_s: int = 600) -> int:
        """Forget closed minutes well behind the watermark (they can be reloaded from the
        ledger). Call only after the ledger holds every dirty row."""
        assert not self._dirty, "evict only after flushing"
        drop = [
            key for key, gm in self._minutes.items()
            if gm.closed and self._watermark.get(_node_of(gm), 0) >= key[2] + 60 + self.grace_s + keep_s
        ]
        for key in drop:
            del self._minutes[key]
        return len(drop)

    def clear(self) -> None:
        """Forget everything (partitions were reassigned: another worker may have written)."""
        self._minutes.clear()
        self._dirty.clear()
        self._corrections.clear()
        self._watermark.clear()

    def __len__(self) -> int:
        return len(self._minutes)


def _node_of(gm: GpuMinute) -> str:
    for row in gm.rows.values():
        return row.node_id
    return ""
