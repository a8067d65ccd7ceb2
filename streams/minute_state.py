"""The aggregator's state: ledger rows (:class:`MinuteRow`), the GPU-minutes holding them, and
the records of a conflict. The rules that change this state live in :mod:`streams.aggregate`
(counting) and :mod:`streams.conflict_rule` (which claim keeps a second).

A row is one allocation *at a share* on one device for one minute: ``(tenant, job,
share_milli)``; the idle part of a device-second is the row ``(IDLE_TENANT, "", remainder)``.
A device-second is held by one *claim set* at a time: the rows whose ``seconds_mask`` has its
bit. Their shares sum to 1000 (a frame's allocations plus its idle remainder), so the rows
holding a second are exactly one frame's claim.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import chain
from operator import add
from typing import Literal, NamedTuple

import numpy as np

from kernel.names import IDLE_TENANT
from schemas.frame import WHOLE, Frame

GpuMinuteKey = tuple[str, str, int]  # (gpu_uuid, mig_uuid or "", minute epoch)
GpuGroupKey = tuple[str, int]  # (gpu_uuid, minute epoch): a physical GPU-minute and its slices
Allocation = tuple[str, str]  # (tenant, job); idle is (IDLE_TENANT, "")
RowKey = tuple[str, str, int]  # (tenant, job, share_milli): a row within a GPU-minute
ConflictKind = Literal["mig_parent", "idle", "allocation"]
IDLE_ALLOCATION: Allocation = (IDLE_TENANT, "")

#: One counted second's device readings: (SM utilization %, memory utilization %, energy mJ).
SecondReadings = tuple[float, float, int]
#: Readings of consecutive seconds, column-wise as a frame holds them: (the first second's
#: index in the minute, SM utilization %, memory utilization %, energy mJ). The aggregator keeps
#: a frame's slice so, without a Python object per second (see :attr:`MinuteRow.pending`).
Piece = tuple[int, Sequence[float], Sequence[float], Sequence[int]]


def milli_joules(columns: Sequence[Sequence[float]]) -> list[list[int]]:
    """Each column of energies in joules, in millijoules rounded half to even: element for
    element ``round(e * 1000)`` (what ``energy_map`` stores), for all columns in one numpy
    pass. ``round`` per element cost ~0.2 us, a few per cent of a device-second's processing.
    Exact for validated energies: ``e * 1000`` is the same double in numpy (an integer ``e``
    is far below 2**53 / 1000), and ``rint`` rounds half to even as ``round`` does."""
    joules = np.frombuffer(array("d", list(chain.from_iterable(columns))), dtype=np.float64)
    flat: list[int] = np.rint(joules * 1000.0).astype(np.int64).tolist()
    out = []
    at = 0
    for column in columns:
        n = len(column)
        out.append(flat[at : at + n])
        at += n
    return out


@dataclass(slots=True)
class MinuteRow:
    """One ledger row: an allocation at a share on one device for one minute, as state that
    merges by union.

    ``claimed_mask`` holds every second this row claimed, ``released_mask`` those a better
    claim took away (a second released once stays released: claims only accumulate),
    ``readings`` the device's per-second readings of claimed seconds (the ledger's ALIAS
    columns take the row's share of them). Every field merges by union (OR, or by second), so
    rows written by any number of writers, in any order, any number of times, converge
    (``usage_minutely`` is an AggregatingMergeTree doing exactly this); the sums are derived
    from the counted seconds (``seconds_mask``).

    In the aggregator's memory a row that the ledger holds keeps only the readings written
    since (:meth:`forgotten`): the ledger's union already has the others, so writing the row
    again with its new seconds' readings merges to the same ledger row. ``dropped_mask`` are
    the held seconds whose readings left memory and ``dropped_sm``, ``dropped_mem``,
    ``dropped_energy`` their sums, taken in the order the readings were added, so
    :meth:`sums` adds exactly what it added when it held every reading. A change to one of
    those seconds (a release, a new reading) first restores them from the ledger
    (``Aggregator._restore``; ``pinned`` keeps the rare reading that replaced an earlier one
    of the same second, which the ledger merged with it). The aggregator hands the sink a
    row and replaces its own copy when it drops, so what the sink received stays as it was."""

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
    share_milli: int = WHOLE  # 1..1000; the ledger stores 1000 as shared_milli = 0
    # memory only (never written): held seconds whose readings were dropped, and their sums
    dropped_mask: int = 0
    dropped_sm: float = 0.0
    dropped_mem: float = 0.0
    dropped_energy: int = 0
    # memory only: readings that replaced a held second's earlier reading (rare: a winning
    # claim sharing this row); the ledger keeps the max of both, a restore needs this one
    pinned: dict[int, SecondReadings] | None = None
    # memory only: readings of new seconds not yet folded into ``readings``, in the order they
    # were added, of seconds ``readings`` does not hold (:meth:`settle` folds them in). The
    # common path (a frame's whole span, seconds new to the row) keeps its slices here, and the
    # ledger's columns and the sums are taken from them directly. Never mutated in place: a
    # copy of the row (``dataclasses.replace``) shares it safely.
    pending: tuple[Piece, ...] = ()

    def settle(self) -> dict[int, SecondReadings]:
        """``readings`` with the pending pieces folded in, in the order they were added."""
        if self.pending:
            readings = self.readings
            for first, sm, mem, energy in self.pending:
                seconds = range(first, first + len(sm))
                readings.update(zip(seconds, zip(sm, mem, energy, strict=True), strict=True))
            self.pending = ()
        return self.readings

    @property
    def holds_readings(self) -> bool:
        return bool(self.readings) or bool(self.pending)

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
    def gpu_milli_seconds(self) -> int:
        """Milli-GPU-seconds held: seconds x share (what billing prices)."""
        return self.seconds_mask.bit_count() * self.share_milli

    @property
    def active_seconds(self) -> int:
        return self.active_mask.bit_count()

    def _sum(self, i: int) -> float:
        return self.sums()[i]

    def sums(self) -> tuple[float, float, int]:
        """(SM utilization sum, memory utilization sum, device energy mJ) over the counted
        seconds, in one pass (what a closed minute's message carries)."""
        sm, mem, energy = self.dropped_sm, self.dropped_mem, self.dropped_energy
        # floats left to right, one addition at a time (not sum(): 3.12 compensates, so the
        # float would depend on the Python version and differ from the sums already emitted);
        # reduce(add) is exactly that loop, at C speed. Energies are integers (mJ): sum() is
        # exact in any order, and faster.
        if not self.released_mask:  # every reading is of a held second (the usual case)
            values = self.readings.values()
            if values:
                sms, mems, energies = zip(*values, strict=True)
                sm = reduce(add, sms, sm)
                mem = reduce(add, mems, mem)
                energy = sum(energies, energy)
            for _, p_sm, p_mem, p_energy in self.pending:  # after ``readings``: their order
                sm = reduce(add, p_sm, sm)
                mem = reduce(add, p_mem, mem)
                energy = sum(p_energy, energy)
            return sm, mem, int(energy)
        mask = self.seconds_mask
        for s, (a, b, c) in self.settle().items():
            if mask >> s & 1:
                sm += a
                mem += b
                energy += c
        return sm, mem, int(energy)

    @property
    def sm_util_sum(self) -> float:
        return self._sum(0)

    @property
    def mem_util_sum(self) -> float:
        return self._sum(1)

    @property
    def device_energy_mj(self) -> int:
        """The device's energy over the held seconds."""
        return int(self._sum(2))

    @property
    def energy_mj(self) -> int:
        """The row's part of the device energy, as the ledger's ALIAS computes it."""
        return int(self._sum(2)) * self.share_milli // WHOLE

    def forgotten(self) -> MinuteRow:
        """This row without its readings (the ledger holds them), as a new object: the one
        handed to the sink stays as it was written. The held seconds' sums are kept."""
        sm, mem, energy = self.sums()
        return MinuteRow(
            self.minute,
            self.tenant,
            self.job,
            self.billing_class,
            self.gpu_uuid,
            self.mig_uuid,
            self.gpu_model,
            self.node_id,
            self.claimed_mask,
            self.released_mask,
            self.claimed_active,
            {},
            self.peak_mem_used,
            self.version,
            self.share_milli,
            self.seconds_mask,
            sm,
            mem,
            energy,
            self.pinned,
        )

    @property
    def allocation(self) -> Allocation:
        return (self.tenant, self.job)

    @property
    def key(self) -> RowKey:
        return (self.tenant, self.job, self.share_milli)

    def merge(self, other: MinuteRow) -> None:
        """Union with another state of the same row (what the ledger does on FINAL): of
        ledger rows, whose readings are all there (``dropped_mask`` is 0)."""
        self.claimed_mask |= other.claimed_mask
        self.released_mask |= other.released_mask
        self.claimed_active |= other.claimed_active
        self.settle()
        for second, r in other.settle().items():
            mine = self.readings.get(second)
            self.readings[second] = r if mine is None else max(mine, r)
        self.peak_mem_used = max(self.peak_mem_used, other.peak_mem_used)
        self.version = max(self.version, other.version)
        self.billing_class = max(self.billing_class, other.billing_class)
        self.gpu_model = max(self.gpu_model, other.gpu_model)
        self.node_id = max(self.node_id, other.node_id)


@dataclass(slots=True)
class GpuMinute:
    """One device (GPU or MIG slice) for one minute: its rows and the seconds claimed."""

    key: GpuMinuteKey
    counted: int = 0  # seconds claimed (by rows here, or by a MIG slice for a parent)
    rows: dict[RowKey, MinuteRow] = field(default_factory=dict)
    closed: bool = False

    def holders(self, bit: int) -> list[MinuteRow]:
        """The rows holding one second (one claim set), smallest key first; [] if none."""
        return sorted(
            (r for r in self.rows.values() if r.claimed_mask & bit and not r.released_mask & bit),
            key=lambda r: r.key,
        )

    def held(self) -> int:
        """Every second some row here holds."""
        out = 0
        for r in self.rows.values():
            out |= r.claimed_mask & ~r.released_mask
        return out


@dataclass(frozen=True, slots=True)
class Conflict:
    """One losing row of a claim set for one GPU-second, and the winning claim (its first row).

    A claim set that loses a second gives one conflict per row it does not share with the
    winner."""

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
    winner_share_milli: int = WHOLE
    loser_share_milli: int = WHOLE


class FreshSpan(NamedTuple):
    """Seconds of one frame newly counted in one minute (what the raw archive stores):
    bit ``s`` of ``mask`` is second ``minute + s``."""

    node_id: str
    frame: Frame
    minute: int
    mask: int


@dataclass
class AddResult:
    new_seconds: int = 0
    duplicates: int = 0
    late: int = 0  # counted into a minute that had already closed (a correction)
    conflicts: int = 0  # contested seconds (each may record several conflict rows)
    fresh: list[FreshSpan] = field(default_factory=list)


def row_order(r: MinuteRow) -> tuple[int, str, str, str, str, int]:
    return (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job, r.share_milli)


def active_mask_of(sm_util: Sequence[float]) -> int:
    """Bit i set when second i of a frame had SM utilization > 0 (a frame wholly busy or
    wholly idle, the common cases, without a loop in Python)."""
    if not sm_util:
        return 0
    if min(sm_util) > 0:
        return (1 << len(sm_util)) - 1
    if max(sm_util) <= 0:
        return 0
    out = 0
    for i, v in enumerate(sm_util):
        if v > 0:
            out |= 1 << i
    return out


def pin_readings(row: MinuteRow, seconds: int) -> None:
    """Seconds whose reading a later claim replaced keep it in memory (``row.pinned``): the
    ledger merges both readings (max by second), and a restore must give this one."""
    pinned = dict(row.pinned) if row.pinned else {}
    readings = row.settle()
    for s in bits_of(seconds):
        pinned[s] = readings[s]
    row.pinned = pinned


def bits_of(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def restore_readings(row: MinuteRow, stored: dict[int, SecondReadings]) -> MinuteRow:
    """Put back the readings ``row`` dropped, from the ledger's ``stored`` readings of that row,
    in the row itself (so the caller's reference stays good): its sums are then taken from the
    readings again. Readings the ledger does not hold (a write lost on the way) stay missing."""
    dropped = row.dropped_mask
    row.settle()
    back = {s: stored[s] for s in sorted(stored) if dropped >> s & 1}
    if row.pinned:  # the ledger merged the old and new readings of these: take the new
        for s, newer in row.pinned.items():
            if s in back:
                back[s] = newer
    back.update(row.readings)
    row.readings = back
    row.dropped_mask = 0
    row.dropped_sm = row.dropped_mem = 0.0
    row.dropped_energy = 0
    return row
