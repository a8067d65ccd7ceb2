"""The NVML sampler on a shared GPU: every share from the allocation file on the device second,
and each share's SM utilization from NVML's per-process utilization (the real function name,
arguments, structure and errors of pynvml), or none where NVML does not report it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from agents.attribution import Attributor, write_allocation_file
from agents.nvml import NvmlSampler
from agents.sampler import SharesNeedV2Error
from schemas.frame import Share
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.pynvml import FakeGpu, FakeHandle, FakeNvml

TS = 1_718_000_000
UUID = "GPU-00000000-0000-0000-0000-000000000000"


class ProcessUtilNvml(FakeNvml):
    """The fake module plus ``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)``:
    the samples newer than ``lastSeenTimeStamp`` (µs), as real ``c_nvmlProcessUtilizationSample_t``
    structures; NVML_ERROR_NOT_FOUND when there is none; ``supported=False``: NotSupported."""

    def __init__(self, gpus: list[FakeGpu], *, supported: bool = True) -> None:
        super().__init__(gpus)
        self.supported = supported
        self.samples: list[tuple[int, int, int]] = []  # (pid, timestamp µs, smUtil %)
        self.asked_since: list[int] = []

    def nvmlDeviceGetProcessUtilization(
        self, handle: FakeHandle, timeStamp: int
    ) -> list[fake_pynvml.c_nvmlProcessUtilizationSample_t]:  # type: ignore[name-defined]
        self._device(handle, "nvmlDeviceGetProcessUtilization")
        self.asked_since.append(timeStamp)
        if not self.supported:
            raise fake_pynvml.NVMLError_NotSupported()
        newer = [s for s in self.samples if s[1] > timeStamp]
        if not newer:
            raise fake_pynvml.NVMLError_NotFound()
        out = []
        for pid, stamp, sm in newer:
            sample = fake_pynvml.c_nvmlProcessUtilizationSample_t()  # type: ignore[attr-defined]
            sample.pid, sample.timeStamp, sample.smUtil = pid, stamp, sm
            sample.memUtil = sample.encUtil = sample.decUtil = 0
            out.append(sample)
        return out


def add_process(proc: Path, pid: int, env: Mapping[str, str]) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


def sampler_with_shares(
    tmp_path: Path, *, supported: bool = True
) -> tuple[NvmlSampler, ProcessUtilNvml]:
    proc = tmp_path / "proc"
    add_process(proc, 100, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a"})
    add_process(proc, 101, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a"})
    add_process(proc, 200, {"GPUMETER_TENANT": "beta", "GPUMETER_JOB": "b"})
    add_process(proc, 300, {"PATH": "/bin"})  # nobody's: its utilization is no share's
    alloc = tmp_path / "alloc.json"
    write_allocation_file(
        alloc,
        [
            {"gpu_uuid": UUID, "tenant": "acme", "job": "a", "share_milli": 500},
            {"gpu_uuid": UUID, "tenant": "beta", "job": "b", "share_milli": 250},
        ],
    )
    fake = ProcessUtilNvml(
        [FakeGpu(uuid=UUID, sm_util=80, pids=[100, 101, 200, 300])], supported=supported
    )
    return NvmlSampler("node-1", Attributor(alloc, proc_root=proc), nvml=fake), fake


def test_each_share_gets_its_processes_utilization(tmp_path: Path) -> None:
    sampler, fake = sampler_with_shares(tmp_path)
    # pid 100 was sampled twice: its newest sample counts
    fake.samples = [(100, 10, 5), (100, 20, 30), (101, 15, 10), (200, 12, 25), (300, 12, 9)]
    (d,) = sampler.seconds(TS)
    assert d.allocations == (Share("acme", "a", 500), Share("beta", "b", 250))
    assert d.share_util == (40.0, 25.0)
    assert d.sm_util == 80.0
    # the next second asks only for samples newer than the newest seen, and none came
    (d,) = sampler.seconds(TS + 1)
    assert fake.asked_since[-1] == 20
    assert d.share_util == (0.0, 0.0)


def test_without_per_process_utilization_shares_carry_none(tmp_path: Path) -> None:
    sampler, fake = sampler_with_shares(tmp_path, supported=False)
    (d,) = sampler.seconds(TS)
    (d2,) = sampler.seconds(TS + 1)
    assert d.allocations == d2.allocations == (Share("acme", "a", 500), Share("beta", "b", 250))
    assert d.share_util is None and d2.share_util is None
    assert "nvml_error" not in d.flags  # optional reading: never flags the second
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 1  # NotSupported: asked once


def test_a_device_held_by_one_allocation_owns_all_its_processes(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    add_process(proc, 7, {"PATH": "/bin"})
    alloc = tmp_path / "alloc.json"
    write_allocation_file(alloc, [{"gpu_uuid": UUID, "tenant": "acme", "job": "whole"}])
    fake = ProcessUtilNvml([FakeGpu(uuid=UUID, pids=[7])])
    fake.samples = [(7, 5, 55)]
    sampler = NvmlSampler("n", Attributor(alloc, proc_root=proc), nvml=fake)
    (d,) = sampler.seconds(TS)
    assert d.allocations == (Share("acme", "whole", 1000),) and d.share_util == (55.0,)
    (s,) = sampler.sample(TS + 1)  # a whole allocation has a v1 form
    assert (s.tenant, s.job) == ("acme", "whole")


def test_a_shared_second_has_no_v1_sample(tmp_path: Path) -> None:
    sampler, _ = sampler_with_shares(tmp_path)
    with pytest.raises(SharesNeedV2Error, match="acme/a=500"):
        sampler.sample(TS)
