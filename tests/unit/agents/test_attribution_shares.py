"""Shares at the source: the allocation file's share_milli and several entries per device, the
process environment's GPUMETER_SHARE_MILLI (and HAMi-core's CUDA_DEVICE_SM_LIMIT), and the
Kubernetes fractional-GPU requests a hook turns into share_milli."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.allocation_file import share_milli_from_pod
from agents.attribution import (
    Allocation,
    AllocationFileError,
    Attributor,
    allocation_from_environ,
    parse_allocation_file,
    write_allocation_file,
)

GPU = "GPU-11111111-2222-3333-4444-555555555555"
MIG = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"gpu_uuid": GPU, "tenant": "acme", "job": "j1"}
    base.update(overrides)
    return base


def test_shares_of_one_gpu_are_all_attributed(tmp_path: Path, proc_root: Path) -> None:
    path = tmp_path / "alloc.json"
    write_allocation_file(
        path,
        [
            entry(share_milli=500),
            entry(tenant="beta", job="j2", share_milli=250, billing_class="spot"),
            entry(tenant="acme", job="j3", share_milli=250),
        ],
    )
    shares = Attributor(path, proc_root=proc_root).shares_for(GPU, None, [])
    assert shares == (
        Allocation("acme", "j1", None, 500),
        Allocation("beta", "j2", "spot", 250),
        Allocation("acme", "j3", None, 250),
    )


def test_whole_gpu_shares_cover_its_slices_and_future_ones_wait(
    tmp_path: Path, proc_root: Path
) -> None:
    path = tmp_path / "alloc.json"
    write_allocation_file(
        path, [entry(share_milli=400), entry(job="later", share_milli=600, since=1_700_000_100)]
    )
    attributor = Attributor(path, proc_root=proc_root)
    assert attributor.shares_for(GPU, MIG, [], at=1_700_000_099) == (
        Allocation("acme", "j1", None, 400),
    )
    assert [a.job for a in attributor.shares_for(GPU, None, [], at=1_700_000_100)] == [
        "j1",
        "later",
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([entry(share_milli=600), entry(job="b", share_milli=500)], r"allocations\[1\].*1100"),
        ([entry(share_milli=500), entry(share_milli=100)], r"allocations\[1\].*duplicates"),
        ([entry(share_milli=0)], r"allocations\[0\].*share_milli"),
        ([entry(share_milli=1001)], r"allocations\[0\].*share_milli"),
        ([entry(share_milli=True)], r"allocations\[0\].*share_milli"),
        ([entry(share_milli="500")], r"allocations\[0\].*share_milli"),
        ([entry(share_milli=2.5)], r"allocations\[0\].*share_milli"),
    ],
)
def test_bad_shares_are_file_errors_naming_the_entry(
    entries: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(AllocationFileError, match=message):
        parse_allocation_file(json.dumps({"allocations": entries}))


def test_shares_of_different_devices_do_not_add_up() -> None:
    entries = [entry(share_milli=800), entry(gpu_uuid="GPU-2", share_milli=800)]
    entries.append(entry(mig_uuid=MIG, share_milli=800))
    assert len(parse_allocation_file(json.dumps({"allocations": entries}))) == 3


def test_shares_above_1000_keep_the_last_good_content(
    tmp_path: Path, proc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alloc.json"
    write_allocation_file(path, [entry(share_milli=500)])
    attributor = Attributor(path, proc_root=proc_root)
    assert attributor.shares_for(GPU, None, []) == (Allocation("acme", "j1", None, 500),)
    write_allocation_file(path, [entry(share_milli=500), entry(job="b", share_milli=501)])
    with caplog.at_level(logging.ERROR, logger="agents.attribution"):
        assert attributor.shares_for(GPU, None, []) == (Allocation("acme", "j1", None, 500),)
    assert "allocations[1]" in caplog.text and "1001" in caplog.text


def test_process_environment_declares_a_share(
    proc_root: Path, add_process: Callable[..., None]
) -> None:
    add_process(10, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a", "GPUMETER_SHARE_MILLI": "250"})
    add_process(11, {"GPUMETER_TENANT": "beta", "GPUMETER_JOB": "b", "GPUMETER_SHARE_MILLI": "750"})
    add_process(12, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a", "GPUMETER_SHARE_MILLI": "250"})
    shares = Attributor(None, proc_root=proc_root).shares_for(GPU, None, [12, 11, 10])
    assert shares == (Allocation("acme", "a", None, 250), Allocation("beta", "b", None, 750))


def test_process_shares_that_do_not_fit_fall_back_to_the_lowest_pid(
    proc_root: Path, add_process: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    add_process(20, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a", "GPUMETER_SHARE_MILLI": "600"})
    add_process(21, {"GPUMETER_TENANT": "beta", "GPUMETER_JOB": "b", "GPUMETER_SHARE_MILLI": "600"})
    with caplog.at_level(logging.WARNING, logger="agents.attribution"):
        shares = Attributor(None, proc_root=proc_root).shares_for(GPU, None, [21, 20])
    assert shares == (Allocation("acme", "a", None, 600),)
    assert "disagree" in caplog.text


@pytest.mark.parametrize(
    ("env", "milli"),
    [
        ({"GPUMETER_SHARE_MILLI": "125"}, 125),
        ({"GPUMETER_SHARE_MILLI": "1000"}, 1000),
        ({"GPUMETER_SHARE_MILLI": "0"}, 1000),  # out of range: warned, whole GPU
        ({"GPUMETER_SHARE_MILLI": "half"}, 1000),
        ({"CUDA_DEVICE_SM_LIMIT": "30"}, 300),  # HAMi-core: percent of the GPU's SMs
        ({"CUDA_DEVICE_SM_LIMIT": "0"}, 1000),  # HAMi: no limit
        ({"CUDA_DEVICE_SM_LIMIT": "30", "GPUMETER_SHARE_MILLI": "500"}, 500),
        ({}, 1000),
    ],
)
def test_share_from_the_environment(env: dict[str, str], milli: int) -> None:
    got = allocation_from_environ({"SLURM_JOB_ACCOUNT": "phys", "SLURM_JOB_ID": "7", **env})
    assert got == Allocation("phys", "7", None, milli)


def test_single_owner_of_a_shared_gpu_is_its_largest_share(tmp_path: Path, proc_root: Path) -> None:
    path = tmp_path / "alloc.json"
    write_allocation_file(path, [entry(share_milli=300), entry(job="big", share_milli=700)])
    got = Attributor(path, proc_root=proc_root).allocation_for(GPU, None, [])
    assert got == Allocation("acme", "big", None, 700)


@pytest.mark.parametrize(
    ("annotations", "limits", "milli"),
    [
        ({"gpu-fraction": "0.5"}, None, 500),  # Run:ai
        ({"gpu-fraction": "0.25"}, None, 250),
        ({"gpu-fraction": "1"}, None, 1000),
        ({"gpu-fraction": "0.0004"}, None, 1),  # never below one milli-GPU
        ({}, {"nvidia.com/gpucores": "30"}, 300),  # HAMi
        ({}, {"nvidia.com/gpucores": "100"}, None),
        ({}, {"nvidia.com/gpucores": "0"}, None),
        ({}, {"nvidia.com/gpu": "1"}, None),  # a whole GPU
    ],
)
def test_kubernetes_fractional_requests(
    annotations: dict[str, str], limits: dict[str, str] | None, milli: int | None
) -> None:
    assert share_milli_from_pod(annotations, limits) == milli


@pytest.mark.parametrize(
    ("annotations", "limits"),
    [
        ({"gpu-fraction": "1.5"}, None),
        ({"gpu-fraction": "0"}, None),
        ({"gpu-fraction": "half"}, None),
        ({}, {"nvidia.com/gpucores": "150"}),
        ({}, {"nvidia.com/gpucores": "-5"}),
    ],
)
def test_bad_kubernetes_fractional_requests_are_refused(
    annotations: dict[str, str], limits: dict[str, str] | None
) -> None:
    with pytest.raises(AllocationFileError):
        share_milli_from_pod(annotations, limits)
