"""Preemption records through the real parts: embedded broker -> ``gpumeter worker`` -> chDB.
The lost GPU-seconds the view gives equal those counted from the simulator's schedule."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.simulator import SimulatedFleet
from infra.embedded.broker import EmbeddedBroker
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = 1_795_651_200  # 2026-11-20T00:00:00Z


class PreemptionPipeline(Pipeline):
    preemptions_topic = ""

    def start_worker(self, *extra: str, prelude: str | None = None):  # type: ignore[no-untyped-def]
        return super().start_worker(
            "--preemptions-topic", self.preemptions_topic, *extra, prelude=prelude
        )


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topic_factory, tmp_path: Path) -> PreemptionPipeline:
    return PreemptionPipeline(broker.bootstrap, topic_factory("usage", partitions=1), tmp_path)


def test_preemptions_are_stored_once_priced_from_the_ledger_and_bad_ones_rejected(
    pipeline: PreemptionPipeline, topic_factory
) -> None:
    # given an hour of one node's usage, and a job of the schedule that ran in it
    fleet = SimulatedFleet(seed=11, nodes=1, gpus_per_node=2, start=START, duration_s=3600)
    pipeline.publish_fleet(fleet, START, START + 3600)
    node, gpu, seg = next(
        (n, g, s)
        for n, g, s in fleet.schedule()
        if s.job is not None and min(s.end, START + 3600) - max(s.start, START) > 300
    )
    first = max(seg.start, START)
    at = min(seg.end, START + 3600) - 7  # the job had 7 more seconds to run
    checkpoint = first + 101

    def record(**kw: object) -> bytes:
        doc = {
            "tenant": seg.tenant,
            "job": seg.job,
            "gpu_uuid": gpu.uuid,
            "share_milli": seg.milli,
            "at": at,
            "preempted_by": "research",
        }
        return orjson.dumps({**doc, **kw})

    topic = pipeline.preemptions_topic = topic_factory("preemptions")
    pipeline.publish_raw(
        [
            record(),
            record(),  # redelivered
            record(checkpoint_at=checkpoint),  # corrected: replaces the first
            record(at=first + 60),  # another preemption of the same allocation
            record(share_milli="1000"),  # no coercion
            b"not json",
        ],
        topic=topic,
    )

    # when the worker runs
    stats = pipeline.run_worker()

    # then
    assert (stats["preemptions_accepted"], stats["preemptions_rejected"]) == (4, 2)
    rows = pipeline.sql(
        "SELECT toUnixTimestamp(at) AS at, lost_seconds, lost_milli_seconds, held_seconds, "
        "gpu_model FROM preemption_losses ORDER BY at"
    )
    assert [(int(r["at"]), int(r["lost_seconds"]), int(r["held_seconds"])) for r in rows] == [
        (first + 60, 60, 60),
        (at, at - checkpoint, at - first),
    ]
    assert int(rows[1]["lost_milli_seconds"]) == (at - checkpoint) * seg.milli
    assert rows[1]["gpu_model"] == gpu.model
    rejected = pipeline.sql(
        "SELECT reason FROM usage_rejected FINAL WHERE code = 'invalid_preemption' ORDER BY offset"
    )
    assert len(rejected) == 2 and "share_milli" in rejected[0]["reason"]


def test_simulated_preemptions_lose_what_the_simulator_says(
    pipeline: PreemptionPipeline, topic_factory
) -> None:
    # given a fleet whose research team preempts spot jobs (seed 22: two GPUs of one job,
    # after a checkpoint), its usage and the records the scheduler would publish
    fleet = SimulatedFleet(
        seed=22, nodes=2, gpus_per_node=4, start=START, duration_s=7200, internal="research"
    )
    assert len(fleet.preemptions) == 2
    assert all(p.checkpoint_at is not None for p in fleet.preemptions)
    pipeline.publish_fleet(fleet, START, START + 7200)
    topic = pipeline.preemptions_topic = topic_factory("preemptions")
    pipeline.publish_raw([p.record().to_json() for p in fleet.preemptions], topic=topic)

    # when the worker runs
    stats = pipeline.run_worker()

    # then every preemption's lost milli-GPU-seconds equal the simulator's ground truth
    assert stats["preemptions_accepted"] == 2
    rows = pipeline.sql(
        "SELECT tenant, job, gpu_uuid, toUnixTimestamp(at) AS at, lost_milli_seconds "
        "FROM preemption_losses"
    )
    measured = {
        (r["tenant"], r["job"], r["gpu_uuid"], int(r["at"])): int(r["lost_milli_seconds"])
        for r in rows
    }
    assert measured == {
        (p.tenant, p.job, p.gpu_uuid, p.at): p.lost_seconds * 1000 for p in fleet.preemptions
    }
