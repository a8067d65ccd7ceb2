"""End to end on real parts: simulated agent -> embedded Tansu broker -> Faust worker -> chDB.

Ground truth comes from the simulator's schedule, never from the pipeline's own output.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.simulator import SimulatedFleet
from infra.embedded.broker import EmbeddedBroker
from schemas import topics
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = 1_795_651_200  # 2026-11-20T00:00:00Z


def small_fleet(hours: int = 1, nodes: int = 2, gpus: int = 4) -> SimulatedFleet:
    return SimulatedFleet(
        seed=11, nodes=nodes, gpus_per_node=gpus, start=START, duration_s=hours * 3600
    )


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topic_factory, tmp_path: Path) -> Pipeline:
    return Pipeline(broker.bootstrap, topic_factory("usage", partitions=2), tmp_path)


def test_ledger_equals_ground_truth_and_replayed_batches_change_nothing(pipeline: Pipeline) -> None:
    # given a simulated hour published by the agent
    fleet = small_fleet()
    end = START + 3600
    published = pipeline.publish_fleet(fleet, START, end)
    truth = fleet.ground_truth(START, end)
    assert published == truth.allocated_seconds + truth.idle_seconds

    # when the worker has consumed everything
    stats = pipeline.run_worker()

    # then every (tenant, job, GPU model, hour) cell and the idle total equal ground truth
    cells, idle = pipeline.ledger_cells()
    assert cells == {tuple(k): v for k, v in truth.allocated.items()}
    assert idle == truth.idle_seconds
    assert stats["new_seconds"] == published and stats["duplicates"] == 0

    # when the very same records are published again and a worker consumes them
    pipeline.publish_raw(pipeline.read_raw()[: stats["records"]])
    again = pipeline.run_worker()

    # then they are all recognised as duplicates and the ledger is unchanged
    assert again["duplicates"] == published and again["new_seconds"] == 0
    assert pipeline.ledger_cells() == (cells, idle)
    raw = pipeline.sql(
        "SELECT count() AS n, uniqExact(gpu_uuid, mig_uuid, ts) AS d FROM usage_raw_seconds"
    )
    assert int(raw[0]["n"]) == int(raw[0]["d"]) == published


def test_malformed_records_are_rejected_with_reasons_and_good_data_still_counts(
    pipeline: Pipeline,
) -> None:
    # given good usage, garbage, an unknown schema version and a batch with one absurd sample
    fleet = small_fleet(hours=1, nodes=1, gpus=2)
    end = START + 1800
    pipeline.publish_fleet(fleet, START, end)
    good_sample = fleet.samplers()[0].sample(START + 10)[0].model_dump(mode="json")
    bad_sample = {**good_sample, "ts": START + 5000, "sm_util": 140.0}
    extra_good = {**good_sample, "ts": START + 7000}  # outside the published window, valid
    pipeline.publish_raw(
        [
            b"{not json",
            orjson.dumps(
                {"schema_version": 99, "node_id": "n", "agent_id": "a", "seq": 0, "samples": []}
            ),
            orjson.dumps(
                {
                    "schema_version": 1,
                    "node_id": "sim-node-00",
                    "agent_id": "x",
                    "seq": 5,
                    "samples": [bad_sample, extra_good],
                }
            ),
        ]
    )

    # when the worker consumes the topic
    stats = pipeline.run_worker()

    # then it did not crash, each bad thing is in the rejected table with a reason
    rejected = pipeline.sql(
        "SELECT code, reason, sample_index, offset FROM usage_rejected FINAL ORDER BY code"
    )
    by_code = {r["code"]: r for r in rejected}
    assert set(by_code) == {"malformed_json", "unknown_schema_version", "invalid_sample"}
    assert "schema_version" in by_code["unknown_schema_version"]["reason"]
    assert "sm_util" in by_code["invalid_sample"]["reason"]
    assert int(by_code["invalid_sample"]["sample_index"]) == 0
    assert stats["rejected_records"] == 2 and stats["rejected_samples"] == 1

    # and the good usage, including the good sample next to the bad one, is counted exactly
    truth = fleet.ground_truth(START, end)
    cells, idle = pipeline.ledger_cells()
    expected = {tuple(k): v for k, v in truth.allocated.items()}
    extra_key = (
        good_sample["tenant"],
        good_sample["job"],
        good_sample["gpu_model"],
        (START + 7000) // 3600 * 3600,
    )
    if good_sample["tenant"] is None:
        assert idle == truth.idle_seconds + 1
        assert cells == expected
    else:
        expected[extra_key] = expected.get(extra_key, 0) + 1
        assert cells == expected and idle == truth.idle_seconds


def test_worker_killed_mid_stream_then_restarted_stays_exact(pipeline: Pipeline) -> None:
    # given three simulated hours on the broker
    fleet = small_fleet(hours=3, nodes=2, gpus=4)
    end = START + 3 * 3600
    pipeline.publish_fleet(fleet, START, end)

    # when a worker is killed with SIGKILL after committing part of it, and a new one finishes
    committed = pipeline.kill_worker_midway(fraction=0.05)
    assert committed > 0
    stats = pipeline.run_worker()

    # then the restarted worker resumed (it did not need the whole topic) and totals are exact
    truth = fleet.ground_truth(START, end)
    assert stats["records"] < 3 * 2 * 60
    cells, idle = pipeline.ledger_cells()
    assert cells == {tuple(k): v for k, v in truth.allocated.items()}
    assert idle == truth.idle_seconds


def test_work_units_are_validated_stored_once_and_bad_ones_rejected(
    pipeline: Pipeline, topic_factory
) -> None:
    # given usage plus work reports on their own topic: one good report sent twice, another
    # good one, and one whose window ends before it starts
    pipeline.work_topic = topic_factory("work")
    pipeline.publish_fleet(small_fleet(hours=1, nodes=1, gpus=1), START, START + 600)

    def report(job: str, start: int, end: int, quantity: int) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "tenant": "acme",
                "job": job,
                "source": "r0",
                "unit": "tokens",
                "quantity": quantity,
                "window_start": start,
                "window_end": end,
            }
        )

    good = report("acme-j1", START, START + 60, 1_000_000)
    pipeline.publish_raw(
        [
            good,
            good,
            report("acme-j1", START + 60, START + 120, 500_000),
            report("acme-j1", START + 120, START + 60, 5),
        ],
        topic=pipeline.work_topic,
    )

    # when the worker runs
    stats = pipeline.run_worker()

    # then the replayed report is stored once, and the bad one is rejected with its reason
    assert stats["work_accepted"] == 3 and stats["work_rejected"] == 1
    total = pipeline.sql("SELECT count() AS n, sum(quantity) AS q FROM work_units FINAL")
    assert (int(total[0]["n"]), int(total[0]["q"])) == (2, 1_500_000)
    rejected = pipeline.sql("SELECT reason FROM usage_rejected FINAL WHERE code = 'invalid_work'")
    assert len(rejected) == 1 and "window_end" in rejected[0]["reason"]
    # and it is announced on the rejections topic, like a bad usage record
    announced = [
        m
        for m in map(orjson.loads, pipeline.read_raw(topics.REJECTED))
        if m["topic"] == pipeline.work_topic
    ]
    assert [(m["code"], m["offset"]) for m in announced] == [("invalid_work", 3)]


def test_late_seconds_merge_into_their_closed_minute_and_are_re_emitted(
    pipeline: Pipeline, topic_factory
) -> None:
    # given one GPU whose minute M arrives half now and half after M has closed (the worker's
    # grace is 60 s here and the first batch already reaches 10 minutes past M)
    pipeline.minutely_topic = topic_factory("minutely")
    m = START + 600

    def sample(ts: int) -> dict[str, object]:
        return {
            "gpu_uuid": "GPU-late",
            "mig_uuid": None,
            "gpu_model": "NVIDIA H100 80GB HBM3",
            "ts": ts,
            "tenant": "acme",
            "job": "late-job",
            "billing_class": None,
            "sm_util": 50.0,
            "mem_util": 10.0,
            "mem_used": 1,
            "mem_total": 2,
            "power_w": 300.0,
            "energy_j": 300.0,
            "temp_c": 60.0,
            "flags": [],
        }

    def batch(seq: int, seconds: range) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "node_id": "late-node",
                "agent_id": "a1",
                "seq": seq,
                "samples": [sample(t) for t in seconds],
                "gaps": [],
            }
        )

    pipeline.publish_raw([batch(0, range(m, m + 30)), batch(1, range(m + 60, m + 660))])
    pipeline.run_worker()
    pipeline.publish_raw([batch(2, range(m + 30, m + 60))])

    # when a worker consumes the late half
    stats = pipeline.run_worker()

    # then minute M holds all 60 seconds in the ledger, counted as late, never twice
    assert stats["late"] == 30 and stats["new_seconds"] == 30
    rows = pipeline.sql(
        f"SELECT gpu_seconds, energy_mj FROM usage_minutely FINAL "
        f"WHERE gpu_uuid = 'GPU-late' AND minute = toDateTime({m}, 'UTC')"
    )
    assert [(int(r["gpu_seconds"]), int(r["energy_mj"])) for r in rows] == [(60, 60 * 300_000)]
    # and usage.minutely.v1 first carried M as closed with 30 seconds, then the correction
    emitted = [orjson.loads(v) for v in pipeline.read_raw(pipeline.minutely_topic)]
    of_m = [(e["version"], e["gpu_seconds"]) for e in emitted if e["minute"] == m]
    assert [seconds for _, seconds in of_m] == [30, 60]
    assert of_m[0][0] < of_m[1][0]  # the correction carries a newer version
    # and every other minute that closed was emitted once, complete
    others = {e["minute"]: e["gpu_seconds"] for e in emitted if e["minute"] != m}
    assert others and all(v == 60 for v in others.values())
