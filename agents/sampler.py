"""The sampler interface: where GPU-second samples come from (NVML, a simulated fleet, a trace).

A sampler belongs to one node. ``sample(ts)`` returns one :class:`GpuSecond` per GPU (or MIG
slice) for the UTC second ``ts``, already attributed to an allocation or idle. Simulated and
trace samplers also know the ground truth: the allocated GPU-seconds per (tenant, job) that the
pipeline must reproduce exactly, computed from their schedule, not from the samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from schemas.usage import GpuSecond


@dataclass(frozen=True, slots=True)
class GpuInfo:
    uuid: str
    model: str
    index: int
    mig_uuid: str | None = None
    memory_total: int = 0


@runtime_checkable
class Sampler(Protocol):
    node_id: str

    def gpus(self) -> Sequence[GpuInfo]:
        """The GPUs (and MIG slices) this node samples, in a stable order."""
        ...

    def sample(self, ts: int) -> list[GpuSecond]:
        """One attributed sample per GPU for the UTC second ``ts`` (epoch seconds)."""
        ...

    def close(self) -> None: ...


class TruthKey(NamedTuple):
    tenant: str
    job: str
    gpu_model: str
    hour: int  # epoch second of the UTC hour start


@dataclass
class GroundTruth:
    """What the pipeline must reproduce: allocated GPU-seconds by (tenant, job, gpu model, hour)
    and idle GPU-seconds by GPU. Built from a schedule, independently of the samples."""

    allocated: Counter[TruthKey] = field(default_factory=Counter)
    idle: Counter[str] = field(default_factory=Counter)  # gpu_uuid -> idle seconds

    def add_allocated(self, tenant: str, job: str, gpu_model: str, start: int, end: int) -> None:
        """Count the seconds [start, end) of one GPU for (tenant, job), split by UTC hour."""
        t = start
        while t < end:
            hour = t - t % 3600
            upto = min(end, hour + 3600)
            self.allocated[TruthKey(tenant, job, gpu_model, hour)] += upto - t
            t = upto

    def per_tenant(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, secs in self.allocated.items():
            out[key.tenant] += secs
        return out

    def per_job(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for key, secs in self.allocated.items():
            out[(key.tenant, key.job)] += secs
        return out

    @property
    def idle_seconds(self) -> int:
        return sum(self.idle.values())

    @property
    def allocated_seconds(self) -> int:
        return sum(self.allocated.values())
