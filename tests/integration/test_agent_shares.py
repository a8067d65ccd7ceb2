"""End to end with shared GPUs: contract-v2 agents -> embedded broker -> `gpumeter worker` ->
chDB. A simulated fleet with whole GPUs, shared GPUs and MIG slices, and a replay of fractional
pods in the openb format, metered exactly: milli-GPU-seconds and GPU-seconds held per (tenant,
job, GPU model, hour) and idle milli-GPU-seconds equal the ground truth, which is counted from
the schedule (and, for the replay, from the pod list itself), never from the pipeline."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.agent import run_accelerated
from agents.fleet import build_agents
from agents.kafka import make_producer
from agents.openb import HEADER, OpenbFleet
from agents.simulator import SimulatedFleet
from infra.embedded.broker import EmbeddedBroker
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = 1_795_651_200  # 2026-11-20T00:00:00Z


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topic_factory: Any, tmp_path: Path) -> Pipeline:
    return Pipeline(broker.bootstrap, topic_factory("usage", partitions=2), tmp_path)


def publish_v2(pipeline: Pipeline, fleet: Any) -> int:
    producer = make_producer(pipeline.bootstrap)
    agents = build_agents(
        fleet.samplers(),
        pipeline.data_dir / "spool",
        producer,
        pipeline.topic,
        flush_every=60,
        fsync=False,
        schema_version=2,
    )
    assert run_accelerated(agents, fleet.start, fleet.end), "the agent could not deliver all"
    producer.close(timeout=10)
    for a in agents:
        a.spool.close()
    return sum(a.stats.samples for a in agents)


def ledger(pipeline: Pipeline) -> tuple[Counter[Any], Counter[Any], int]:
    """Per (tenant, job, model, hour): milli-GPU-seconds and seconds held; idle milli."""
    rows = pipeline.sql(
        "SELECT tenant, job, gpu_model, toUnixTimestamp(toStartOfHour(minute)) AS hour, "
        "sum(gpu_milli_seconds) AS m, sum(gpu_seconds) AS s FROM usage_minutely FINAL "
        "GROUP BY tenant, job, gpu_model, hour"
    )
    milli: Counter[Any] = Counter()
    held: Counter[Any] = Counter()
    idle = 0
    for r in rows:
        if r["tenant"] == "__idle__":
            idle += int(r["m"])
            continue
        key = (r["tenant"], r["job"], r["gpu_model"], int(r["hour"]))
        milli[key] += int(r["m"])
        held[key] += int(r["s"])
    return milli, held, idle


def test_whole_shared_and_mig_gpus_are_metered_exactly(pipeline: Pipeline) -> None:
    # given an hour of 2 nodes x 4 GPUs: whole GPUs, a shared GPU and a MIG GPU on each
    fleet = SimulatedFleet(
        seed=5, nodes=2, gpus_per_node=4, start=START, duration_s=3600, shares=True
    )
    devices = sum(len(s.gpus()) for s in fleet.samplers())
    published = publish_v2(pipeline, fleet)
    assert published == devices * 3600
    # when the worker has consumed everything
    stats = pipeline.run_worker()
    assert stats["duplicates"] == 0
    # then every cell, in milli-GPU-seconds and in seconds held, and idle equal ground truth
    truth = fleet.ground_truth()
    milli, held, idle = ledger(pipeline)
    assert milli == {tuple(k): v for k, v in truth.allocated_milli.items()}
    assert held == {tuple(k): v for k, v in truth.allocated.items()}
    assert idle == truth.idle_milli
    # allocated + idle = observed: 1000 milli-GPU per device second
    assert sum(milli.values()) + idle == devices * 3600 * 1000
    assert any(m % 1000 for m in milli.values()), "some cells must be fractional shares"


def test_replayed_fractional_pods_are_metered_exactly_per_tenant(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    # given a small pod list in the openb format (written here), replayed for 30 minutes
    pods = tmp_path / "pods.csv"
    rows = [
        # name, cpu, mem, num_gpu, gpu_milli, spec, qos, phase, created, deleted, scheduled
        ["p0", 4000, 8192, 1, 460, "", "LS", "Running", 0, 1500, 0],
        ["p1", 4000, 8192, 1, 320, "", "BE", "Running", 100, 900, 120],
        ["p2", 4000, 8192, 1, 250, "", "BE", "Failed", 200, 1700, 200],
        ["p3", 8000, 16384, 2, 1000, "", "Burstable", "Succeeded", 50, 1200, 60],
        ["p4", 4000, 8192, 1, 1000, "", "LS", "Running", 300, 2400, 300],
        ["p5", 4000, 8192, 1, 110, "", "BE", "Pending", 400, 500, ""],
        ["p6", 4000, 8192, 0, 0, "", "LS", "Running", 0, 1800, 0],
        ["p7", 4000, 8192, 1, 750, "", "Guaranteed", "Running", 1000, 1790, 1000],
    ]
    with pods.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    fleet = OpenbFleet(pods, start=START, duration_s=1800, gpus_per_node=4)
    publish_v2(pipeline, fleet)
    pipeline.run_worker()
    # then per tenant: pod seconds in the window x gpu_milli x num_gpu, from the rows above
    expected: Counter[str] = Counter()
    for _name, _c, _m, n, milli, _s, qos, _p, _cr, deleted, scheduled in rows:
        if n and scheduled != "":
            seconds = min(int(deleted), 1800) - int(scheduled)
            expected[f"openb-{qos}"] += max(seconds, 0) * int(milli) * int(n)
    measured, _, idle = ledger(pipeline)
    per_tenant: Counter[str] = Counter()
    for (tenant, *_), m in measured.items():
        per_tenant[tenant] += m
    assert per_tenant == expected
    assert sum(per_tenant.values()) + idle == fleet.gpu_count * 1800 * 1000
