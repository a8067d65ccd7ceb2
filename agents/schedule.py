"""Scheduled fleets: per-GPU timelines of allocations, answered second by second as samples.

A fleet is built up front as a *schedule*: per GPU a timeline of allocations (tenant, job,
billing class, activity profile) and idle gaps covering ``[start, end)``. The node samplers
answer ``sample(ts)`` from that schedule, and :meth:`ScheduledFleet.ground_truth` counts the
same schedule without sampling, so the two are independent witnesses of one truth. The
simulator (:mod:`agents.simulator`) and trace replay (:mod:`agents.trace`) fill schedules.

Determinism: every per-second value (utilization jitter, power noise) is a hash of
``(seed, gpu, ts)``, never a stateful RNG, so a sample does not depend on which seconds were
asked before (an agent replaying after a crash gets identical samples).

Speed: a simulated day of 4 x 8 GPUs is 2.76 million samples. Samples are built with
``GpuSecond.unchecked`` from a complete field dict (values are trusted and within the contract;
several times cheaper than ``model_construct``), and each GPU keeps a cursor on its current
timeline segment so the usual lookup is one comparison.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from agents.sampler import GpuInfo, GroundTruth, Sampler
from schemas.usage import BillingClass, GpuSecond

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


_MIX_A = 0x9E3779B97F4A7C15
_MIX_B = 0xD1B54A32D192ED03


def mix64(a: int, b: int) -> int:
    """A 64-bit hash of two integers (splitmix64 finalizer): cheap, stateless, order-free noise."""
    x = (a * _MIX_A + b * _MIX_B) & _M64
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
    """One stretch of one GPU's timeline: allocated (tenant and job set) or idle (all None)."""

    start: int
    end: int
    tenant: str | None = None
    job: str | None = None
    billing_class: BillingClass | None = None
    profile: ActivityProfile | None = None


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


class _Lane:
    """One GPU's timeline with a cursor. The current segment's fields are cached on the lane, so
    sampling seconds in order costs one comparison and a few attribute loads per GPU."""

    __slots__ = (
        "info", "uuid", "model", "mem_total", "idle_w", "span_w", "salt", "starts", "segs", "mem",
        "cur_start", "cur_end", "tenant", "job", "billing_class", "profile", "mem_used",
    )  # fmt: skip

    def __init__(self, info: GpuInfo, spec: GpuModelSpec, key: int, segs: list[Segment]) -> None:
        self.info, self.segs = info, segs
        self.uuid, self.model, self.mem_total = info.uuid, spec.name, spec.memory_total
        self.idle_w, self.span_w = spec.idle_w, (spec.max_w - spec.idle_w) * 0.01
        self.salt = key * _MIX_A  # the first step of mix64(key, ts), hoisted out of the loop
        self.starts = [s.start for s in segs]
        # Memory held by an allocation is constant for its life; precomputed per segment.
        self.mem = [
            0
            if s.profile is None
            else int(s.profile.mem_fraction * spec.memory_total) // _MIB * _MIB
            for s in segs
        ]
        self.cur_start = self.cur_end = 0

    def seek(self, ts: int) -> None:
        i = bisect_right(self.starts, ts) - 1
        if i < 0 or ts >= self.segs[-1].end:
            raise ValueError(
                f"second {ts} is outside the schedule "
                f"[{self.segs[0].start}, {self.segs[-1].end}) of {self.uuid}"
            )
        seg = self.segs[i]
        self.cur_start, self.cur_end = seg.start, seg.end
        self.tenant, self.job, self.billing_class = seg.tenant, seg.job, seg.billing_class
        self.profile, self.mem_used = seg.profile, self.mem[i]


class ScheduleSampler:
    """A node's :class:`~agents.sampler.Sampler` that answers from a precomputed schedule."""

    def __init__(self, node_id: str, lanes: Sequence[_Lane]) -> None:
        self.node_id = node_id
        self._lanes = list(lanes)
        self._gpus = tuple(lane.info for lane in lanes)

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def close(self) -> None:
        pass

    def sample(self, ts: int) -> list[GpuSecond]:
        unchecked = GpuSecond.unchecked
        ts_salt = ts * _MIX_B
        out: list[GpuSecond] = []
        for lane in self._lanes:
            if not lane.cur_start <= ts < lane.cur_end:
                lane.seek(ts)
            # mix64(key, ts), inlined: this loop runs millions of times per simulated day
            x = (lane.salt + ts_salt) & _M64
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
            n = x ^ (x >> 31)
            prof = lane.profile
            if prof is None:
                sm = mem_util = 0.0
            else:
                sm = round(prof.sm_util(ts, n), 1)
                mem_util = round(sm * 0.55, 1)
            # Power: idle floor + a share proportional to SM load, +-2 W sensor noise.
            power = round(lane.idle_w + lane.span_w * sm + ((n >> 16) & 0xFF) * (4 / 255) - 2.0, 1)
            # Energy over the second differs from the power reading by up to +-2 %: far inside
            # the contract's power/energy consistency rule (factor 3 plus 50 J).
            energy = round(power * (1.0 + (((n >> 24) & 0xFFF) * (1 / 4095) - 0.5) * 0.04), 2)
            # Every field, in declaration order (the same dict model_construct would build).
            out.append(
                unchecked(
                    {
                        "gpu_uuid": lane.uuid,
                        "mig_uuid": None,
                        "gpu_model": lane.model,
                        "ts": ts,
                        "tenant": lane.tenant,
                        "job": lane.job,
                        "billing_class": lane.billing_class,
                        "sm_util": sm,
                        "mem_util": mem_util,
                        "mem_used": lane.mem_used,
                        "mem_total": lane.mem_total,
                        "power_w": power,
                        "energy_j": energy,
                        "temp_c": round(31.0 + sm * 0.45 + ((n >> 40) & 0xFF) * (2 / 255), 1),
                        "flags": (),
                    }
                )
            )
        return out


class ScheduledFleet:
    """Nodes of GPUs with per-GPU timelines: samplers and ground truth from one schedule."""

    start: int
    end: int

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        # node_id -> (gpus, per-GPU filled timelines, per-GPU noise keys, per-GPU specs)
        self._nodes: list[
            tuple[str, list[GpuInfo], list[list[Segment]], list[int], list[GpuModelSpec]]
        ] = []

    def _add_node(
        self,
        node_id: str,
        gpus: list[GpuInfo],
        timelines: list[list[Segment]],
        keys: list[int],
        specs: list[GpuModelSpec],
    ) -> None:
        filled = [fill_timeline(t, self.start, self.end) for t in timelines]
        self._nodes.append((node_id, gpus, filled, keys, specs))

    def samplers(self) -> list[Sampler]:
        """One sampler per node; each call gives fresh cursors, so agents never share state."""
        return [
            ScheduleSampler(
                node_id,
                [_Lane(g, sp, k, t) for g, t, k, sp in zip(gpus, tl, keys, specs, strict=True)],
            )
            for node_id, gpus, tl, keys, specs in self._nodes
        ]

    def schedule(self) -> Iterator[tuple[str, GpuInfo, Segment]]:
        """Every (node id, GPU, segment) of the window, idle segments included, in node order."""
        for node_id, gpus, timelines, _, _ in self._nodes:
            for gpu, segs in zip(gpus, timelines, strict=True):
                for seg in segs:
                    yield node_id, gpu, seg

    @property
    def node_ids(self) -> list[str]:
        return [n[0] for n in self._nodes]

    def gpus(self) -> list[GpuInfo]:
        """Every GPU of the fleet, node by node (``len()`` is the fleet size; ``.model`` each model)."""
        return [g for n in self._nodes for g in n[1]]

    @property
    def gpu_count(self) -> int:
        return sum(len(n[1]) for n in self._nodes)

    def ground_truth(self, start: int | None = None, end: int | None = None) -> GroundTruth:
        """Allocated GPU-seconds per (tenant, job, model, hour) and idle seconds per GPU over
        [start, end) (default: the whole window), counted from the schedule, not from samples."""
        lo = self.start if start is None else max(start, self.start)
        hi = self.end if end is None else min(end, self.end)
        truth = GroundTruth()
        for _, gpus, timelines, _, _ in self._nodes:
            for gpu, segs in zip(gpus, timelines, strict=True):
                for seg in segs:
                    s, e = max(seg.start, lo), min(seg.end, hi)
                    if s >= e:
                        continue
                    if seg.tenant is None or seg.job is None:
                        truth.idle[gpu.uuid] += e - s
                    else:
                        truth.add_allocated(seg.tenant, seg.job, gpu.model, s, e)
        return truth
