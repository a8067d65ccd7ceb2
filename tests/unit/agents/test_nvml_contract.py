"""Every sample the NVML sampler produces satisfies the contract, whatever NVML answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.usage import GpuSecond
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.pynvml import FakeGpu
from tests.unit.agents.nvml_fleet import TS, gpu, make_sampler

__all__ = ["make_sampler"]  # the fixture, used by name

# --- the contract ------------------------------------------------------------------------------

reading = st.one_of(st.none(), st.integers(0, 100))
failure = st.sampled_from(
    [
        None,
        fake_pynvml.NVMLError_Unknown,
        fake_pynvml.NVMLError_NotSupported,
        fake_pynvml.NVMLError_GpuIsLost,
    ]
)
FUNCTIONS = [
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetComputeRunningProcesses",
]


@st.composite
def fake_gpus(draw: st.DrawFn) -> list[FakeGpu]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        total = draw(st.integers(0, 200 * 1024**3))
        g = gpu(
            i,
            sm_util=draw(reading),
            mem_util=draw(reading),
            mem_total=total,
            mem_used=draw(st.integers(0, total)),
            power_mw=draw(st.one_of(st.none(), st.integers(0, 3_000_000))),
            energy_mj=draw(st.one_of(st.none(), st.integers(0, 2**40))),
            temp_c=draw(st.one_of(st.none(), st.integers(-50, 200))),
            lost=draw(st.booleans()),
        )
        g.failures = {fn: f for fn in FUNCTIONS if (f := draw(failure)) is not None}
        out.append(g)
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fleet=fake_gpus(), steps=st.lists(st.integers(-5_000_000, 5_000_000), min_size=1, max_size=4)
)
def test_every_sample_satisfies_the_contract(
    make_sampler: Callable[..., Any], fleet: list[FakeGpu], steps: list[int]
) -> None:
    # given any mix of readings, unsupported calls and failures
    sampler, _ = make_sampler(fleet)
    for t, step in enumerate(steps):
        # when sampled, with counters moving arbitrarily (even backwards)
        samples = sampler.sample(TS + t)
        # then there is one valid sample per device, every second
        assert len(samples) == len(sampler.gpus())
        for s in samples:
            assert GpuSecond.model_validate(s.model_dump()) == s
        for g in fleet:
            if g.energy_mj is not None:
                g.energy_mj = max(g.energy_mj + step, 0)
