"""Contract v2 in memory: a *frame* is one device (GPU or MIG slice) over a run of seconds.

What a worker receives in a ``schema_version`` 2 record, after validation, and what a v1 record
is translated into (:func:`frames_from_samples`), so the worker has one path. A frame covers
the contiguous seconds ``start .. start + n - 1`` with per-second readings held column-wise
(one list per reading, ``n`` long), and one allocation set for all of them: the agent starts a
new frame when the allocation changes, a second is missing, or the window ends.

**Shares.** ``allocations`` lists who holds the device in these seconds, each with an integer
share in milli-GPUs (1..1000), summing to at most 1000. What they leave is idle: an empty
list is a wholly idle device, one allocation of 1000 is a whole-GPU allocation (what v1 meant
by a tenant and job). The identity of a second is still ``(gpu_uuid, mig_uuid, ts)``: a frame's
seconds are identified, deduplicated and archived one by one, and the *claim* on a second is
the whole allocation set (two records claiming the same second with different sets conflict,
see :mod:`streams.aggregate`).

**MIG.** A GPU in MIG mode is metered through its slices only: a frame for the parent GPU
(``mig_uuid`` null) and a frame for one of its slices claiming the same second conflict, and
the slice wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from schemas.usage import Gap, GpuSecond

#: A whole GPU, in milli-GPUs.
WHOLE = 1000


@dataclass(frozen=True, slots=True)
class Share:
    """One allocation's part of a device: ``milli`` of 1000, for tenant and job."""

    tenant: str
    job: str
    milli: int = WHOLE
    billing_class: str | None = None
    #: measured SM utilization (%) of this allocation's processes, per second of the frame
    #: (NVML per-process utilization), when the producer has it; else None
    sm_util: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One device over ``n`` contiguous seconds from ``start``, readings column-wise."""

    gpu_uuid: str
    mig_uuid: str | None
    gpu_model: str
    start: int
    allocations: tuple[Share, ...]
    sm_util: Sequence[float]
    mem_util: Sequence[float]
    mem_used: Sequence[int]
    mem_total: int
    power_w: Sequence[float]
    energy_j: Sequence[float]
    temp_c: Sequence[float | None] | None = None
    #: sparse per-second flags: index in the frame -> flags (see ``schemas.usage.SampleFlag``)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.sm_util)

    @property
    def end(self) -> int:
        """The first second after the frame (exclusive)."""
        return self.start + len(self.sm_util)

    @property
    def idle_milli(self) -> int:
        return WHOLE - sum(s.milli for s in self.allocations)


def frames_from_samples(samples: Iterable[GpuSecond]) -> list[Frame]:
    """v1 -> v2: consecutive samples of one device with one allocation become one frame.

    A v1 sample with a tenant is a whole-GPU allocation (share 1000); one without is idle.
    Order is kept; a frame never spans a missing second or an allocation change."""
    out: list[Frame] = []
    run: list[GpuSecond] = []

    def flush() -> None:
        if run:
            out.append(_frame_of(run))
            run.clear()

    for s in samples:
        if run:
            last = run[-1]
            if (
                s.ts != last.ts + 1
                or s.gpu_uuid != last.gpu_uuid
                or s.mig_uuid != last.mig_uuid
                or s.gpu_model != last.gpu_model
                or s.tenant != last.tenant
                or s.job != last.job
                or s.billing_class != last.billing_class
                or s.mem_total != last.mem_total
            ):
                flush()
        run.append(s)
    flush()
    return out


def _frame_of(run: Sequence[GpuSecond]) -> Frame:
    first = run[0]
    shares: tuple[Share, ...] = ()
    if first.tenant is not None and first.job is not None:
        shares = (Share(first.tenant, first.job, WHOLE, first.billing_class),)
    temps = [s.temp_c for s in run]
    return Frame(
        gpu_uuid=first.gpu_uuid,
        mig_uuid=first.mig_uuid,
        gpu_model=first.gpu_model,
        start=first.ts,
        allocations=shares,
        sm_util=[s.sm_util for s in run],
        mem_util=[s.mem_util for s in run],
        mem_used=[s.mem_used for s in run],
        mem_total=first.mem_total,
        power_w=[s.power_w for s in run],
        energy_j=[s.energy_j for s in run],
        temp_c=None if all(t is None for t in temps) else temps,
        flags={i: tuple(s.flags) for i, s in enumerate(run) if s.flags},
    )


def frame_wire(f: Frame) -> dict[str, object]:
    """One frame as the v2 wire format writes it (the published schema's ``frames`` item)."""
    doc: dict[str, object] = {
        "gpu_uuid": f.gpu_uuid,
        "mig_uuid": f.mig_uuid,
        "gpu_model": f.gpu_model,
        "start": f.start,
        "allocations": [_share_wire(s) for s in f.allocations],
        "sm_util": _listed(f.sm_util),
        "mem_util": _listed(f.mem_util),
        "mem_used": _listed(f.mem_used),
        "mem_total": f.mem_total,
        "power_w": _listed(f.power_w),
        "energy_j": _listed(f.energy_j),
    }
    if f.temp_c is not None:
        doc["temp_c"] = _listed(f.temp_c)
    if f.flags:
        doc["flags"] = [{"index": i, "flags": list(v)} for i, v in sorted(f.flags.items())]
    return doc


def _listed(column: Sequence[Any]) -> list[Any]:
    """A column as a list: the frame's own list when it is one (a parsed or sliced frame's
    are; the document shares it, so callers only read it), else a copy."""
    return column if type(column) is list else list(column)


def _share_wire(s: Share) -> dict[str, object]:
    doc: dict[str, object] = {"tenant": s.tenant, "job": s.job, "share_milli": s.milli}
    if s.billing_class is not None:
        doc["billing_class"] = s.billing_class
    if s.sm_util is not None:
        doc["sm_util"] = list(s.sm_util)
    return doc


#: The ``schema_version`` of a record of frames.
FRAMES_SCHEMA_VERSION = 2


def encode_frames(
    node_id: str, agent_id: str, seq: int, frames: Sequence[Frame], gaps: Sequence[Gap]
) -> bytes:
    """The wire encoding of one v2 record: ``frames`` (each :func:`frame_wire`) and ``gaps``
    (as in v1), what the node agent spools and sends on the usage topic."""
    return orjson.dumps(
        {
            "schema_version": FRAMES_SCHEMA_VERSION,
            "node_id": node_id,
            "agent_id": agent_id,
            "seq": seq,
            "frames": [frame_wire(f) for f in frames],
            "gaps": [g.__dict__ for g in gaps],
        }
    )


def frame_slice(f: Frame, a: int, b: int) -> Frame:
    """The seconds ``start + a .. start + b - 1`` of a frame, as a frame of their own
    (``0 <= a < b <= n``): columns and allocations' per-second readings sliced, flags
    re-indexed."""
    return Frame(
        gpu_uuid=f.gpu_uuid,
        mig_uuid=f.mig_uuid,
        gpu_model=f.gpu_model,
        start=f.start + a,
        allocations=tuple(
            s if s.sm_util is None else replace(s, sm_util=tuple(s.sm_util[a:b]))
            for s in f.allocations
        ),
        sm_util=f.sm_util[a:b],
        mem_util=f.mem_util[a:b],
        mem_used=f.mem_used[a:b],
        mem_total=f.mem_total,
        power_w=f.power_w[a:b],
        energy_j=f.energy_j[a:b],
        temp_c=None if f.temp_c is None else f.temp_c[a:b],
        flags={i - a: v for i, v in f.flags.items() if a <= i < b},
    )
