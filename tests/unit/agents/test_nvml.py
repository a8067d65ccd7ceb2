"""NvmlSampler against the fake pynvml module: enumeration, units, energy, failures, MIG."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.attribution import Attributor, write_allocation_file
from agents.nvml import NvmlSampler, NvmlUnavailableError
from agents.sampler import GpuInfo, Sampler
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.pynvml import FakeMig, FakeNvml
from tests.unit.agents.nvml_fleet import MIB, TS, by_uuid, gpu, make_sampler

__all__ = ["make_sampler"]  # the fixture, used by name


# --- enumeration ---------------------------------------------------------------------------


def test_enumerates_gpus_in_index_order(make_sampler: Callable[..., Any]) -> None:
    sampler, _ = make_sampler(
        [gpu(0, mem_total=80 * 1024**3), gpu(1, name="NVIDIA A100-SXM4-40GB")]
    )
    assert isinstance(sampler, Sampler)
    assert list(sampler.gpus()) == [
        GpuInfo(gpu(0).uuid, "NVIDIA H100 80GB HBM3", 0, None, 80 * 1024**3),
        GpuInfo(gpu(1).uuid, "NVIDIA A100-SXM4-40GB", 1, None, 80 * 1024**3),
    ]


def test_mig_slices_are_sampled_instead_of_their_parent(make_sampler: Callable[..., Any]) -> None:
    # given GPU 0 in MIG mode with slices in slots 0 and 2 (slot 1 empty), and a plain GPU 1
    parent = gpu(
        0,
        mig_capable=True,
        mig_mode=fake_pynvml.NVML_DEVICE_MIG_ENABLE,
        migs=[
            FakeMig("MIG-a", name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", mem_total=10 * 1024**3),
            None,
            FakeMig("MIG-b", mem_total=20 * 1024**3, pids=[]),
        ],
    )
    sampler, _ = make_sampler([parent, gpu(1, mig_capable=True)])
    # when enumerated and sampled
    infos = list(sampler.gpus())
    samples = sampler.sample(TS)
    # then each slice is its own device under its parent's uuid; the parent is not sampled
    assert [(i.uuid, i.mig_uuid, i.model, i.memory_total) for i in infos] == [
        (parent.uuid, "MIG-a", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", 10 * 1024**3),
        (parent.uuid, "MIG-b", "NVIDIA H100 80GB HBM3", 20 * 1024**3),
        (gpu(1).uuid, None, "NVIDIA H100 80GB HBM3", 80 * 1024**3),
    ]
    assert [(s.gpu_uuid, s.mig_uuid) for s in samples] == [(i.uuid, i.mig_uuid) for i in infos]


def test_mig_enabled_gpu_without_slices_is_sampled_whole(make_sampler: Callable[..., Any]) -> None:
    sampler, _ = make_sampler(
        [gpu(0, mig_capable=True, mig_mode=fake_pynvml.NVML_DEVICE_MIG_ENABLE, migs=[])]
    )
    assert [(i.uuid, i.mig_uuid) for i in sampler.gpus()] == [(gpu(0).uuid, None)]


def test_mig_slice_unsupported_readings_are_zero_and_flagged(
    make_sampler: Callable[..., Any],
) -> None:
    # given a slice that, like real MIG devices, answers NotSupported for utilization/power/temp
    parent = gpu(
        0,
        mig_capable=True,
        mig_mode=fake_pynvml.NVML_DEVICE_MIG_ENABLE,
        migs=[FakeMig("MIG-a", mem_used=3 * MIB, mem_total=10 * 1024**3)],
    )
    sampler, _ = make_sampler([parent])
    # when sampled
    (s,) = sampler.sample(TS)
    # then memory is real, the rest is zero/null and flagged
    assert (s.sm_util, s.mem_util, s.power_w, s.energy_j, s.temp_c) == (0.0, 0.0, 0.0, 0.0, None)
    assert (s.mem_used, s.mem_total) == (3 * MIB, 10 * 1024**3)
    assert set(s.flags) == {"nvml_error", "energy_estimated"}


def test_rescan_picks_up_new_slices_and_keeps_energy_state(
    make_sampler: Callable[..., Any],
) -> None:
    fleet = [gpu(0, mig_capable=True), gpu(1, power_mw=100_000)]
    sampler, fake = make_sampler(fleet, rescan_interval_s=2)
    sampler.sample(TS)
    # when MIG is enabled on GPU 0 with one slice, and the rescan interval passes
    fleet[0].mig_mode = fake_pynvml.NVML_DEVICE_MIG_ENABLE
    fleet[0].migs = [FakeMig("MIG-new")]
    fake.advance(1)
    samples = by_uuid(sampler.sample(TS + 1))
    # then the slice is sampled and GPU 1's energy counter delta survived the rescan
    assert set(samples) == {"MIG-new", fleet[1].uuid}
    assert samples[fleet[1].uuid].energy_j == pytest.approx(100.0)
    assert "energy_estimated" not in samples[fleet[1].uuid].flags


# --- field mapping and units -------------------------------------------------------------------


def test_fields_map_with_unit_conversion(make_sampler: Callable[..., Any]) -> None:
    # given a busy GPU drawing 312.5 W
    sampler, fake = make_sampler(
        [
            gpu(
                0,
                sm_util=87,
                mem_util=41,
                mem_used=12_345 * MIB,
                mem_total=81_559 * MIB,
                power_mw=312_500,
                temp_c=64,
                energy_mj=5_000_000,
            )
        ]
    )
    sampler.sample(TS)
    fake.advance(1)  # the counter moves by 312_500 mJ
    # when the next second is sampled
    (s,) = sampler.sample(TS + 1)
    # then every field is mapped, mW -> W and mJ -> J
    assert (s.gpu_uuid, s.mig_uuid, s.gpu_model, s.ts) == (
        gpu(0).uuid,
        None,
        "NVIDIA H100 80GB HBM3",
        TS + 1,
    )
    assert (s.sm_util, s.mem_util) == (87.0, 41.0)
    assert (s.mem_used, s.mem_total) == (12_345 * MIB, 81_559 * MIB)
    assert s.power_w == 312.5
    assert s.energy_j == pytest.approx(312.5)
    assert s.temp_c == 64.0
    assert s.flags == ()
    assert (s.tenant, s.job, s.billing_class) == (None, None, None)  # idle, not dropped


def test_first_second_energy_is_estimated_from_power(make_sampler: Callable[..., Any]) -> None:
    sampler, _ = make_sampler([gpu(0, power_mw=200_000)])
    (s,) = sampler.sample(TS)
    assert s.energy_j == 200.0 and s.flags == ("energy_estimated",)


def test_no_energy_counter_estimates_from_power_and_stops_asking(
    make_sampler: Callable[..., Any],
) -> None:
    # given a GPU without a total-energy counter (NotSupported)
    sampler, fake = make_sampler([gpu(0, power_mw=150_000, energy_mj=None)])
    # when sampled for three seconds
    samples = [sampler.sample(TS + i)[0] for i in range(3)]
    # then energy is power x 1 s, flagged, and the counter was asked once only
    assert [(s.energy_j, s.flags) for s in samples] == [(150.0, ("energy_estimated",))] * 3
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_counter_going_backwards_is_flagged_reset(make_sampler: Callable[..., Any]) -> None:
    fleet = [gpu(0, power_mw=250_000, energy_mj=9_000_000)]
    sampler, _ = make_sampler(fleet)
    sampler.sample(TS)
    # when the driver reloads and the counter restarts near zero
    fleet[0].energy_mj = 1_000
    (s,) = sampler.sample(TS + 1)
    # then the energy is estimated from power and the reset is flagged
    assert s.energy_j == 250.0
    assert set(s.flags) == {"counter_reset", "energy_estimated"}
    # and the second after that is measured again from the new counter
    fleet[0].energy_mj += 250_000
    assert sampler.sample(TS + 2)[0].flags == ()


def test_energy_over_a_gap_is_spread_and_flagged(make_sampler: Callable[..., Any]) -> None:
    sampler, fake = make_sampler([gpu(0, power_mw=100_000)])
    sampler.sample(TS)
    fake.advance(3)
    (s,) = sampler.sample(TS + 3)  # the agent stalled for two seconds
    assert s.energy_j == pytest.approx(100.0) and s.flags == ("energy_estimated",)


def test_energy_inconsistent_with_power_falls_back_to_estimate(
    make_sampler: Callable[..., Any],
) -> None:
    fleet = [gpu(0, power_mw=100_000)]
    sampler, _ = make_sampler(fleet)
    sampler.sample(TS)
    fleet[0].energy_mj += 50_000_000  # 50 kJ in one second: a glitch, not a GPU
    (s,) = sampler.sample(TS + 1)
    assert s.energy_j == 100.0 and "energy_estimated" in s.flags


# --- failures ----------------------------------------------------------------------------------


def test_one_failing_read_zeroes_its_field_and_spares_the_others(
    make_sampler: Callable[..., Any],
) -> None:
    # given GPU 0 whose power read fails
    fleet = [gpu(0, sm_util=50, power_mw=200_000), gpu(1, sm_util=60, power_mw=210_000)]
    fleet[0].failures["nvmlDeviceGetPowerUsage"] = fake_pynvml.NVMLError_Unknown
    sampler, _ = make_sampler(fleet)
    # when sampled
    samples = by_uuid(sampler.sample(TS))
    # then only that field of that GPU is zero and flagged
    bad, good = samples[fleet[0].uuid], samples[fleet[1].uuid]
    assert bad.power_w == 0.0 and bad.sm_util == 50.0 and "nvml_error" in bad.flags
    assert good.power_w == 210.0 and "nvml_error" not in good.flags


def test_lost_gpu_keeps_producing_flagged_samples_and_others_go_on(
    make_sampler: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # given two allocated GPUs, one of which falls off the bus after the first second
    fleet = [gpu(0, sm_util=90, power_mw=300_000, mem_used=MIB), gpu(1, sm_util=70)]
    alloc = tmp_path / "allocations.json"
    write_allocation_file(
        alloc, [{"gpu_uuid": g.uuid, "tenant": "acme", "job": "j"} for g in fleet]
    )
    sampler, fake = make_sampler(fleet, Attributor(alloc, proc_root=tmp_path))
    sampler.sample(TS)
    fleet[0].lost = True
    fake.advance(1)
    # when the next seconds are sampled
    for t in (TS + 1, TS + 2):
        samples = by_uuid(sampler.sample(t))
        # then the lost GPU still has its second, zeroed, flagged, still allocated
        lost = samples[fleet[0].uuid]
        assert (lost.sm_util, lost.power_w, lost.energy_j, lost.mem_used) == (0.0, 0.0, 0.0, 0)
        assert "nvml_error" in lost.flags and lost.tenant == "acme"
        # and the other GPU is sampled normally
        assert samples[fleet[1].uuid].sm_util == 70.0
        assert samples[fleet[1].uuid].flags == ()
        fake.advance(1)


def test_gpu_that_cannot_be_identified_is_skipped_not_fatal(
    make_sampler: Callable[..., Any],
) -> None:
    fleet = [gpu(0), gpu(1)]
    fleet[0].failures["nvmlDeviceGetUUID"] = fake_pynvml.NVMLError_GpuIsLost
    sampler, _ = make_sampler(fleet)
    assert [i.uuid for i in sampler.gpus()] == [fleet[1].uuid]


def test_no_driver_raises_a_clear_error() -> None:
    with pytest.raises(NvmlUnavailableError, match="driver"):
        NvmlSampler("n", Attributor(None), nvml=FakeNvml([], driver_loaded=False))


def test_close_shuts_nvml_down_once(make_sampler: Callable[..., Any]) -> None:
    sampler, fake = make_sampler([gpu(0)])
    sampler.close()
    sampler.close()
    assert fake.calls["nvmlShutdown"] == 1 and not fake.initialized


def test_module_can_be_injected_through_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the fake installed as the pynvml module (how a real import would find it)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([gpu(0)]))
    # when the sampler is built without an explicit module, then it uses it
    with NvmlSampler("n", Attributor(None)) as sampler:
        assert len(sampler.sample(TS)) == 1


# --- attribution -------------------------------------------------------------------------------


def test_processes_on_the_gpu_attribute_the_second(
    make_sampler: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # given a process on GPU 1 that declares its tenant and job
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "environ").write_bytes(
        b"GPUMETER_TENANT=acme\0GPUMETER_JOB=train-7\0GPUMETER_BILLING_CLASS=reserved\0"
    )
    fleet = [gpu(0), gpu(1, pids=[4242])]
    sampler, _ = make_sampler(fleet, Attributor(None, proc_root=proc))
    # when sampled
    samples = by_uuid(sampler.sample(TS))
    # then GPU 1 is attributed and GPU 0 is idle
    s = samples[fleet[1].uuid]
    assert (s.tenant, s.job, s.billing_class) == ("acme", "train-7", "reserved")
    assert not samples[fleet[0].uuid].allocated


def test_probe_imports() -> None:
    from agents import nvml_probe

    assert callable(nvml_probe.main)
