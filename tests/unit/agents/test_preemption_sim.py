"""Internal demand in the simulator: research jobs preempt spot allocations on whole GPUs;
each preemption's ground truth agrees with the schedule, counted here second by second; the
rest of the seed's schedule is unchanged."""

from __future__ import annotations

import pytest

from agents.simulator import DEFAULT_START, SimulatedFleet

DAY = 86_400


@pytest.fixture(scope="module")
def fleets() -> tuple[SimulatedFleet, SimulatedFleet]:
    kw = dict(seed=7, nodes=4, gpus_per_node=8, start=DEFAULT_START, duration_s=DAY, shares=True)
    return SimulatedFleet(**kw), SimulatedFleet(**kw, internal="research")  # type: ignore[arg-type]


def held(fleet: SimulatedFleet, tenant: str, job: str, gpu: str) -> set[int]:
    """Seconds (tenant, job) held ``gpu`` in the window, from the schedule."""
    out: set[int] = set()
    for _, g, seg in fleet.schedule():
        if g.uuid == gpu and g.mig_uuid is None and seg.tenant == tenant and seg.job == job:
            out.update(range(seg.start, seg.end))
    return out


def test_each_preemption_ends_the_spot_job_and_its_truth_is_the_schedules(fleets) -> None:  # type: ignore[no-untyped-def]
    plain, fleet = fleets
    assert len(fleet.preemptions) >= 3 and plain.preemptions == []
    for p in fleet.preemptions:
        mine = held(fleet, p.tenant, p.job, p.gpu_uuid)
        before = held(plain, p.tenant, p.job, p.gpu_uuid)
        # the spot job held the GPU up to `at` and not from `at` on; it would have run longer
        assert mine and max(mine) == p.at - 1 and mine == {s for s in before if s < p.at}
        assert max(before) >= p.at
        # the internal tenant holds the GPU from `at`
        assert p.at in held(fleet, "research", _holder_at(fleet, p.gpu_uuid, p.at), p.gpu_uuid)
        lo = p.checkpoint_at if p.checkpoint_at is not None else min(mine)
        assert p.lost_seconds == len([s for s in mine if s >= lo]) > 0
        assert p.checkpoint_at is None or p.checkpoint_at <= p.at
        record = p.record(now=DEFAULT_START + 2 * DAY)
        assert (record.tenant, record.job, record.gpu_uuid, record.at) == (
            p.tenant,
            p.job,
            p.gpu_uuid,
            p.at,
        )
        assert record.preempted_by == "research" and record.share_milli == 1000


def _holder_at(fleet: SimulatedFleet, gpu: str, ts: int) -> str:
    for _, g, seg in fleet.schedule():
        if g.uuid == gpu and seg.start <= ts < seg.end and seg.job is not None:
            return seg.job
    raise AssertionError(f"nobody holds {gpu} at {ts}")


def test_only_preempted_jobs_and_idle_change(fleets) -> None:  # type: ignore[no-untyped-def]
    plain, fleet = fleets
    a, b = plain.ground_truth(), fleet.ground_truth()
    preempted = {(p.tenant, p.job) for p in fleet.preemptions}
    per_job_a, per_job_b = a.per_job_milli(), b.per_job_milli()
    research = sum(v for k, v in per_job_b.items() if k[0] == "research")
    assert research > 0
    for key, milli in per_job_a.items():
        if key in preempted:
            assert per_job_b[key] < milli
        else:
            assert per_job_b[key] == milli, key
    # every milli-GPU-second is held once: research took idle capacity and what spot lost
    total_a = a.allocated_milli_seconds + a.idle_milli
    assert b.allocated_milli_seconds + b.idle_milli == total_a
    lost_to_research = sum(per_job_a[k] - per_job_b[k] for k in preempted)
    assert a.idle_milli - b.idle_milli == research - lost_to_research


def test_the_same_seed_gives_the_same_preemptions() -> None:
    kw = dict(seed=3, nodes=2, gpus_per_node=4, start=DEFAULT_START, duration_s=DAY)
    one = SimulatedFleet(**kw, internal="research")  # type: ignore[arg-type]
    two = SimulatedFleet(**kw, internal="research")  # type: ignore[arg-type]
    assert one.preemptions == two.preemptions
