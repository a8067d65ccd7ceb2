"""The sampler interface: where GPU-second samples come from (NVML, a simulated fleet, a trace).

A sampler belongs to one node. ``seconds(ts)`` returns one :class:`DeviceSecond` per GPU (or
MIG slice) for the UTC second ``ts``: its readings and its allocation set (shares in
milli-GPUs, the remainder idle), what the agent groups into contract-v2 frames.
``sample(ts)`` is the same second as contract-v1 samples (one tenant per GPU-second), for the
``--schema-version 1`` release; a shared second has no v1 form and raises
:class:`SharesNeedV2Error`. Simulated and trace samplers also know the ground truth: the
allocated GPU-seconds and milli-GPU-seconds per (tenant, job) that the pipeline must reproduce
exactly, computed from their schedule, not from the samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from agents.errors import AgentError
from schemas.frame import WHOLE, Share
from schemas.usage import GpuSecond


@dataclass(frozen=True, slots=True)
class GpuInfo:
    uuid: str
    model: str
    index: int
    mig_uuid: str | None = None
    memory_total: int = 0


class DeviceSecond(NamedTuple):
    """One device (GPU or MIG slice) for one UTC second: readings and allocation set.

    ``allocations`` are the shares holding the device (empty: idle), without measured
    utilization; ``share_util`` is, aligned with them, each share's SM utilization this second
    (NVML per-process utilization), or None where it is not measured."""

    gpu_uuid: str
    mig_uuid: str | None
    gpu_model: str
    ts: int
    allocations: tuple[Share, ...]
    sm_util: float
    mem_util: float
    mem_used: int
    mem_total: int
    power_w: float
    energy_j: float
    temp_c: float | None = None
    flags: tuple[str, ...] = ()
    share_util: tuple[float, ...] | None = None


class SharesNeedV2Error(AgentError, ValueError):
    """A shared GPU-second (several allocations, or a share below 1000) has no v1 form."""


def v1_sample(d: DeviceSecond) -> GpuSecond:
    """The contract-v1 sample of a device second: one whole allocation or idle.

    Raises :class:`SharesNeedV2Error` for a shared second rather than bill it to one tenant."""
    allocs = d[4]  # d.allocations (index access: this runs for every v1 sample)
    if len(allocs) > 1 or (allocs and allocs[0].milli != WHOLE):
        raise SharesNeedV2Error(
            f"{d.gpu_uuid}{'/' + d.mig_uuid if d.mig_uuid else ''} at {d.ts} is shared "
            f"({', '.join(f'{a.tenant}/{a.job}={a.milli}' for a in allocs)} milli-GPU): "
            "contract v1 cannot carry shares; run the agent with --schema-version 2"
        )
    a = allocs[0] if allocs else None
    gpu, mig, model, ts, _, sm, mem_util, mem_used, mem_total, power, energy, temp, flags, _ = d
    return GpuSecond.unchecked(
        {
            "gpu_uuid": gpu,
            "mig_uuid": mig,
            "gpu_model": model,
            "ts": ts,
            "tenant": a.tenant if a else None,
            "job": a.job if a else None,
            "billing_class": a.billing_class if a else None,
            "sm_util": sm,
            "mem_util": mem_util,
            "mem_used": mem_used,
            "mem_total": mem_total,
            "power_w": power,
            "energy_j": energy,
            "temp_c": temp,
            "flags": flags,
        }
    )


@runtime_checkable
class Sampler(Protocol):
    node_id: str

    def gpus(self) -> Sequence[GpuInfo]:
        """The GPUs (and MIG slices) this node samples, in a stable order."""
        ...

    def seconds(self, ts: int) -> list[DeviceSecond]:
        """One device second per GPU (or MIG slice) for the UTC second ``ts`` (epoch)."""
        ...

    def sample(self, ts: int) -> list[GpuSecond]:
        """The same second as contract-v1 samples (:func:`v1_sample` of each device second)."""
        ...

    def close(self) -> None: ...


class TruthKey(NamedTuple):
    tenant: str
    job: str
    gpu_model: str
    hour: int  # epoch second of the UTC hour start


@dataclass
class GroundTruth:
    """What the pipeline must reproduce, built from a schedule, independently of the samples:
    by (tenant, job, gpu model, hour) the GPU-seconds held (whatever the share: the ledger's
    ``gpu_seconds``) and the milli-GPU-seconds (seconds x share: ``gpu_milli_seconds``); by
    device (``gpu_uuid`` or ``gpu_uuid/mig_uuid``) the idle milli-GPU-seconds (the remainder
    of every second) and the seconds wholly idle."""

    allocated: Counter[TruthKey] = field(default_factory=Counter)
    allocated_milli: Counter[TruthKey] = field(default_factory=Counter)
    idle: Counter[str] = field(default_factory=Counter)  # device -> seconds with idle share
    idle_milli_by_device: Counter[str] = field(default_factory=Counter)

    def add_allocated(
        self, tenant: str, job: str, gpu_model: str, start: int, end: int, milli: int = WHOLE
    ) -> None:
        """Count the seconds [start, end) of one device held by (tenant, job) at ``milli``
        of 1000, split by UTC hour."""
        t = start
        while t < end:
            hour = t - t % 3600
            upto = min(end, hour + 3600)
            key = TruthKey(tenant, job, gpu_model, hour)
            self.allocated[key] += upto - t
            self.allocated_milli[key] += (upto - t) * milli
            t = upto

    def add_idle(self, device: str, seconds: int, milli: int = WHOLE) -> None:
        """``seconds`` of ``device`` with ``milli`` of 1000 idle (1000: wholly idle)."""
        if milli > 0:
            self.idle_milli_by_device[device] += seconds * milli
            self.idle[device] += seconds

    def per_tenant_milli(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, milli in self.allocated_milli.items():
            out[key.tenant] += milli
        return out

    def per_job_milli(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for key, milli in self.allocated_milli.items():
            out[(key.tenant, key.job)] += milli
        return out

    @property
    def idle_milli(self) -> int:
        return sum(self.idle_milli_by_device.values())

    @property
    def allocated_milli_seconds(self) -> int:
        return sum(self.allocated_milli.values())

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
