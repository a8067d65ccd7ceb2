"""Exact per-minute aggregation of frames with shares: the heart of the exactness invariant.

State is kept per GPU-minute ``(gpu_uuid, mig_uuid, minute)``, the domain of the second's
identity, grouped by physical GPU-minute ``(gpu_uuid, minute)`` (the parent and its MIG slices
load, live and are evicted together). ``counted`` is a 60-bit mask of the seconds already
counted for that GPU-minute, whatever their claim: a redelivered second finds its bit set and
adds nothing. Each row ``(tenant, job, share_milli)`` within the GPU-minute has its own
:class:`MinuteRow` with its own masks and readings; the ledger stores these rows.

A frame (:class:`schemas.frame.Frame`) is counted minute by minute with bit arithmetic: its
seconds in a minute are one mask, compared with what is counted, and its *claim* on each of
them is its whole allocation set: a row per allocation at its share, plus the idle row
``(IDLE_TENANT, "", remainder)`` when the shares leave one. So allocated + idle = 1000
milli-GPU-seconds per observed GPU-second.

**One claim per GPU-second (the conflict rule, :mod:`streams.conflict_rule`).** Two
*different* claims for the same second are a conflict, resolved by a rule that does not depend
on arrival order, partitioning or restarts, and recorded (:class:`Conflict`, table
``usage_conflicts``), never dropped silently: a MIG slice beats its parent GPU (``mig_parent``),
a claim with any allocation beats an idle-only one (``idle``), otherwise the smaller sorted
tuple of ``(tenant, job, share_milli)`` wins (``allocation``). When a winning claim arrives
after the losing one was counted, the second moves: the loser's rows *release* it (the bit
joins ``released_mask``; readings stay but no longer count) and the winner's rows claim it.

**Any number of writers converge.** A row is state that merges by union (see
:class:`MinuteRow`): claimed seconds, released seconds and per-second readings only ever grow,
so writing a row again, writing an older state after a newer one, or two workers writing
different partial states of the same GPU-minute during a rebalance, all merge to the same
ledger (``usage_minutely`` is an AggregatingMergeTree merging exactly this way). After a
restart the state of a minute is reloaded from the ledger (:meth:`Aggregator.preload`), so a
replayed second is recognised and a later one merges exactly. ``version`` counts this
process's writes of a row, for diagnostics only: nothing depends on it.

**State is masks, not readings.** Once the ledger holds a row (it was written, or reloaded),
its per-second readings leave memory (:meth:`Aggregator.forget_written`): by union, the row
written again with only its new seconds' readings merges to the same ledger row, and the
masks alone recognise duplicates and apply the conflict rule. The sums of the held seconds
stay on the row, for the closed minute's message. The rare change to a second whose reading
left (a release by a better claim, a new reading of a second two claims share) first restores
that row's readings from the ledger (``reload``), so sums and conflicts are what they were.

Minutes close on event time (:mod:`streams.minute_close`). A second for a closed minute is still
counted in its own minute and re-emitted as a correction, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from sys import intern

from schemas.frame import Frame
from streams.conflict_rule import Claim, claim_of, contest, displace_parent
from streams.minute_close import close_ready, evict_closed
from streams.minute_state import (
    AddResult,
    Allocation,
    Conflict,
    ConflictKind,
    FreshSpan,
    GpuGroupKey,
    GpuMinute,
    GpuMinuteKey,
    MinuteRow,
    Piece,
    RowKey,
    SecondReadings,
    active_mask_of,
    bits_of,
    milli_joules,
    pin_readings,
    restore_readings,
    row_order,
)

__all__ = [
    "AddResult",
    "Aggregator",
    "Allocation",
    "Conflict",
    "ConflictKind",
    "FreshSpan",
    "GpuGroupKey",
    "GpuMinute",
    "GpuMinuteKey",
    "MinuteRow",
    "SecondReadings",
]


#: Claims remembered (one per distinct allocation set) before the memory is dropped and refilled.
MAX_CLAIMS = 100_000

#: Reads the ledger's rows of physical GPU-minutes (the sink's ``load``).
Reload = Callable[[set[GpuGroupKey]], Iterable[MinuteRow]]


class Aggregator:
    def __init__(self, grace_s: int = 120, reload: Reload | None = None) -> None:
        self.grace_s = grace_s
        self._reload = reload
        # rows the ledger holds whose readings are still in memory (written, or reloaded)
        self._written: list[tuple[GpuMinute, RowKey]] = []
        self._groups: dict[GpuGroupKey, dict[str, GpuMinute]] = {}
        self._watermark: dict[str, int] = {}  # node_id -> newest second seen
        self._dirty: set[tuple[GpuMinuteKey, RowKey]] = set()
        self._corrections: set[GpuMinuteKey] = set()
        self._conflicts: list[Conflict] = []
        # Physical GPU-minutes by minute: all held (for eviction), and those that may hold a
        # GPU-minute not yet closed (for closing). Closing and eviction look only at minutes
        # the newest watermark has passed, not at the whole state on every chunk.
        self._by_minute: dict[int, set[GpuGroupKey]] = {}
        self._open: dict[int, set[GpuGroupKey]] = {}
        # claims by (tenant, job, share, billing class) of each allocation (claim_of's input)
        self._claims: dict[tuple[tuple[str, str, int, str | None], ...], Claim] = {}

    # -- state loading ---------------------------------------------------------------------
    def missing(self, frames: Iterable[Frame]) -> set[GpuGroupKey]:
        """Physical GPU-minutes these frames touch that are not in memory (to load)."""
        have = self._groups
        out = set()
        for f in frames:
            start = f.start
            for minute in range(start - start % 60, f.end, 60):
                key = (f.gpu_uuid, minute)
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
        keys = list(keys)
        fresh = {k for k in keys if k not in groups}
        for key in fresh:
            groups[key] = {}
            self._by_minute.setdefault(key[1], set()).add(key)
            self._open.setdefault(key[1], set()).add(key)
        for row in rows:
            if (row.gpu_uuid, row.minute) not in fresh:
                continue  # not asked for, or already held: memory is at least as new
            group = groups[(row.gpu_uuid, row.minute)]
            gm = group.get(row.mig_uuid)
            if gm is None:
                gm = group[row.mig_uuid] = GpuMinute((row.gpu_uuid, row.mig_uuid, row.minute))
            gm.rows[row.key] = row
            self._written.append((gm, row.key))
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
    def add(self, node_id: str, frames: Iterable[Frame]) -> AddResult:
        """Count frames; a second already counted for its device adds nothing."""
        result = AddResult()
        groups = self._groups
        dirty_add = self._dirty.add
        keep = result.fresh.append
        new = duplicates = late = conflicts = 0
        # Strings held by state are interned: rows of every minute of a device then share one
        # copy of its ids instead of holding each record's (a few hundred bytes per row).
        node_id = intern(node_id)
        newest = self._watermark.get(node_id, 0)
        claims = self._claims
        frames = frames if type(frames) is list else list(frames)
        record_mj: list[list[int]] | None = None  # every frame's energies, at the first need
        for i, f in enumerate(frames):
            start, end = f.start, f.end
            if end <= start:
                continue
            gpu = intern(f.gpu_uuid)
            mig = intern(f.mig_uuid) if f.mig_uuid else ""
            # a device's allocations repeat frame after frame: their claim is built once
            allocations = f.allocations
            ckey = tuple([(s.tenant, s.job, s.milli, s.billing_class) for s in allocations])
            claim = claims.get(ckey)
            if claim is None:
                if len(claims) >= MAX_CLAIMS:
                    claims.clear()
                claim = claims[ckey] = claim_of(f)
            keys = claim.keys
            energy: list[int] | None = None
            active = -1
            for minute in range(start - start % 60, end, 60):
                lo = start if start > minute else minute
                hi = end if end < minute + 60 else minute + 60
                span = ((1 << (hi - lo)) - 1) << (lo - minute)
                group = groups.get((gpu, minute))
                if group is None:
                    group = groups[(gpu, minute)] = {}
                    self._by_minute.setdefault(minute, set()).add((gpu, minute))
                gm = group.get(mig)
                if gm is None:
                    gm = group[mig] = GpuMinute((gpu, mig, minute))
                    self._open.setdefault(minute, set()).add((gpu, minute))
                    if not mig:  # a parent created after its slices: their seconds are claimed
                        for other in group.values():
                            gm.counted |= other.counted
                take = span & ~gm.counted
                already = span ^ take
                if already:
                    rows = gm.rows
                    owned = already
                    for k in keys:
                        row = rows.get(k)
                        owned &= row.claimed_mask & ~row.released_mask if row is not None else 0
                    duplicates += owned.bit_count()
                    contested = already ^ owned
                    if contested:
                        conflicts += contested.bit_count()
                        take |= contest(
                            group, gm, claim, contested, f, node_id, self._conflicts, self._touch
                        )
                if not take:
                    continue
                if mig:
                    parent = group.get("")
                    if parent is not None:
                        conflicts += displace_parent(
                            group, take, claim, mig, self._conflicts, self._touch
                        )
                        parent.counted |= take
                gm.counted |= take
                # the frame's readings for the taken seconds, once for every row of the claim
                if energy is None:
                    if record_mj is None:
                        record_mj = milli_joules([g.energy_j for g in frames])
                    energy = record_mj[i]
                    active = active_mask_of(f.sm_util)
                off = minute - start  # frame index = second of minute + off
                act = (active >> off if off >= 0 else active << -off) & take
                readings: dict[int, SecondReadings] | None = None
                if take == span:  # the usual case: the frame's slice, no object per second
                    i0, i1 = lo - start, hi - start
                    piece: Piece = (lo - minute, f.sm_util[i0:i1], f.mem_util[i0:i1], energy[i0:i1])
                    peak = max(f.mem_used[i0:i1])
                else:
                    idx = bits_of(take)
                    sm, mu, mem = f.sm_util, f.mem_util, f.mem_used
                    readings = {s: (sm[s + off], mu[s + off], energy[s + off]) for s in idx}
                    peak = max(mem[s + off] for s in idx)
                rows = gm.rows
                gkey = gm.key
                for tenant, job, share, billing_class in claim.rows:
                    rkey = (tenant, job, share)
                    row = rows.get(rkey)
                    if row is None:
                        row = rows[rkey] = MinuteRow(
                            minute,
                            tenant,
                            job,
                            billing_class,
                            gpu,
                            mig,
                            intern(f.gpu_model),
                            node_id,
                            share_milli=share,
                        )
                    again = take & row.claimed_mask  # a new reading of a held second (rare)
                    if again & row.dropped_mask:
                        row = self._restore(gm, row)
                    row.claimed_mask |= take
                    row.claimed_active |= act
                    if readings is None and not again:  # seconds new to the row, a slice
                        row.pending += (piece,)
                    else:
                        held = row.settle()
                        if readings is None:
                            first, sms, mems, energies = piece
                            seconds = range(first, first + len(sms))
                            readings = dict(
                                zip(seconds, zip(sms, mems, energies, strict=True), strict=True)
                            )
                        if held:
                            held.update(readings)
                        else:
                            row.readings = readings.copy()
                        if again:
                            pin_readings(row, again)
                    if peak > row.peak_mem_used:
                        row.peak_mem_used = peak
                    dirty_add((gkey, rkey))
                n = take.bit_count()
                new += n
                if gm.closed:
                    late += n
                    self._corrections.add(gkey)
                keep(FreshSpan(node_id, f, minute, take))
                top = minute + take.bit_length() - 1
                if top > newest:
                    newest = top
        self._watermark[node_id] = newest
        result.new_seconds = new
        result.duplicates = duplicates
        result.late = late
        result.conflicts = conflicts
        return result

    def _touch(self, gm: GpuMinute, row: MinuteRow) -> None:
        """A row lost a second to a better claim: write it again (a correction if closed).
        Called after the release and before the losing row's reading is recorded."""
        if row.released_mask & row.dropped_mask:  # its reading left memory: bring it back
            self._restore(gm, row)
        self._dirty.add((gm.key, row.key))
        if gm.closed:
            self._corrections.add(gm.key)

    def _restore(self, gm: GpuMinute, row: MinuteRow) -> MinuteRow:
        """Put back the readings ``row`` dropped, from the ledger (see :func:`restore_readings`)."""
        gpu, mig, minute = gm.key
        stored: dict[int, SecondReadings] = {}
        if self._reload is not None:
            for r in self._reload({(gpu, minute)}):
                if r.mig_uuid == mig and r.key == row.key:
                    stored = r.readings
        return restore_readings(row, stored)

    def take_conflicts(self) -> list[Conflict]:
        out, self._conflicts = self._conflicts, []
        return out

    # -- output ----------------------------------------------------------------------------
    def take_dirty(self) -> list[MinuteRow]:
        """Rows changed since the last call (to upsert into the ledger), in a stable order,
        each with its version advanced. If writing them fails, :meth:`clear` and reload."""
        rows = []
        groups = self._groups
        written = self._written.append
        for (gpu, mig, minute), rkey in self._dirty:
            gm = groups[(gpu, minute)][mig]
            row = gm.rows[rkey]
            row.version += 1
            rows.append(row)
            written((gm, rkey))
        self._dirty.clear()
        rows.sort(key=row_order)
        return rows

    def forget_written(self) -> int:
        """Drop the readings of rows the ledger now holds (call once the sink has written
        what :meth:`take_dirty` returned): each such row is replaced in memory by its
        :meth:`MinuteRow.forgotten` self, masks and sums kept, and the object the sink was
        given is left as it was. Returns the number of rows that dropped readings."""
        n = 0
        for gm, rkey in self._written:
            row = gm.rows.get(rkey)
            if row is not None and row.holds_readings:
                gm.rows[rkey] = row.forgotten()
                n += 1
        self._written.clear()
        return n

    def close_ready(self) -> list[MinuteRow]:
        """Rows of minutes that just closed, plus corrections of already closed minutes."""
        return close_ready(
            self._groups, self._open, self._watermark, self._corrections, self.grace_s
        )

    def evict_closed(self, keep_s: int = 600) -> int:
        """Forget physical GPU-minutes whose minutes are all closed and well behind the
        watermark (they can be reloaded from the ledger). Call only after the ledger holds
        every dirty row. Returns the number of GPU-minutes dropped."""
        assert not self._dirty, "evict only after flushing"
        return evict_closed(
            self._groups, self._by_minute, self._open, self._watermark, self.grace_s, keep_s
        )

    def clear(self) -> None:
        """Forget everything (partitions were reassigned, or a write failed: the ledger is the
        truth and state is reloaded from it)."""
        self._groups.clear()
        self._by_minute.clear()
        self._open.clear()
        self._dirty.clear()
        self._written.clear()
        self._corrections.clear()
        self._watermark.clear()
        self._conflicts.clear()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())
