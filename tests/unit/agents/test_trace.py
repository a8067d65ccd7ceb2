"""Trace replay: the DLRM instances packed onto virtual GPUs, replayed as samples whose counts
equal the ground truth. Skips where ../shared/data is absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.sampler import GroundTruth
from agents.trace import (
    DLRM_CSV,
    TRACE_END_S,
    TraceDataMissing,
    TraceFleet,
    pack,
    read_instances,
)
from schemas.usage import GpuSecond

pytestmark = pytest.mark.trace


def test_packing_never_shares_a_gpu_and_needs_only_peak_concurrency(shared_data: Path) -> None:
    instances = read_instances(shared_data / DLRM_CSV)
    per_gpu, dropped = pack(instances, None)
    assert dropped == 0
    assert sum(len(g) for g in per_gpu) == len(instances)
    for gpu in per_gpu:
        for a, b in zip(gpu, gpu[1:], strict=False):
            assert a.end <= b.start, f"{a.instance} and {b.instance} overlap on one GPU"
    # first fit by start time is optimal for intervals: as many GPUs as the busiest second needs
    events = sorted([(i.start, 1) for i in instances] + [(i.end, -1) for i in instances])
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    assert len(per_gpu) == peak


def test_ground_truth_equals_counting_samples(shared_data: Path) -> None:
    # given 64 GPUs replaying 10 minutes in a busy part of the trace (instances come and go)
    fleet = TraceFleet(
        shared_data, start=1_767_225_600, duration_s=600, window_offset_s=1_799_500, max_gpus=64
    )
    assert fleet.gpu_count == 64 and fleet.dropped > 0
    # when every second of every GPU is sampled and counted
    counted = GroundTruth()
    for sampler in fleet.samplers():
        for ts in range(fleet.start, fleet.end):
            for s in sampler.sample(ts):
                if s.tenant is None:
                    counted.idle[s.gpu_uuid] += 1
                else:
                    assert s.job is not None
                    counted.add_allocated(s.tenant, s.job, s.gpu_model, ts, ts + 1)
    # then the packed schedule's ground truth says the same; dropped instances are in neither
    truth = fleet.ground_truth()
    assert truth.allocated == counted.allocated
    assert truth.idle == counted.idle
    assert truth.allocated_seconds + truth.idle_seconds == 64 * 600
    assert len(truth.per_job()) == fleet.instances


def test_tenants_are_app_names_and_jobs_instances(shared_data: Path) -> None:
    fleet = TraceFleet(shared_data, duration_s=3600, window_offset_s=86_400)
    truth = fleet.ground_truth()
    assert all(re.fullmatch(r"app_\d+", t) for t in truth.per_tenant())
    assert all(re.fullmatch(r"instance_\d+", j) for _, j in truth.per_job())
    assert len(truth.per_tenant()) > 50
    assert fleet.node_ids[0] == "trace-node-0000"
    assert fleet.gpu_count % 8 == 0 and fleet.dropped == 0
    assert {g.model for g in fleet.gpus()} == {"NVIDIA A100-SXM4-80GB"}


def test_whole_trace_holds_its_published_gpu_hours(shared_data: Path) -> None:
    fleet = TraceFleet(shared_data, duration_s=TRACE_END_S, with_utilization=False)
    # summed from the schedule: the hourly ground truth of a whole month has ~2.4M keys (slow)
    allocated = sum(seg.end - seg.start for _, _, seg in fleet.schedule() if seg.tenant is not None)
    gpu_hours = allocated / 3600
    assert 2.37e6 < gpu_hours < 2.39e6  # the data README says about 2.38 million


def test_replay_is_deterministic_valid_and_holds_each_minute(shared_data: Path) -> None:
    def samples() -> list[list[GpuSecond]]:
        fleet = TraceFleet(shared_data, duration_s=180, window_offset_s=600_000, max_gpus=16)
        return [
            s
            for sampler in fleet.samplers()
            for ts in range(fleet.start, fleet.end)
            for s in [sampler.sample(ts)]
        ]

    first, again = samples(), samples()
    assert first == again
    flat = [s for batch in first for s in batch]
    for s in flat[::7]:
        assert GpuSecond.model_validate(s.model_dump(), context={"now": s.ts}) == s
    # the utilization curve is per minute: within one trace minute a GPU's value does not change
    by_minute: dict[tuple[str, int], set[float]] = {}
    for s in flat:
        if s.tenant is not None:
            by_minute.setdefault((s.gpu_uuid, (s.ts - 1_767_225_600 + 600_000) // 60), set()).add(
                s.sm_util
            )
    assert by_minute and all(len(v) == 1 for v in by_minute.values())
    assert any(s.sm_util > 0 for s in flat)


def test_window_outside_the_trace_is_refused(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="outside the trace"):
        TraceFleet(shared_data, duration_s=3600, window_offset_s=TRACE_END_S - 10)


def test_missing_data_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TraceDataMissing, match="not found"):
        TraceFleet(tmp_path, duration_s=60)
