"""The simulated fleet with shares: whole GPUs, shared GPUs (fractional slices) and a GPU in MIG
mode on every node; its ground truth (counted from the schedule) equals what its device seconds
say, second by second, in GPU-seconds held and in milli-GPU-seconds."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.sampler import GroundTruth, SharesNeedV2Error, TruthKey
from agents.simulator import MIG_LAYOUT, SimulatedFleet

WHOLE = 1000


def shared_fleet(**overrides: object) -> SimulatedFleet:
    kwargs: dict[str, object] = {
        "nodes": 2,
        "gpus_per_node": 4,
        "duration_s": 7200,
        "seed": 5,
        "shares": True,
    }
    kwargs.update(overrides)
    return SimulatedFleet(**kwargs)  # type: ignore[arg-type]


def counted(fleet: SimulatedFleet, start: int, end: int) -> GroundTruth:
    """Ground truth by brute force: every device second, share by share."""
    truth = GroundTruth()
    for sampler in fleet.samplers():
        for ts in range(start, end):
            for d in sampler.seconds(ts):
                used = 0
                for s in d.allocations:
                    key = TruthKey(s.tenant, s.job, d.gpu_model, ts - ts % 3600)
                    truth.allocated[key] += 1
                    truth.allocated_milli[key] += s.milli
                    used += s.milli
                if used < WHOLE:
                    truth.idle[d.gpu_uuid] += 1
                    truth.idle_milli_by_device[d.gpu_uuid] += WHOLE - used
    return truth


def test_ground_truth_equals_counting_device_seconds() -> None:
    fleet = shared_fleet()
    truth = fleet.ground_truth()
    brute = counted(fleet, fleet.start, fleet.end)
    assert truth.allocated == brute.allocated
    assert truth.allocated_milli == brute.allocated_milli
    assert truth.idle == brute.idle
    assert truth.idle_milli_by_device == brute.idle_milli_by_device
    # allocated + idle = observed, in milli-GPU-seconds: 1000 per device second
    devices = sum(len(s.gpus()) for s in fleet.samplers())
    assert truth.allocated_milli_seconds + truth.idle_milli == devices * 7200 * WHOLE


def test_ground_truth_of_a_sub_window() -> None:
    fleet = shared_fleet(jobs_per_hour=12.0)
    lo, hi = fleet.start + 1234, fleet.start + 4321
    truth, brute = fleet.ground_truth(lo, hi), counted(fleet, lo, hi)
    assert truth.allocated_milli == brute.allocated_milli
    assert truth.idle_milli_by_device == brute.idle_milli_by_device
    assert truth.idle == brute.idle


def test_every_node_has_whole_shared_and_mig_devices() -> None:
    fleet = shared_fleet(nodes=3, duration_s=6 * 3600)
    milli_seen: Counter[int] = Counter()
    for sampler in fleet.samplers():
        gpus = sampler.gpus()
        migs = [g for g in gpus if g.mig_uuid is not None]
        # the MIG GPU is metered through its slices only, all under one parent uuid
        assert len(migs) == len(MIG_LAYOUT) and len({g.uuid for g in migs}) == 1
        assert all(" MIG " in g.model for g in migs)
        assert migs[0].uuid not in {g.uuid for g in gpus if g.mig_uuid is None}
        for ts in range(fleet.start, fleet.end, 97):
            for d in sampler.seconds(ts):
                assert sum(s.milli for s in d.allocations) <= WHOLE
                assert len({(s.tenant, s.job) for s in d.allocations}) == len(d.allocations)
                for s in d.allocations:
                    milli_seen[s.milli] += 1
                if d.share_util is not None:
                    assert len(d.share_util) == len(d.allocations)
                    assert d.sm_util == pytest.approx(min(100.0, sum(d.share_util)), abs=0.11)
    assert {250, 500, 750, 1000} <= set(milli_seen)


def test_a_shared_second_has_no_v1_sample() -> None:
    fleet = shared_fleet()
    with pytest.raises(SharesNeedV2Error):
        for sampler in fleet.samplers():
            for ts in range(fleet.start, fleet.end, 60):
                sampler.sample(ts)


def test_without_shares_the_fleet_is_what_it_was() -> None:
    # the default fleet: whole GPUs only, every v1 sample equal to its device second
    fleet = SimulatedFleet(nodes=1, gpus_per_node=4, duration_s=3600)
    (sampler,) = fleet.samplers()
    for ts in range(fleet.start, fleet.end, 31):
        for d, s in zip(sampler.seconds(ts), sampler.sample(ts), strict=True):
            assert d.share_util is None
            assert (s.tenant, s.job) == (
                (d.allocations[0].tenant, d.allocations[0].job) if d.allocations else (None, None)
            )
            assert (s.sm_util, s.power_w, s.energy_j) == (d.sm_util, d.power_w, d.energy_j)


def test_shares_on_nodes_too_small_for_them_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 GPUs"):
        SimulatedFleet(nodes=1, gpus_per_node=2, shares=True)
