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

When a winning claim arrives after the losing one was counted, the second moves: the loser's
row *releases* it (its bit joins ``released_mask``; its readings stay but no longer count) and
the winner's row claims it (a displacement).

**Any number of writers converge.** A row is state that merges by union (see
:class:`MinuteRow`): claimed seconds, released seconds and per-second readings only ever grow,
so writing a row again, writing an older state after a newer one, or two workers writing
different partial states of the same GPU-minute during a rebalance, all merge to the same
ledger (``usage_minutely`` is an AggregatingMergeTree merging exactly this way). After a
restart the state of a minute is reloaded from the ledger (:meth:`Aggregator.preload`), so a
replayed second is recognised and a later one merges exactly. ``version`` counts this
process's writes of a row, for diagnostics only: nothing depends on it.

Minutes close on event time: once a node's newest second is ``grace_s`` past a minute's end,
the minute is emitted as closed. A sample for a closed minute is still counted in its own minute
and re-emitted as a correction (same key, higher version), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
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


#: One counted second's readings: (SM utilization %, memory utilization %, energy mJ).
SecondReadings = tuple[float, float, int]


@dataclass(slots=True)
class MinuteRow:
    """One ledger row: an allocation on one GPU for one minute, as state that merges by union.

    ``claimed_mask`` holds every second this allocation claimed, ``released_mask`` those a
    better claim took away (a second released once stays released: claims only accumulate),
    ``readings`` the per-second readings of claimed seconds. Every field merges by union (OR,
    or by second), so rows written by any number of writers, in any order, any number of
    times, converge (``usage_minutely`` is an AggregatingMergeTree doing exactly this); the
    sums are derived from the counted seconds (``seconds_mask``)."""

    minute: int
    tenant: str
    job: str
    billing_class: str
    gpu_uuid: str
    mig_uuid: str
    gpu_model: str
    node_id: str
    claimed_mask: int = 0
    released_mask: int = 0
    claimed_active: int = 0  # claimed seconds with SM utilization > 0
    readings: dict[int, SecondReadings] = field(default_factory=dict)
    peak_mem_used: int = 0  # over claimed seconds (a released second may have set it)
    version: int = 0  # grows with every written change: diagnostics, not needed to merge

    @property
    def seconds_mask(self) -> int:
        return self.claimed_mask & ~self.released_mask

    @property
    def active_mask(self) -> int:
        return self.claimed_active & self.seconds_mask

    @property
    def gpu_seconds(self) -> int:
        return self.seconds_mask.bit_count()

    @property
    def active_seconds(self) -> int:
        return self.active_mask.bit_count()

    def _sum(self, i: int) -> float:
        mask = self.seconds_mask
        return sum(r[i] for s, r in self.readings.items() if mask >> s & 1)

    @property
    def sm_util_sum(self) -> float:
        return self._sum(0)

    @property
    def mem_util_sum(self) -> float:
        return self._sum(1)

    @property
    def energy_mj(self) -> int:
        return int(self._sum(2))

    @property
    def allocation(self) -> Allocation:
        return (self.tenant, self.job)

    def merge(self, other: MinuteRow) -> None:
        """Union with another state of the same row (what the ledger does on FINAL)."""
        self.claimed_mask |= other.claimed_mask
        self.released_mask |= other.released_mask
        self.claimed_active |= other.claimed_active
        for second, r in other.readings.items():
            mine = self.readings.get(second)
            self.readings[second] = r if mine is None else max(mine, r)
        self.peak_mem_used = max(self.peak_mem_used, other.peak_mem_used)
        self.version = max(self.version, other.version)
        self.billing_class = max(self.billing_class, other.billing_class)
        self.gpu_model = max(self.gpu_model, other.gpu_model)
        self.node_id = max(self.node_id, other.node_id)


@dataclass(slots=True)
class GpuMinute:
    key: GpuMinuteKey
    counted: int = 0  # seconds claimed (by a row here, or by a MIG slice for a parent)
    rows: dict[Allocation, MinuteRow] = field(default_factory=dict)
    closed: bool = False

    def owner(self, bit: int) -> MinuteRow | None:
        for row in self.rows.values():
            if row.claimed_mask & bit and not row.released_mask & bit:
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
    loser_billing_class: str
    loser_readings: SecondReadings | None  # None: the losing claim's readings are not here


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

    def unknown_nodes(self, nodes: Iterable[str]) -> set[str]:
        """Nodes this process has no watermark for (first sight since a start or a reset)."""
        return {n for n in nodes if n not in self._watermark}

    def seed_watermarks(self, watermarks: dict[str, int]) -> None:
        """Watermarks read back from the ledger, so that a restarted worker treats a minute
        that closed before the restart as closed (a later second is a correction, emitted at
        once) and an open one as open (emitted once, when it closes)."""
        for node, ts in watermarks.items():
            if ts > self._watermark.get(node, 0):
                self._watermark[node] = ts

    def preload(self, keys: Iterable[GpuGroupKey], rows: Iterable[MinuteRow]) -> None:
        """Install stored state for ``keys`` (rows may be empty: a minute never seen).

        A reloaded minute is closed if its node's watermark is already past it (then a later
        second is a correction), open otherwise: it closes, and is emitted once, when the
        watermark passes it, rather than as a correction on every chunk. After a restart,
        seed the watermarks first (:meth:`seed_watermarks`)."""
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
            gm.counted |= row.seconds_mask | row.released_mask
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
                    minute,
                    alloc[0],
                    alloc[1],
                    s.billing_class or "",
                    s.gpu_uuid,
                    mig,
                    s.gpu_model,
                    node_id,
                )
            row.claimed_mask |= bit
            sm_util = s.sm_util
            if sm_util > 0:
                row.claimed_active |= bit
            row.readings[second] = (sm_util, s.mem_util, round(s.energy_j * 1000))
            mem_used = s.mem_used
            if mem_used > row.peak_mem_used:
                row.peak_mem_used = mem_used
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
    def _contest(
        self,
        group: dict[str, GpuMinute],
        gm: GpuMinute,
        owner: MinuteRow | None,
        alloc: Allocation,
        s: GpuSecond,
        node_id: str,
        bit: int,
    ) -> bool:
        """A second already claimed gets a different claim: apply the rule. True when the new
        claim wins (the caller then counts it), False when it loses (recorded only)."""
        gpu, mig, _minute = gm.key
        ts = s.ts
        if owner is None:  # a parent's second held by one of its slices
            slice_owner = _slice_owner(group, bit)
            self._conflicts.append(
                Conflict(
                    gpu,
                    ts,
                    "mig_parent",
                    slice_owner.mig_uuid if slice_owner else "",
                    slice_owner.allocation if slice_owner else ("", ""),
                    mig,
                    alloc,
                    node_id,
                    s.billing_class or "",
                    _readings(s),
                )
            )
            return False
        kind: ConflictKind = (
            "idle" if _IDLE_ALLOCATION in (owner.allocation, alloc) else "allocation"
        )
        if rank(alloc) >= rank(owner.allocation):
            self._conflicts.append(
                Conflict(
                    gpu,
                    ts,
                    kind,
                    mig,
                    owner.allocation,
                    mig,
                    alloc,
                    node_id,
                    s.billing_class or "",
                    _readings(s),
                )
            )
            return False
        loser = self._release(gm, owner, bit)
        self._conflicts.append(
            Conflict(
                gpu,
                ts,
                kind,
                mig,
                alloc,
                mig,
                owner.allocation,
                owner.node_id,
                owner.billing_class,
                loser,
            )
        )
        gm.counted &= ~bit  # the caller counts the winner
        return True

    def _displace_parent(
        self, group: dict[str, GpuMinute], s: GpuSecond, alloc: Allocation, node_id: str, bit: int
    ) -> None:
        """A slice claims a second its parent GPU had counted: the parent's claim leaves."""
        parent = group[""]
        owner = parent.owner(bit)
        if owner is None:
            return
        loser = self._release(parent, owner, bit)
        self._conflicts.append(
            Conflict(
                s.gpu_uuid,
                s.ts,
                "mig_parent",
                s.mig_uuid or "",
                alloc,
                "",
                owner.allocation,
                owner.node_id,
                owner.billing_class,
                loser,
            )
        )

    def _release(self, gm: GpuMinute, row: MinuteRow, bit: int) -> SecondReadings | None:
        """Release one second of a row (its readings stay, no longer counted)."""
        row.released_mask |= bit
        self._dirty.add((gm.key, row.allocation))
        if gm.closed:
            self._corrections.add(gm.key)
        return row.readings.get(bit.bit_length() - 1)

    def take_conflicts(self) -> list[Conflict]:
        out, self._conflicts = self._conflicts, []
        return out

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

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())


def _readings(s: GpuSecond) -> SecondReadings:
    return (s.sm_util, s.mem_util, round(s.energy_j * 1000))


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
