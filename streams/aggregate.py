"""Exact per-minute aggregation of GPU-second samples: the heart of the exactness invariant.

State is kept per GPU-minute ``(gpu_uuid, mig_uuid, minute)``, the domain of the sample
identity, grouped by physical GPU-minute ``(gpu_uuid, minute)`` (the parent and its MIG slices
load, live and are evicted together). ``counted`` is a 60-bit mask of the seconds already
counted for that GPU-minute, whatever their allocation: a redelivered second finds its bit set
and adds nothing. Each allocation (tenant, job) within the GPU-minute has its own
:class:`MinuteRow` with its own mask and sums; the ledger stores these rows.

**One claim per GPU-second (the conflict rule).** Two *different* claims for the same second
are a conflict, resolved by a rule that does not depend on arrival order, partitioning or
restarts, and recorded (:class:`Conflict`, table ``usage_conflicts``), never dropped silently:

1. A GPU in MIG mode is metered through its slices only: a slice's claim for a second beats
   the parent GPU's claim for the same second (``kind = "mig_parent"``).
2. An allocation beats idle: a tenant's second is never made unbillable by an idle sample
   (``kind = "idle"``).
3. Between two allocations, the smaller ``(tenant, job)`` in code-point order wins
   (``kind = "allocation"``). Arbitrary but total, so every order converges on the same owner;
   the loser's claim is kept with its readings for the operator to settle.

When a winning claim arrives after the losing one was counted, the second moves: its bit and
readings leave the loser's row and join the winner's (a displacement). The readings of a second
counted by this process are held in memory; for a second reloaded from the ledger they are read
back from the raw archive (:meth:`Aggregator.take_unsettled` / :meth:`Aggregator.settle`).

A row always holds the *full* state of its (allocation, GPU, minute) as far as this worker has
seen, and ``version`` grows by one with every change written (a displacement can make a row
*smaller*, so the version cannot be its seconds count). Writing a row again is idempotent and a
newer row supersedes the older one. After a restart the state of a minute is reloaded from the
ledger (:meth:`Aggregator.preload`): the stored mask says exactly which seconds the stored sums
contain, so merging later seconds stays exact.

Minutes close on event time: once a node's newest second is ``grace_s`` past a minute's end,
the minute is emitted as closed. A sample for a closed minute is still counted in its own minute
and re-emitted as a correction (same key, higher version), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from schemas.topics import IDLE_TENANT
from schemas.usage import GpuSecond

GpuMinuteKey = tuple[str, str, int]  # (gpu_uuid, mig_uuid or "", minute epoch)
GpuGroupKey = tuple[str, int]  # (gpu_uuid, minute epoch): a physical GPU-minute and its slices
SecondKey = tuple[str, str, int]  # (gpu_uuid, mig_uuid or "", ts): a sample's identity
Allocation = tuple[str, str]  # (tenant, job); idle is (IDLE_TENANT, "")
ConflictKind = Literal["mig_parent", "idle", "allocation"]
_IDLE_ALLOCATION: Allocation = (IDLE_TENANT, "")


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
    version: int = 0  # grows with every written change (see the module docstring)

    @property
    def gpu_seconds(self) -> int:
        return self.seconds_mask.bit_count()

    @property
    def active_seconds(self) -> int:
        return self.active_mask.bit_count()

    @property
    def allocation(self) -> Allocation:
        return (self.tenant, self.job)


@dataclass(slots=True)
class GpuMinute:
    key: GpuMinuteKey
    counted: int = 0  # seconds claimed (by a row here, or by a MIG slice for a parent)
    rows: dict[Allocation, MinuteRow] = field(default_factory=dict)
    closed: bool = False
    #: The counted sample of each second, while this process holds the minute: the readings a
    #: displacement takes out of the losing row. Absent for seconds reloaded from the ledger.
    samples: dict[int, GpuSecond] = field(default_factory=dict)

    def owner(self, bit: int) -> MinuteRow | None:
        for row in self.rows.values():
            if row.seconds_mask & bit:
                return row
        return None


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two different claims for one GPU-second, and which one the rule kept."""

    gpu_uuid: str
    ts: int
    kind: ConflictKind
    winner_mig_uuid: str
    winner: Allocation
    loser_mig_uuid: str
    loser: Allocation
    loser_node_id: str
    loser_sample: GpuSecond | None  # None: the loser was reloaded from the ledger


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A displaced second whose readings are not in memory (reloaded from the ledger)."""

    row: MinuteRow
    second: int

    @property
    def identity(self) -> SecondKey:
        return (self.row.gpu_uuid, self.row.mig_uuid, self.row.minute + self.second)


@dataclass(frozen=True, slots=True)
class Readings:
    sm_util: float
    mem_util: float
    energy_mj: int


@dataclass
class AddResult:
    new_seconds: int = 0
    duplicates: int = 0
    late: int = 0  # counted into a minute that had already closed (a correction)
    conflicts: int = 0
    new_samples: list[GpuSecond] = field(default_factory=list)


def rank(alloc: Allocation) -> tuple[int, str, str]:
    """The conflict rule between two claims of one identity: the smaller rank wins."""
    return (1, "", "") if alloc == _IDLE_ALLOCATION else (0, alloc[0], alloc[1])


class Aggregator:
    def __init__(self, grace_s: int = 120) -> None:
        self.grace_s = grace_s
        self._groups: dict[GpuGroupKey, dict[str, GpuMinute]] = {}
        self._watermark: dict[str, int] = {}  # node_id -> newest second seen
        self._dirty: set[tuple[GpuMinuteKey, Allocation]] = set()
        self._corrections: set[GpuMinuteKey] = set()
        self._conflicts: list[Conflict] = []
        self._unsettled: list[Unsettled] = []

    # -- state loading ---------------------------------------------------------------------
    def missing(self, samples: Iterable[GpuSecond]) -> set[GpuGroupKey]:
        """Physical GPU-minutes these samples touch that are not in memory (to load)."""
        have = self._groups
        out = set()
        for s in samples:
            ts = s.ts
            key = (s.gpu_uuid, ts - ts % 60)
            if key not in have:
                out.add(key)
        return out

    def preload(self, keys: Iterable[GpuGroupKey], rows: Iterable[MinuteRow]) -> None:
        """Install stored state for ``keys`` (rows may be empty: a minute never seen).

        A reloaded minute is closed if its node's watermark is already past it (eviction:
        later seconds are corrections), open otherwise (a restart: it closes, and is emitted
        once, when the watermark passes it again, rather than on every chunk)."""
        groups = self._groups
        for key in keys:
            groups.setdefault(key, {})
        for row in rows:
            group = groups.get((row.gpu_uuid, row.minute))
            if group is None:
                continue  # not asked for: memory may hold newer state
            gm = group.get(row.mig_uuid)
            if gm is None:
                gm = group[row.mig_uuid] = GpuMinute((row.gpu_uuid, row.mig_uuid, row.minute))
            if row.allocation in gm.rows:
                continue  # memory is at least as new as the store
            gm.rows[row.allocation] = row
            gm.counted |= row.seconds_mask
            gm.closed = self._watermark.get(row.node_id, 0) >= row.minute + 60 + self.grace_s
        for key in keys:  # a parent's seconds that its slices hold stay claimed
            group = groups[key]
            parent = group.get("")
            if parent is not None:
                for mig, gm in group.items():
                    if mig:
                        parent.counted |= gm.counted

    # -- counting --------------------------------------------------------------------------
    def add(self, node_id: str, samples: Iterable[GpuSecond]) -> AddResult:
        """Count samples; a second already counted for its GPU adds nothing."""
        # Hot loop (every sample passes here): attributes and methods are bound to locals.
        result = AddResult()
        groups = self._groups
        dirty_add = self._dirty.add
        corrections_add = self._corrections.add
        keep = result.new_samples.append
        duplicates = late = conflicts = 0
        newest = self._watermark.get(node_id, 0)
        for s in samples:
            ts = s.ts
            second = ts % 60
            minute = ts - second
            mig = s.mig_uuid or ""
            group = groups.get((s.gpu_uuid, minute))
            if group is None:
                group = groups[(s.gpu_uuid, minute)] = {}
            gm = group.get(mig)
            if gm is None:
                gm = group[mig] = GpuMinute((s.gpu_uuid, mig, minute))
                if not mig:  # a parent created after its slices: their seconds are claimed
                    for other in group.values():
                        gm.counted |= other.counted
            tenant = s.tenant
            alloc = (tenant, s.job or "") if tenant is not None else _IDLE_ALLOCATION
            bit = 1 << second
            if gm.counted & bit:
                owner = gm.owner(bit)
                if owner is not None and owner.allocation == alloc:
                    duplicates += 1
                    continue
                conflicts += 1
                if not self._contest(group, gm, owner, alloc, s, node_id, bit):
                    continue
            elif mig and _parent_holds(group, bit):
                conflicts += 1
                self._displace_parent(group, s, alloc, node_id, bit)
            gm.counted |= bit
            if mig:
                parent = group.get("")
                if parent is not None:
                    parent.counted |= bit
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
            gm.samples[second] = s
            dirty_add((gm.key, alloc))
            if gm.closed:
                late += 1
                corrections_add(gm.key)
            keep(s)
            if ts > newest:
                newest = ts
        self._watermark[node_id] = newest
        result.new_seconds = len(result.new_samples)
        result.duplicates = duplicates
        result.late = late
        result.conflicts = conflicts
        return result

    # -- conflicts (rare: off the hot path) --------------------------------------------------
    def _contest(self, group: dict[str, GpuMinute], gm: GpuMinute, owner: MinuteRow | None,
                 alloc: Allocation, s: GpuSecond, node_id: str, bit: int) -> bool:
        """A second already claimed gets a different claim: apply the rule. True when the new
        claim wins (the caller then counts it), False when it loses (recorded only)."""
        gpu, mig, _minute = gm.key
        ts = s.ts
        if owner is None:  # a parent's second held by one of its slices
            slice_owner = _slice_owner(group, bit)
            self._conflicts.append(Conflict(
                gpu, ts, "mig_parent", slice_owner.mig_uuid if slice_owner else "",
                slice_owner.allocation if slice_owner else ("", ""), mig, alloc, node_id, s))
            return False
        kind: ConflictKind = "idle" if _IDLE_ALLOCATION in (owner.allocation, alloc) \
            else "allocation"
        if rank(alloc) >= rank(owner.allocation):
            self._conflicts.append(Conflict(gpu, ts, kind, mig, owner.allocation, mig, alloc,
                                            node_id, s))
            return False
        loser = self._release(gm, owner, bit)
        self._conflicts.append(Conflict(gpu, ts, kind, mig, alloc, mig, owner.allocation,
                                        owner.node_id, loser))
        gm.counted &= ~bit  # the caller counts the winner
        return True

    def _displace_parent(self, group: dict[str, GpuMinute], s: GpuSecond, alloc: Allocation,
                         node_id: str, bit: int) -> None:
        """A slice claims a second its parent GPU had counted: the parent's claim leaves."""
        parent = group[""]
        owner = parent.owner(bit)
        if owner is None:
            return
        loser = self._release(parent, owner, bit)
        self._conflicts.append(Conflict(s.gpu_uuid, s.ts, "mig_parent", s.mig_uuid or "", alloc,
                                        "", owner.allocation, owner.node_id, loser))

    def _release(self, gm: GpuMinute, row: MinuteRow, bit: int) -> GpuSecond | None:
        """Take one second out of a row: its bit, and its readings when they are in memory."""
        second = bit.bit_length() - 1
        row.seconds_mask &= ~bit
        row.active_mask &= ~bit
        old = gm.samples.pop(second, None)
        if old is not None:
            row.sm_util_sum -= old.sm_util
            row.mem_util_sum -= old.mem_util
            row.energy_mj -= round(old.energy_j * 1000)
        else:
            self._unsettled.append(Unsettled(row, second))
        self._dirty.add((gm.key, row.allocation))
        if gm.closed:
            self._corrections.add(gm.key)
        return old

    def take_conflicts(self) -> list[Conflict]:
        out, self._conflicts = self._conflicts, []
        return out

    def take_unsettled(self) -> list[Unsettled]:
        """Displaced seconds whose readings must be read back (from the raw archive)."""
        out, self._unsettled = self._unsettled, []
        return out

    def settle(self, unsettled: Iterable[Unsettled], readings: Mapping[SecondKey, Readings]
               ) -> list[Unsettled]:
        """Subtract the stored readings of displaced seconds; returns those not found."""
        lost = []
        for u in unsettled:
            r = readings.get(u.identity)
            if r is None:
                lost.append(u)
                continue
            u.row.sm_util_sum -= r.sm_util
            u.row.mem_util_sum -= r.mem_util
            u.row.energy_mj -= r.energy_mj
        return lost

    # -- output ----------------------------------------------------------------------------
    def take_dirty(self) -> list[MinuteRow]:
        """Rows changed since the last call (to upsert into the ledger), in a stable order,
        each with its version advanced. If writing them fails, :meth:`clear` and reload."""
        rows = []
        for (gpu, mig, minute), alloc in self._dirty:
            row = self._groups[(gpu, minute)][mig].rows[alloc]
            row.version += 1
            rows.append(row)
        self._dirty.clear()
        rows.sort(key=lambda r: (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job))
        return rows

    def close_ready(self) -> list[MinuteRow]:
        """Rows of minutes that just closed, plus corrections of already closed minutes."""
        out: list[MinuteRow] = []
        for (_gpu, minute), group in self._groups.items():
            for gm in group.values():
                if gm.closed or not gm.rows:
                    continue
                newest = self._watermark.get(_node_of(gm), 0)
                if newest >= minute + 60 + self.grace_s:
                    gm.closed = True
                    out.extend(gm.rows.values())
        for gpu, mig, minute in self._corrections:
            out.extend(self._groups[(gpu, minute)][mig].rows.values())
        self._corrections.clear()
        out.sort(key=lambda r: (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job))
        return out

    def evict_closed(self, keep_s: int = 600) -> int:
        """Forget physical GPU-minutes whose minutes are all closed and well behind the
        watermark (they can be reloaded from the ledger). Call only after the ledger holds
        every dirty row. Returns the number of GPU-minutes dropped."""
        assert not self._dirty, "evict only after flushing"
        horizon = 60 + self.grace_s + keep_s
        watermark = self._watermark
        drop = []
        for key, group in self._groups.items():
            held = [gm for gm in group.values() if gm.rows]  # a parent may only be claimed
            if held and all(
                gm.closed and watermark.get(_node_of(gm), 0) >= key[1] + horizon for gm in held
            ):
                drop.append(key)
        dropped = 0
        for key in drop:
            dropped += len(self._groups.pop(key))
        return dropped

    def clear(self) -> None:
        """Forget everything (partitions were reassigned, or a write failed: the ledger is the
        truth and state is reloaded from it)."""
        self._groups.clear()
        self._dirty.clear()
        self._corrections.clear()
        self._watermark.clear()
        self._conflicts.clear()
        self._unsettled.clear()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())


def _parent_holds(group: dict[str, GpuMinute], bit: int) -> bool:
    parent = group.get("")
    return parent is not None and parent.owner(bit) is not None


def _slice_owner(group: dict[str, GpuMinute], bit: int) -> MinuteRow | None:
    for mig in sorted(group):
        if mig:
            owner = group[mig].owner(bit)
            if owner is not None:
                return owner
    return None


def _node_of(gm: GpuMinute) -> str:
    for row in gm.rows.values():
        return row.node_id
    return ""
