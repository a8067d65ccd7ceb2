"""The conflict rule: which claim set keeps a GPU-second two records claim differently.

A *claim* is a frame's whole allocation set for a second: a row ``(tenant, job, share)`` per
allocation plus the idle remainder ``(IDLE_TENANT, "", 1000 - sum)`` when there is one. The
rule is a total order on claims, so arrival order, chunking, partitioning and restarts cannot
change the outcome:

1. a MIG slice's claim beats its parent GPU's claim for the same second (``mig_parent``);
2. a claim with any allocation beats an idle-only claim (``idle``);
3. otherwise the smaller sorted tuple of the allocations' ``(tenant, job, share_milli)`` in
   code-point order wins (``allocation``). For whole GPUs this is v1's smaller
   ``(tenant, job)``.

The losing claim's rows release the second (a row the winner shares keeps it: it holds the
second in both claims), the winner's rows claim it, and every losing row is one
:class:`Conflict`. All of this is rare, so it runs second by second, off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from sys import intern

from kernel.names import IDLE_TENANT
from schemas.frame import WHOLE, Frame
from streams.minute_state import (
    Conflict,
    ConflictKind,
    GpuMinute,
    MinuteRow,
    RowKey,
    SecondReadings,
)

Rank = tuple[int, tuple[RowKey, ...]]
OnRelease = Callable[[GpuMinute, MinuteRow], None]


@dataclass(frozen=True, slots=True)
class Claim:
    """A frame's claim on each of its seconds, rows sorted by key (idle remainder included)."""

    rows: tuple[tuple[str, str, int, str], ...]  # (tenant, job, share_milli, billing_class)
    keys: tuple[RowKey, ...]
    rank: Rank

    @property
    def idle_only(self) -> bool:
        return self.rank[0] == 1


def claim_of(frame: Frame) -> Claim:
    # interned: the rows and row keys the aggregator keeps share one copy of each id
    allocs = sorted(
        (intern(s.tenant), intern(s.job), s.milli, intern(s.billing_class or ""))
        for s in frame.allocations
    )
    remainder = WHOLE - sum(a[2] for a in allocs)
    rows = allocs + [(IDLE_TENANT, "", remainder, "")] if remainder > 0 else allocs
    alloc_keys = tuple((t, j, m) for t, j, m, _ in allocs)
    return Claim(
        tuple(rows), tuple((t, j, m) for t, j, m, _ in rows), (0 if allocs else 1, alloc_keys)
    )


def rank_of_rows(rows: list[MinuteRow]) -> Rank:
    """The rank of the claim a set of holding rows makes (the same as :func:`claim_of`'s)."""
    allocs = tuple(sorted(r.key for r in rows if r.tenant != IDLE_TENANT))
    return (0 if allocs else 1, allocs)


def frame_readings(frame: Frame, ts: int) -> SecondReadings:
    i = ts - frame.start
    return (frame.sm_util[i], frame.mem_util[i], round(frame.energy_j[i] * 1000))


def contest(
    group: dict[str, GpuMinute],
    gm: GpuMinute,
    claim: Claim,
    contested: int,
    frame: Frame,
    node_id: str,
    conflicts: list[Conflict],
    on_release: OnRelease,
) -> int:
    """Seconds of ``gm`` (bits of ``contested``) already held by another claim, or by one of
    the parent's slices, get ``claim``: apply the rule to each. Returns the bits the new claim
    won; their old holders are released and the bits cleared from ``gm.counted`` (the caller
    counts the winner)."""
    gpu, mig, minute = gm.key
    won = 0
    bits = contested
    while bits:
        bit = bits & -bits
        bits ^= bit
        ts = minute + bit.bit_length() - 1
        holders = gm.holders(bit)
        if not holders:  # a parent's second held by one of its slices: the slice wins
            slice_rows = _slice_holders(group, bit)
            w_mig, w = (slice_rows[0].mig_uuid, slice_rows[0]) if slice_rows else ("", None)
            _lose(conflicts, gpu, ts, "mig_parent", w_mig, w, mig, claim, frame, node_id, ())
            continue
        held_rank = rank_of_rows(holders)
        kind: ConflictKind = "idle" if claim.idle_only or held_rank[0] == 1 else "allocation"
        if claim.rank >= held_rank:
            _lose(conflicts, gpu, ts, kind, mig, holders[0], mig, claim, frame, node_id, holders)
            continue
        release(gm, holders, bit, set(claim.keys), on_release, conflicts, ts, kind, mig, claim)
        gm.counted &= ~bit
        won |= bit
    return won


def displace_parent(
    group: dict[str, GpuMinute],
    mask: int,
    claim: Claim,
    mig: str,
    conflicts: list[Conflict],
    on_release: OnRelease,
) -> int:
    """A slice claims seconds its parent GPU holds: the parent's claim leaves each of them.
    Returns the number of seconds displaced."""
    parent = group.get("")
    if parent is None:
        return 0
    bits = mask & parent.held()
    n = 0
    while bits:
        bit = bits & -bits
        bits ^= bit
        n += 1
        ts = parent.key[2] + bit.bit_length() - 1
        holders = parent.holders(bit)
        release(parent, holders, bit, set(), on_release, conflicts, ts, "mig_parent", mig, claim)
    return n


def release(
    gm: GpuMinute,
    holders: list[MinuteRow],
    bit: int,
    keep: set[RowKey],
    on_release: OnRelease,
    conflicts: list[Conflict],
    ts: int,
    kind: ConflictKind,
    winner_mig: str,
    winner: Claim,
) -> None:
    """The holders of one second lose it to ``winner`` (rows in ``keep`` belong to both)."""
    w_tenant, w_job, w_share, _ = winner.rows[0]
    second = bit.bit_length() - 1
    for row in holders:
        if row.key in keep:
            continue
        row.released_mask |= bit
        on_release(gm, row)
        conflicts.append(
            Conflict(
                row.gpu_uuid,
                ts,
                kind,
                winner_mig,
                (w_tenant, w_job),
                row.mig_uuid,
                row.allocation,
                row.node_id,
                row.billing_class,
                row.settle().get(second),
                w_share,
                row.share_milli,
            )
        )


def _lose(
    conflicts: list[Conflict],
    gpu: str,
    ts: int,
    kind: ConflictKind,
    winner_mig: str,
    winner: MinuteRow | None,
    loser_mig: str,
    claim: Claim,
    frame: Frame,
    node_id: str,
    holders: list[MinuteRow] | tuple[()],
) -> None:
    """The new claim loses one second: each of its rows the winner does not share is a
    conflict."""
    shared = {r.key for r in holders}
    readings = frame_readings(frame, ts)
    w_alloc = winner.allocation if winner is not None else ("", "")
    w_share = winner.share_milli if winner is not None else WHOLE
    for tenant, job, share, billing_class in claim.rows:
        if (tenant, job, share) in shared:
            continue
        conflicts.append(
            Conflict(
                gpu,
                ts,
                kind,
                winner_mig,
                w_alloc,
                loser_mig,
                (tenant, job),
                node_id,
                billing_class,
                readings,
                w_share,
                share,
            )
        )


def _slice_holders(group: dict[str, GpuMinute], bit: int) -> list[MinuteRow]:
    for mig in sorted(group):
        if mig:
            holders = group[mig].holders(bit)
            if holders:
                return holders
    return []
