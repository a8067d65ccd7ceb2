"""v1 samples for the aggregator's tests: a sample maker over a few GPUs, MIG slices and
allocations, and the aggregator fed samples through the worker's own v1 translation
(``frames_from_samples``: a tenant's sample is a whole-GPU share, an idle one an idle device)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.frame import frames_from_samples
from schemas.usage import GpuSecond
from streams.aggregate import AddResult, GpuGroupKey, MinuteRow
from streams.aggregate import Aggregator as FrameAggregator


class Aggregator(FrameAggregator):
    """The aggregator fed v1 samples, translated as the worker translates v1 records."""

    def add(self, node_id: str, samples: Iterable[GpuSecond]) -> AddResult:  # type: ignore[override]
        return super().add(node_id, frames_from_samples(samples))

    def missing(self, samples: Iterable[GpuSecond]) -> set[GpuGroupKey]:  # type: ignore[override]
        return super().missing(frames_from_samples(samples))


M0 = 1_699_999_980  # a UTC minute boundary
assert M0 % 60 == 0
IDLE = ("__idle__", "")
GPUS = [("GPU-A", None), ("GPU-B", "MIG-1"), ("GPU-B", "MIG-2")]
ALLOCATIONS: list[tuple[str, str] | None] = [
    ("acme", "train"),
    ("acme", "eval"),
    ("zeta", "train"),
    None,
]
BILLING = {("acme", "train"): "on_demand", ("acme", "eval"): "spot", ("zeta", "train"): "reserved"}

RowKey = tuple[int, str, str, str, str]  # (minute, gpu, mig, tenant, job)


def make_sample(
    gpu: str,
    mig: str | None,
    ts: int,
    alloc: tuple[str, str] | None,
    *,
    sm_util: float = 50.0,
    mem_util: float = 20.0,
    energy_j: float = 300.0,
    mem_used: int = 1000,
) -> GpuSecond:
    tenant, job = alloc if alloc else (None, None)
    return GpuSecond.unchecked(
        {
            "gpu_uuid": gpu,
            "mig_uuid": mig,
            "gpu_model": "H100",
            "ts": ts,
            "tenant": tenant,
            "job": job,
            "billing_class": BILLING.get(alloc) if alloc else None,  # type: ignore[arg-type]
            "sm_util": sm_util,
            "mem_util": mem_util,
            "mem_used": mem_used,
            "mem_total": 10**6,
            "power_w": 300.0,
            "energy_j": energy_j,
            "temp_c": 50.0,
            "flags": (),
        }
    )


def key_of(row: MinuteRow) -> RowKey:
    return (row.minute, row.gpu_uuid, row.mig_uuid, row.tenant, row.job)
