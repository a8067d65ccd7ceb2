"""Shared GPUs: how much capacity was split into fractional allocations and how full it was
packed, per GPU model and for the fleet.

A GPU-second is *shared* when the device was split into shares (contract v2: some allocation
below 1000 milli-GPUs, the remainder stored as idle at its share; migration 0032 counts it as
``shared_milli_seconds`` in ``gpu_utilization_hourly``). Of that shared capacity, the packed part
is what allocations hold and the idle remainder is what they left; the mean packed share is
packed / shared capacity (in milli-GPUs: 1000 x that ratio). Whole-GPU seconds are not shared,
whether allocated or idle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from analytics.ledger_facts import GpuHour
from kernel.names import MILLI_PER_GPU_HOUR


@dataclass(frozen=True)
class Packing:
    """Shared capacity of one GPU model (``key``) or the fleet (``key`` 'fleet')."""

    key: str
    gpus: int  # GPUs that were shared at least once in the period
    available_milli: int  # all capacity observed (shared or not), milli-GPU-seconds
    shared_milli: int  # capacity of the seconds the GPUs were split into shares
    packed_milli: int  # the part of it allocations held

    @property
    def shared_h(self) -> Decimal:
        return Decimal(self.shared_milli) / MILLI_PER_GPU_HOUR

    @property
    def packed_h(self) -> Decimal:
        return Decimal(self.packed_milli) / MILLI_PER_GPU_HOUR

    @property
    def remainder_h(self) -> Decimal:
        """Idle remainder of the shared GPUs: capacity left between the shares."""
        return Decimal(self.shared_milli - self.packed_milli) / MILLI_PER_GPU_HOUR

    @property
    def packed(self) -> Decimal | None:
        """Mean packed share of a shared GPU-second (0..1)."""
        return Decimal(self.packed_milli) / self.shared_milli if self.shared_milli else None

    @property
    def shared_fraction(self) -> Decimal | None:
        """The part of the observed capacity that was shared (0..1)."""
        return Decimal(self.shared_milli) / self.available_milli if self.available_milli else None


def packing(gpu_hours: Iterable[GpuHour]) -> tuple[Packing, ...]:
    """Per GPU model that had shared capacity, then the fleet; () when nothing was shared."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    shared_gpus: dict[str, set[str]] = defaultdict(set)
    for h in gpu_hours:
        for key in (h.gpu_model, "fleet"):
            a = acc[key]
            a[0] += h.available_milli
            a[1] += h.shared_milli
            a[2] += h.shared_allocated_milli
            if h.shared_milli:
                shared_gpus[key].add(h.gpu_uuid)
    if not acc["fleet"][1]:
        return ()
    models = sorted(k for k, a in acc.items() if k != "fleet" and a[1])
    return tuple(
        Packing(k, len(shared_gpus[k]), acc[k][0], acc[k][1], acc[k][2]) for k in (*models, "fleet")
    )
