"""The fault suite (issue 9): faults injected by hand into the real processes, each scenario
ending with the ledger compared with the simulator's schedule per (GPU, minute, tenant, job).

Scenarios: worker kill -9 (three times), agent kill -9, broker frozen (SIGSTOP) under a
running worker, broker restarted empty (memory-only) before a worker read it and refilled by
``gpumeter agent resend``, broker restarted under a worker that had read everything, a node
clock ahead of the worker. The session prints one line over all of them (conftest.py). The
spool on a full disk is in test_agent_disk_full.py (it needs a small filesystem: root only).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest

from infra.embedded.broker import EmbeddedBroker, restart_broker
from schemas.topics import TopicSpec
from tests.integration.faults import RESULTS, START, FaultResult, Scenario, fleet
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOPIC = "usage.faults"


@pytest.fixture
def own_broker(tmp_path: Path):
    b = EmbeddedBroker(log_path=tmp_path / "broker.log")
    with b:
        b.create_topics([TopicSpec(TOPIC, 2)])
        yield b


def scenario(name: str, broker: EmbeddedBroker, tmp_path: Path) -> Scenario:
    return Scenario(name, broker.bootstrap, TOPIC, tmp_path)


def test_worker_killed_three_times_mid_stream(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    # given two simulated hours of 4 nodes x 8 GPUs on the broker
    s = scenario("worker kill -9 x3", own_broker, tmp_path)
    f = fleet(minutes=90, nodes=4, gpus=8)
    s.wait(s.agent(f, 90))
    # when three workers in a row are killed with SIGKILL a few seconds into their work
    for after in (4.0, 5.5, 7.0):
        w = s.worker()
        time.sleep(after)
        if w.poll() is None:
            s.kill(w)
    # and a last one finishes
    s.wait(s.worker())
    # then the ledger is the schedule, cell by cell
    r = s.check(f)
    assert (r.faults, r.lost, r.doubled) == (3, 0, 0), r


def test_agent_killed_mid_run_then_restarted_on_its_spool(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    s = scenario("agent kill -9", own_broker, tmp_path)
    f = fleet(minutes=120, nodes=2, gpus=8)
    # given an agent killed with SIGKILL while it samples and sends
    a = s.agent(f, 120, "--speed", "3000")
    time.sleep(1.5)
    assert a.poll() is None, "the agent finished before it could be killed"
    s.kill(a)
    # when it is started again on the same spool, and a worker consumes the topic
    s.wait(s.agent(f, 120))
    s.wait(s.worker())
    # then every GPU-second is in the ledger once
    r = s.check(f)
    assert (r.lost, r.doubled) == (0, 0), r


def test_broker_frozen_under_a_running_worker(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = scenario("broker SIGSTOP 8 s", own_broker, tmp_path)
    f = fleet(minutes=90, nodes=4, gpus=8)
    s.wait(s.agent(f, 90))
    # given a worker consuming, when the broker stops answering for 8 s and comes back
    w = s.worker(idle_s=6)
    time.sleep(4)
    own_broker.pause()  # SIGSTOP: no answers, data kept
    s.faults += 1
    time.sleep(8)
    own_broker.resume()
    s.wait(w)
    # then nothing is lost or doubled
    r = s.check(f)
    assert (r.lost, r.doubled) == (0, 0), r


def test_broker_restarted_empty_before_the_worker_read_is_refilled_by_resend(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    s = scenario("broker lost its log, resend", own_broker, tmp_path)
    f = fleet(minutes=60, nodes=2, gpus=8)
    # given everything acknowledged by a broker that then restarts empty (memory only)
    s.wait(s.agent(f, 60))
    restart_broker(own_broker)
    own_broker.create_topics([TopicSpec(TOPIC, 2)])
    s.faults += 1
    # when the operator re-sends what the agent retains, and a worker consumes the topic
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(START))
    resend = s._cli(
        "agent",
        "resend",
        "--since",
        since,
        "--spool-dir",
        str(tmp_path / "spool"),
        "--bootstrap",
        own_broker.bootstrap,
        "--topic",
        TOPIC,
    )
    out = subprocess.run(resend, env=s.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    s.wait(s.worker())
    # then the ledger is whole
    r = s.check(f)
    assert (r.lost, r.doubled) == (0, 0), r


def test_broker_restarted_under_a_worker_that_had_read_everything(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    s = scenario("broker restart under worker", own_broker, tmp_path)
    f = fleet(minutes=60, nodes=2, gpus=8)
    s.wait(s.agent(f, 60))
    # given a worker that has read and committed the whole topic and keeps running
    w = s.worker(idle_s=25)
    time.sleep(10)
    # when the broker restarts empty and the agent's retained batches are re-sent into it
    restart_broker(own_broker)
    own_broker.create_topics([TopicSpec(TOPIC, 2)])
    s.faults += 1
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(START))
    subprocess.run(
        s._cli(
            "agent",
            "resend",
            "--since",
            since,
            "--spool-dir",
            str(tmp_path / "spool"),
            "--bootstrap",
            own_broker.bootstrap,
            "--topic",
            TOPIC,
        ),
        env=s.env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = s.wait(w)
    # then the worker survived it, and the re-read changed nothing: no second counted twice
    r = s.check(f)
    assert (r.lost, r.doubled) == (0, 0), r
    assert s.stats(out).get("new_seconds") == r.checked


def test_a_node_clock_ahead_parks_its_seconds_then_counts_them(
    broker: EmbeddedBroker, topic_factory, tmp_path: Path
) -> None:
    # given a node whose clock is 20 s ahead, and workers allowing 5 s of skew
    p = Pipeline(broker.bootstrap, topic_factory("skew"), tmp_path)
    p.env["GPUMETER_MAX_FUTURE_SKEW_S"] = "5"
    ahead = int(time.time()) + 20

    def record(seq: int, first: int, n: int) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "node_id": "fast-clock",
                "agent_id": "a",
                "seq": seq,
                "gaps": [],
                "samples": [
                    {
                        "gpu_uuid": "GPU-skew",
                        "mig_uuid": None,
                        "gpu_model": "H100",
                        "ts": t,
                        "tenant": "acme",
                        "job": "j",
                        "billing_class": None,
                        "sm_util": 1.0,
                        "mem_util": 1.0,
                        "mem_used": 1,
                        "mem_total": 2,
                        "power_w": 100.0,
                        "energy_j": 100.0,
                        "temp_c": None,
                        "flags": [],
                    }
                    for t in range(first, first + n)
                ],
            }
        )

    p.publish_raw([record(0, ahead, 10)], key=b"fast-clock")
    first = p.run_worker()
    assert first["parked"] == 10 and first["new_seconds"] == 0
    # when their time comes (within the allowance) and the node keeps sending
    time.sleep(max(0.0, ahead + 10 - 5 - time.time()) + 1)
    p.publish_raw([record(1, ahead + 10, 5)], key=b"fast-clock")
    second = p.run_worker()
    # then the parked seconds are counted once, with the new ones
    assert second["readmitted"] == 10 and second["new_seconds"] == 15
    rows = p.sql("SELECT sum(gpu_seconds) AS s FROM usage_minutely FINAL")
    counted = int(rows[0]["s"])
    RESULTS.append(
        FaultResult("clock 20 s ahead", 1, 15, max(0, 15 - counted), max(0, counted - 15))
    )
    assert counted == 15
