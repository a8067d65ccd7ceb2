"""A fake NVML fleet for the sampler tests: GPUs of the fake ``pynvml`` and a sampler over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.attribution import Attributor
from agents.nvml import NvmlSampler
from schemas.usage import GpuSecond
from tests.fakes.pynvml import FakeGpu, FakeNvml

TS = 1_718_000_000  # 2024-06-10, a plausible second for the contract
MIB = 1024**2


def gpu(i: int, **overrides: Any) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000", **overrides)


@pytest.fixture
def make_sampler(tmp_path: Path) -> Callable[..., tuple[NvmlSampler, FakeNvml]]:
    """``make_sampler(gpus, attributor=...)``: a sampler over a fake fleet, no allocation file."""

    def make(
        gpus: list[FakeGpu], attributor: Attributor | None = None, **kwargs: Any
    ) -> tuple[NvmlSampler, FakeNvml]:
        fake = FakeNvml(gpus)
        attributor = attributor or Attributor(None, proc_root=tmp_path / "no-proc")
        return NvmlSampler("node-1", attributor, nvml=fake, **kwargs), fake

    return make


def by_uuid(samples: list[GpuSecond]) -> dict[str, GpuSecond]:
    return {s.mig_uuid or s.gpu_uuid: s for s in samples}
