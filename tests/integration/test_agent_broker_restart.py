"""The agent against a broker that restarts and forgets (issue 9, finding 2).

The embedded broker keeps data in memory only: killed and restarted on the same port it comes
back *empty*, so batches it had acknowledged (and the agent's spool had released) are gone. The
agent must (1) get over the restart by itself (its idempotent producer is stuck on
``InitProducerId ... UnknownError`` until replaced) and (2) notice that the log went backwards and
re-send the acknowledged batches it retains. The topic read back afterwards must hold every
GPU-second of the window (duplicates allowed: the worker deduplicates by GPU-second).

Each test starts a broker of its own: killing the session broker would empty every other test's
topics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.simulator import SimulatedFleet
from infra.embedded.broker import EmbeddedBroker, restart_broker
from schemas.topics import TopicSpec
from tests.integration.agent_run import (
    GPUS,
    HOUR,
    NODES,
    PARTITIONS,
    SEED,
    START,
    AgentProc,
    acked_seq,
    agent_cmd,
    assert_exact,
    node_dirs,
    read_topic,
    spooled,
    wait_until,
)

pytestmark = pytest.mark.integration

TOPIC = "usage.restart"


@pytest.fixture
def fleet() -> SimulatedFleet:
    return SimulatedFleet(seed=SEED, nodes=NODES, gpus_per_node=GPUS, start=START, duration_s=HOUR)


@pytest.fixture
def own_broker(tmp_path: Path):
    b = EmbeddedBroker(log_path=tmp_path / "broker.log")
    with b:
        b.create_topics([TopicSpec(TOPIC, PARTITIONS)])
        yield b


def test_agent_recovers_from_a_broker_restart_and_refills_what_it_lost(
    own_broker: EmbeddedBroker, fleet: SimulatedFleet, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    # given an agent publishing a simulated hour at 300x (about 12 s of wall time)
    agent = AgentProc.start(
        agent_cmd(own_broker.bootstrap, TOPIC, spool, speed="300"), tmp_path, "agent"
    )
    try:
        wait_until(
            lambda: all(acked_seq(d) >= 10 for d in node_dirs(spool)),
            30,
            agent,
            "the agent delivered its first batches",
        )
        acked_before = [acked_seq(d) for d in node_dirs(spool)]
        # when the broker is killed, stays down 2 s and comes back empty on the same port
        restart_broker(own_broker, down_s=2.0)
        own_broker.create_topics([TopicSpec(TOPIC, PARTITIONS)])
        # then the agent finishes by itself, with everything acknowledged by the new broker
        deadline = time.monotonic() + 90
        while agent.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if agent.proc.poll() is None:
            still = [(spooled(d)[0] - 1 - acked_seq(d)) for d in node_dirs(spool)]
            pytest.fail(
                f"the agent did not recover within 90 s; unacknowledged per node: "
                f"{still}\n{agent.output()}"
            )
    finally:
        agent.kill()
    out, err = agent.out.read_text(), agent.err.read_text()
    assert agent.proc.returncode == 0, agent.output()
    assert "all acknowledged" in out, agent.output()
    assert "went backwards" in err, agent.output()  # the loss was noticed and said
    assert all(a >= 10 for a in acked_before)

    # and the new broker's topic holds every GPU-second of the hour, refilled from the retained
    # batches (duplicates allowed, nothing missing)
    rb = read_topic(own_broker.bootstrap, TOPIC)
    assert_exact(rb, fleet, START, START + HOUR, allow_duplicates=True)


def test_resend_command_refills_a_broker_that_lost_everything(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    from tests.integration.agent_run import ROOT, run_agent

    minutes = 10
    spool = tmp_path / "spool"
    # given an agent that delivered 10 simulated minutes and exited (all acknowledged)
    done = run_agent(
        agent_cmd(own_broker.bootstrap, TOPIC, spool, duration=f"{minutes}m"), tmp_path, "agent"
    )
    assert done.proc.returncode == 0, done.output()
    # when the broker restarts empty, and the operator asks for a resend from the window's start
    restart_broker(own_broker)
    own_broker.create_topics([TopicSpec(TOPIC, PARTITIONS)])
    assert read_topic(own_broker.bootstrap, TOPIC).records == 0
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpumeter.cli",
            "agent",
            "resend",
            "--since",
            "2026-11-20 00:00",
            "--spool-dir",
            str(spool),
            "--bootstrap",
            own_broker.bootstrap,
            "--topic",
            TOPIC,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GPUMETER_DATA_DIR": str(tmp_path / "data")},
    )
    # then every retained batch is sent again and the topic holds the whole window again
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("retained batch(es) re-sent") == NODES, out.stdout
    rb = read_topic(own_broker.bootstrap, TOPIC)
    window = minutes * 60
    short = SimulatedFleet(
        seed=SEED, nodes=NODES, gpus_per_node=GPUS, start=START, duration_s=window
    )
    assert_exact(rb, short, START, START + window, allow_duplicates=False)
