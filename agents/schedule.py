"""Scheduled fleets: per-device timelines of allocations, answered second by second.

A fleet is built up front as a *schedule*: per device (GPU or MIG slice) one or more *tracks*,
each a timeline of allocations (tenant, job, billing class, share, activity profile) and idle
gaps covering ``[start, end)``. A whole GPU or a MIG slice has one track at 1000 milli-GPU; a
shared GPU has several whose shares sum to at most 1000. The node samplers
(:mod:`agents.lane`) answer ``seconds(ts)`` from that schedule, and
:meth:`ScheduledFleet.ground_truth` counts the same schedule without sampling (segment by
segment, idle by a sweep over the tracks' changes), so the two are independent witnesses of
one truth. The simulator (:mod:`agents.simulator`) and the trace replays (:mod:`agents.trace`,
:mod:`agents.openb`) fill schedules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from agents.lane import MIX_A, MIX_B, Lane, ScheduleSampler
from agents.sampler import GpuInfo, GroundTruth, Sampler
from schemas.frame import WHOLE
from schemas.usage import BillingClass

#: Namespace of simulated and replayed GPU uuids (deterministic, distinct from real ones).
GPU_NAMESPACE = uuid.UUID("0b6f3c1e-5a47-5c2d-8e90-2f4b7d1a6c33")

_M64 = (1 << 64) - 1
_MIB = 1024**2


@dataclass(frozen=True, slots=True)
class GpuModelSpec:
    """What the simulation needs to know about a GPU model (NVML name and memory as NVML reports)."""

    name: str
    memory_total: int
    idle_w: float
    max_w: float


H100 = GpuModelSpec("NVIDIA H100 80GB HBM3", 81_559 * _MIB, 70.0, 700.0)
A100 = GpuModelSpec("NVIDIA A100-SXM4-80GB", 81_920 * _MIB, 55.0, 400.0)
GPU_MODELS: dict[str, GpuModelSpec] = {s.name: s for s in (H100, A100)}


def mix64(a: int, b: int) -> int:
    """A 64-bit hash of two integers (splitmix64 finalizer): cheap, stateless, order-free noise."""
    x = (a * MIX_A + b * MIX_B) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def gpu_uuid(*parts: object) -> str:
    return "GPU-" + str(uuid.uuid5(GPU_NAMESPACE, "/".join(map(str, parts))))


class ActivityProfile(Protocol):
    """How busy an allocation keeps its GPU; ``noise`` is a per-(gpu, second) 64-bit hash."""

    @property
    def mem_fraction(self) -> float:
        """Share of the GPU's memory the allocation holds (constant over its life)."""
        ...

    def sm_util(self, ts: int, noise: int) -> float: ...


class Segment(NamedTuple):
    """One stretch of one track: allocated (tenant and job set) at ``milli`` of the device, or
    idle (all None)."""

    start: int
    end: int
    tenant: str | None = None
    job: str | None = None
    billing_class: BillingClass | None = None
    profile: ActivityProfile | None = None
    milli: int = WHOLE


def mig_spec(parent: GpuModelSpec, g: int, mem_gb: int) -> GpuModelSpec:
    """A MIG profile of ``parent`` (``g`` of 7 compute slices), named as NVML names it."""
    return GpuModelSpec(
        f"{parent.name} MIG {g}g.{mem_gb}gb",
        mem_gb * 1024 * _MIB,
        parent.idle_w * g / 7,
        parent.max_w * g / 7,
    )


def fill_timeline(allocs: Sequence[Segment], start: int, end: int) -> list[Segment]:
    """Clip non-overlapping allocations to [start, end) and fill the gaps with idle segments, so
    every second of the window belongs to exactly one segment."""
    out: list[Segment] = []
    t = start
    for a in sorted(allocs, key=lambda s: s.start):
        s, e = max(a.start, start), min(a.end, end)
        if s >= e:
            continue
        if s < t:
            raise ValueError(f"allocation {a.job} overlaps the previous one at {s}")
        if s > t:
            out.append(Segment(t, s))
        out.append(a._replace(start=s, end=e))
        t = e
    if t < end:
        out.append(Segment(t, end))
    return out


class ScheduledFleet:
    """Nodes of devices with per-device tracks: samplers and ground truth from one schedule."""

    start: int
    end: int

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        # (node_id, devices, per-device filled tracks, per-device noise keys, per-device specs)
        self._nodes: list[
            tuple[str, list[GpuInfo], list[list[list[Segment]]], list[int], list[GpuModelSpec]]
        ] = []

    def _add_node(
        self,
        node_id: str,
        gpus: list[GpuInfo],
        tracks: list[list[list[Segment]]],
        keys: list[int],
        specs: list[GpuModelSpec],
    ) -> None:
        """One node: per device (GPU or MIG slice) its tracks (one for a whole device)."""
        filled = [[fill_timeline(t, self.start, self.end) for t in dev] for dev in tracks]
        self._nodes.append((node_id, gpus, filled, keys, specs))

    def samplers(self) -> list[Sampler]:
        """One sampler per node; each call gives fresh cursors, so agents never share state."""
        return [
            ScheduleSampler(
                node_id,
                [Lane(g, sp, k, t) for g, t, k, sp in zip(gpus, tl, keys, specs, strict=True)],
            )
            for node_id, gpus, tl, keys, specs in self._nodes
        ]

    def schedule(self) -> Iterator[tuple[str, GpuInfo, Segment]]:
        """Every (node id, device, segment) of the window, track by track, idle segments
        included (on a shared GPU a track's idle segment is only that track's share idle)."""
        for node_id, gpus, tracks, _, _ in self._nodes:
            for gpu, dev in zip(gpus, tracks, strict=True):
                for track in dev:
                    for seg in track:
                        yield node_id, gpu, seg

    @property
    def node_ids(self) -> list[str]:
        return [n[0] for n in self._nodes]

    def gpus(self) -> list[GpuInfo]:
        """Every device of the fleet (GPUs, and MIG slices in place of their GPU), node by node."""
        return [g for n in self._nodes for g in n[1]]

    @property
    def gpu_count(self) -> int:
        return sum(len(n[1]) for n in self._nodes)

    def ground_truth(self, start: int | None = None, end: int | None = None) -> GroundTruth:
        """Over [start, end) (default: the whole window), counted from the schedule, not from
        samples: allocated seconds and milli-GPU-seconds per (tenant, job, model, hour), and
        per GPU (its MIG slices summed) the idle milli-GPU-seconds and seconds with idle."""
        lo = self.start if start is None else max(start, self.start)
        hi = self.end if end is None else min(end, self.end)
        truth = GroundTruth()
        for _, gpus, tracks, _, _ in self._nodes:
            for gpu, dev in zip(gpus, tracks, strict=True):
                changes: list[tuple[int, int]] = [(lo, 0), (hi, 0)]
                for track in dev:
                    for seg in track:
                        s, e = max(seg.start, lo), min(seg.end, hi)
                        if s >= e or seg.tenant is None or seg.job is None:
                            continue
                        truth.add_allocated(seg.tenant, seg.job, gpu.model, s, e, seg.milli)
                        changes += [(s, seg.milli), (e, -seg.milli)]
                # the idle remainder between consecutive changes of the allocated milli
                changes.sort()
                used, t = 0, lo
                for at, delta in changes:
                    if at > t:
                        truth.add_idle(gpu.uuid, at - t, WHOLE - used)
                        t = at
                    used += delta
        return truth
