"""Attribution: the allocation file first (the scheduler is authoritative), then process env,
else idle."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.attribution import (
    Allocation,
    AllocationFileError,
    Attributor,
    allocation_from_environ,
    parse_allocation_file,
    read_environ,
    write_allocation_file,
)

GPU = "GPU-11111111-2222-3333-4444-555555555555"
MIG = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def alloc_file(tmp_path: Path) -> Path:
    return tmp_path / "allocations.json"


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "gpu_uuid": GPU,
        "mig_uuid": None,
        "tenant": "acme",
        "job": "j1",
        "billing_class": "on_demand",
        "since": None,
    }
    base.update(overrides)
    return base


def rewrite(path: Path, allocations: list[dict[str, Any]] | str) -> None:
    """Write like a prolog (atomic rename) and make sure the stat identity changes."""
    if isinstance(allocations, str):
        tmp = path.with_name("x.tmp")
        tmp.write_text(allocations)
        os.replace(tmp, path)
    else:
        write_allocation_file(path, allocations)


# --- the allocation file ---------------------------------------------------------------------


def test_allocation_file_entry_attributes_the_gpu(alloc_file: Path, proc_root: Path) -> None:
    # given a prolog-written allocation of the GPU
    write_allocation_file(alloc_file, [entry()])
    attributor = Attributor(alloc_file, proc_root=proc_root)
    # when asked about that GPU with no processes on it
    got = attributor.allocation_for(GPU, None, [])
    # then the scheduler's allocation is returned, billing class included
    assert got == Allocation("acme", "j1", "on_demand")
    assert attributor.allocation_for("GPU-other", None, []) is None


def test_whole_gpu_entry_covers_its_mig_slices_but_a_slice_entry_wins(
    alloc_file: Path, proc_root: Path
) -> None:
    write_allocation_file(
        alloc_file, [entry(), entry(mig_uuid=MIG, tenant="beta", job="j2", billing_class=None)]
    )
    attributor = Attributor(alloc_file, proc_root=proc_root)
    assert attributor.allocation_for(GPU, MIG, []) == Allocation("beta", "j2", None)
    assert attributor.allocation_for(GPU, "MIG-other", []) == Allocation("acme", "j1", "on_demand")


def test_allocation_file_wins_over_process_env(
    alloc_file: Path, proc_root: Path, add_process: Callable[..., None]
) -> None:
    # given the file says acme and the process says someone else
    write_allocation_file(alloc_file, [entry()])
    add_process(100, {"GPUMETER_TENANT": "intruder", "GPUMETER_JOB": "x"})
    # when attributed, then the scheduler is authoritative
    got = Attributor(alloc_file, proc_root=proc_root).allocation_for(GPU, None, [100])
    assert got is not None and got.tenant == "acme"


def test_entry_with_future_since_applies_only_from_then(alloc_file: Path, proc_root: Path) -> None:
    write_allocation_file(alloc_file, [entry(since=1_700_000_100)])
    attributor = Attributor(alloc_file, proc_root=proc_root)
    assert attributor.allocation_for(GPU, None, [], at=1_700_000_099) is None
    assert attributor.allocation_for(GPU, None, [], at=1_700_000_100) is not None


def test_file_is_reread_when_it_changes(alloc_file: Path, proc_root: Path) -> None:
    write_allocation_file(alloc_file, [entry()])
    attributor = Attributor(alloc_file, proc_root=proc_root)
    assert attributor.allocation_for(GPU, None, []) is not None
    # when the epilog removes the allocation
    write_allocation_file(alloc_file, [])
    # then the GPU is idle from the next question on
    assert attributor.allocation_for(GPU, None, []) is None


def test_missing_file_means_no_allocations(alloc_file: Path, proc_root: Path) -> None:
    assert Attributor(alloc_file, proc_root=proc_root).allocation_for(GPU, None, []) is None


def test_malformed_file_keeps_last_good_content_and_names_the_entry(
    alloc_file: Path, proc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a good file that was loaded
    write_allocation_file(alloc_file, [entry()])
    attributor = Attributor(alloc_file, proc_root=proc_root)
    assert attributor.allocation_for(GPU, None, []) is not None
    # when the prolog writes a file whose second entry is bad
    rewrite(alloc_file, [entry(gpu_uuid="GPU-b"), entry(gpu_uuid="GPU-c", billing_class="free")])
    with caplog.at_level(logging.ERROR, logger="agents.attribution"):
        got = attributor.allocation_for(GPU, None, [])
        attributor.allocation_for(GPU, None, [])  # asked again: reported once, not every second
    # then the last good content still answers, and one error names the entry
    assert got == Allocation("acme", "j1", "on_demand")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "allocations[1]" in errors[0] and "GPU-c" in errors[0] and "free" in errors[0]


def test_unparseable_json_keeps_last_good_content(
    alloc_file: Path, proc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_allocation_file(alloc_file, [entry()])
    attributor = Attributor(alloc_file, proc_root=proc_root)
    attributor.allocation_for(GPU, None, [])
    rewrite(alloc_file, '{"allocations": [')
    with caplog.at_level(logging.ERROR, logger="agents.attribution"):
        assert attributor.allocation_for(GPU, None, []) is not None
    assert "not valid JSON" in caplog.text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry(tenant=""), "tenant"),
        (entry(job=None), "job"),
        (entry(tenat="typo"), "unknown keys"),
        (entry(since="yesterday"), "since"),
        (entry(since=True), "since"),
        (entry(tenant="a\nb"), "tenant"),
        ("not an object", "expected an object"),
    ],
)
def test_parse_rejects_bad_entries_naming_them(bad: Any, message: str) -> None:
    import json

    with pytest.raises(AllocationFileError, match=r"allocations\[1\]") as err:
        parse_allocation_file(json.dumps({"allocations": [entry(gpu_uuid="GPU-ok"), bad]}))
    assert message in str(err.value)


def test_parse_rejects_two_whole_allocations_of_one_gpu() -> None:
    # contract v2: several entries on one device are shares; two whole GPUs sum above 1000
    import json

    with pytest.raises(AllocationFileError, match=r"allocations\[1\].*sum to 2000 milli-GPU"):
        parse_allocation_file(json.dumps({"allocations": [entry(), entry(tenant="other")]}))


# --- process environment -------------------------------------------------------------------


def test_gpumeter_env_attributes_with_billing_class(
    proc_root: Path, add_process: Callable[..., None]
) -> None:
    add_process(
        42,
        {
            "PATH": "/bin",
            "GPUMETER_TENANT": "acme",
            "GPUMETER_JOB": "train",
            "GPUMETER_BILLING_CLASS": "spot",
        },
    )
    got = Attributor(None, proc_root=proc_root).allocation_for(GPU, None, [42])
    assert got == Allocation("acme", "train", "spot")


def test_slurm_env_attributes_account_and_job_id(
    proc_root: Path, add_process: Callable[..., None]
) -> None:
    add_process(42, {"SLURM_JOB_ACCOUNT": "physics", "SLURM_JOB_ID": "918273"})
    got = Attributor(None, proc_root=proc_root).allocation_for(GPU, None, [42])
    assert got == Allocation("physics", "918273", None)


def test_gpumeter_vars_take_precedence_over_slurm_in_one_process() -> None:
    env = {
        "SLURM_JOB_ACCOUNT": "physics",
        "SLURM_JOB_ID": "1",
        "GPUMETER_TENANT": "acme",
        "GPUMETER_JOB": "j",
    }
    assert allocation_from_environ(env) == Allocation("acme", "j", None)


def test_unknown_billing_class_in_env_falls_back_to_contract_default() -> None:
    env = {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "j", "GPUMETER_BILLING_CLASS": "gold"}
    assert allocation_from_environ(env) == Allocation("acme", "j", None)


@pytest.mark.parametrize("tenant", ["", "x" * 129, "bad\x01value"])
def test_env_values_the_contract_would_reject_are_ignored(tenant: str) -> None:
    assert allocation_from_environ({"GPUMETER_TENANT": tenant, "GPUMETER_JOB": "j"}) is None


def test_vanished_and_unreadable_processes_are_skipped(
    proc_root: Path, add_process: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given pid 5 vanished, pid 6 is another user's (permission denied), pid 9 is readable
    add_process(6, {"GPUMETER_TENANT": "secret", "GPUMETER_JOB": "x"})
    add_process(9, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "j"})
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.parent.name == "6":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    # when the GPU's processes are attributed, then the readable one answers
    got = Attributor(None, proc_root=proc_root).allocation_for(GPU, None, [5, 6, 9])
    assert got == Allocation("acme", "j", None)
    assert read_environ(proc_root, 5) is None and read_environ(proc_root, 6) is None


def test_disagreeing_processes_pick_the_lowest_pid_with_an_allocation(
    proc_root: Path, add_process: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    add_process(7, {"PATH": "/bin"})  # no allocation: does not count
    add_process(12, {"GPUMETER_TENANT": "beta", "GPUMETER_JOB": "b"})
    add_process(30, {"GPUMETER_TENANT": "acme", "GPUMETER_JOB": "a"})
    attributor = Attributor(None, proc_root=proc_root)
    with caplog.at_level(logging.WARNING, logger="agents.attribution"):
        first = attributor.allocation_for(GPU, None, [30, 7, 12])
        second = attributor.allocation_for(GPU, None, [12, 30, 7])
    assert first == second == Allocation("beta", "b", None)
    assert caplog.text.count("disagree") == 1


def test_unknown_gpu_is_idle(proc_root: Path, add_process: Callable[..., None]) -> None:
    add_process(3, {"HOME": "/root"})
    assert Attributor(None, proc_root=proc_root).allocation_for(GPU, None, [3, 4]) is None
