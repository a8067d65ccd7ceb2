"""The node agent's delivery guarantee, end to end against the real embedded broker.

The agent (``gpumeter agent --simulate``) runs as a subprocess, exactly as an operator starts it;
a plain kafka-python consumer (manual partition assignment, no group: group joins are slow on
the embedded broker) reads the topic back, validates every record with the worker's
``parse_record`` (contract v2 frames, or v1 translated) and compares the *distinct* device
seconds, by identity ``(gpu_uuid, mig_uuid, ts)``, with the simulator's ground truth, which is
counted from the schedule and not from samples.

Failures are real: the broker is frozen with SIGSTOP (``broker.pause()``), the agent is killed
with SIGKILL, the bootstrap points at a port nobody listens on. Duplicates are allowed after a
failure (sample ids are deterministic, the pipeline dedupes) and are reported; a missing sample
never is. The broker keeps data in memory only, so it is never restarted here: a loss seen by
these tests is the agent's.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from agents.simulator import SimulatedFleet
from tests.integration.agent_run import (
    FLUSH_EVERY,
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
    run_agent,
    spooled,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> SimulatedFleet:
    return SimulatedFleet(seed=SEED, nodes=NODES, gpus_per_node=GPUS, start=START, duration_s=HOUR)


# -- tests ---------------------------------------------------------------------------------------
def test_simulated_hour_arrives_exactly(broker, topic_factory, fleet, tmp_path: Path) -> None:
    topic = topic_factory("usage", partitions=PARTITIONS)
    agent = run_agent(agent_cmd(broker.bootstrap, topic, tmp_path / "spool"), tmp_path, "agent")
    assert agent.proc.returncode == 0, agent.output()
    assert "all acknowledged" in agent.out.read_text() and "NOT" not in agent.out.read_text()

    rb = read_topic(broker.bootstrap, topic)
    assert_exact(rb, fleet, START, START + HOUR, allow_duplicates=False)
    # A clean run: one record per node per flush interval, each exactly once.
    assert rb.records == NODES * HOUR // FLUSH_EVERY
    assert len(rb.seqs) == NODES
    # Everything acknowledged: the spools hold nothing unacknowledged.
    from agents.spool import Spool

    for d in node_dirs(tmp_path / "spool"):
        spool = Spool(d, fsync=False)
        try:
            assert spool.pending_count == 0 and spool.dropped_samples == 0
            assert spool.acked == HOUR // FLUSH_EVERY - 1 and spool.last_ts == START + HOUR - 1
        finally:
            spool.close()


@pytest.mark.parametrize(
    "pause_s",
    [
        pytest.param(7, id="7s-past-request-timeout"),
        pytest.param(17, id="17s-past-delivery-timeout"),
    ],
)
def test_broker_outage_mid_run_loses_nothing(
    broker, topic_factory, fleet, tmp_path: Path, pause_s: int
) -> None:
    """The broker freezes (SIGSTOP) while the agent samples at 400x (a simulated hour in ~9 s):
    7 s is past the producer's request timeout (5 s), 17 s past its delivery timeout (15 s, after
    which kafka-python fails the batch and :class:`Delivery` rewinds and re-sends). Either way
    the agent must drain soon after the broker returns, exit 0, and every sample arrive."""
    topic = topic_factory("usage", partitions=PARTITIONS)
    spool = tmp_path / "spool"
    agent = AgentProc.start(
        agent_cmd(broker.bootstrap, topic, spool, speed="400"), tmp_path, "agent"
    )
    try:
        wait_until(
            lambda: all(acked_seq(d) >= 3 for d in node_dirs(spool)),
            30,
            agent,
            "the agent delivered its first batches",
        )
        broker.pause()
        try:
            time.sleep(pause_s)
            assert agent.proc.poll() is None, (
                f"the agent gave up during the outage\n{agent.output()}"
            )
            unacked = [spooled(d)[0] - 1 - acked_seq(d) for d in node_dirs(spool)]
        finally:
            broker.resume()
        assert all(u > 0 for u in unacked), f"batches should pile up while paused: {unacked}"
        # Sampling ends at most ~9 s after the start; after that only the drain is left, which
        # takes well under a second once the broker answers.
        drain_s = 30
        try:
            rc: int | None = agent.proc.wait(drain_s)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is None:
            still = [(spooled(d)[0] - 1 - acked_seq(d)) for d in node_dirs(spool)]
            agent.kill()
            pytest.fail(
                f"the agent did not drain within {drain_s} s after a {pause_s} s outage "
                f"ended; unacknowledged batches per node: {still}\n{agent.output()}"
            )
    finally:
        agent.kill()
    assert rc == 0, f"the agent did not drain after the outage\n{agent.output()}"
    assert "all acknowledged" in agent.out.read_text()

    rb = read_topic(broker.bootstrap, topic)
    assert_exact(rb, fleet, START, START + HOUR, allow_duplicates=True)


def test_kill_9_and_restart_resumes_and_replays(
    broker, topic_factory, fleet, tmp_path: Path
) -> None:
    """SIGKILL mid-run, then the same command again: it resumes after the last spooled second
    and sends what was not acknowledged; the topic ends up complete."""
    topic = topic_factory("usage", partitions=PARTITIONS)
    spool = tmp_path / "spool"
    cmd = agent_cmd(broker.bootstrap, topic, spool, speed="600")
    first = AgentProc.start(cmd, tmp_path, "first")
    try:
        wait_until(
            lambda: all(acked_seq(d) >= 10 for d in node_dirs(spool)),
            30,
            first,
            "the agent delivered some batches",
        )
        assert first.proc.poll() is None, "the agent finished before it could be killed"
    finally:
        first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    progress = [spooled(d) for d in node_dirs(spool)]
    assert all(last is not None and last < START + HOUR - 1 for _, _, last in progress), (
        f"the first run should have been cut short: {progress}"
    )

    second = run_agent(cmd, tmp_path, "second")
    assert second.proc.returncode == 0, second.output()
    assert "all acknowledged" in second.out.read_text()
    # The restart samples only what was not spooled before the kill.
    published = int(second.out.read_text().split("published ")[1].split(" ")[0].replace(",", ""))
    assert published == NODES * GPUS * HOUR - sum(n for _, n, _ in progress), (
        f"restart re-sampled or skipped seconds: {second.out.read_text()} after {progress}"
    )

    rb = read_topic(broker.bootstrap, topic)
    assert_exact(rb, fleet, START, START + HOUR, allow_duplicates=True)
    assert len({agent_id for _, agent_id in rb.seqs}) == NODES  # same spool ids after restart


def test_kill_9_during_outage_replays_unacknowledged(
    broker, topic_factory, fleet, tmp_path: Path
) -> None:
    """The broker is frozen, batches pile up unacknowledged in the spool, the agent is killed;
    the broker comes back and a restarted agent replays the spooled batches."""
    topic = topic_factory("usage", partitions=PARTITIONS)
    spool = tmp_path / "spool"
    cmd = agent_cmd(broker.bootstrap, topic, spool, speed="600")
    first = AgentProc.start(cmd, tmp_path, "first")
    try:
        wait_until(
            lambda: all(acked_seq(d) >= 3 for d in node_dirs(spool)),
            30,
            first,
            "the agent delivered its first batches",
        )
        broker.pause()
        try:
            acked_at_pause = [acked_seq(d) for d in node_dirs(spool)]
            wait_until(
                lambda: all(spooled(d)[0] - 1 - acked_seq(d) >= 10 for d in node_dirs(spool)),
                20,
                first,
                "unacknowledged batches piled up in the spool",
            )
            first.kill()
            unacked = [spooled(d)[0] - 1 - acked_seq(d) for d in node_dirs(spool)]
        finally:
            broker.resume()
    finally:
        first.kill()
    assert all(u >= 10 for u in unacked), (unacked, acked_at_pause)

    second = run_agent(cmd, tmp_path, "second")
    assert second.proc.returncode == 0, second.output()
    rb = read_topic(broker.bootstrap, topic)
    assert_exact(rb, fleet, START, START + HOUR, allow_duplicates=True)


def test_unreachable_broker_spools_then_delivers(broker, topic_factory, tmp_path: Path) -> None:
    """Broker down from the start (a port nobody listens on): the agent keeps sampling into its
    spool. It is then killed (its drain would wait up to 120 s for the absent broker), and the
    same spool, pointed at the real broker, delivers everything."""
    from agents.spool import Spool
    from infra.embedded.broker import free_port

    minutes = 5
    window = minutes * 60
    topic = topic_factory("usage", partitions=PARTITIONS)
    spool = tmp_path / "spool"
    down = AgentProc.start(
        agent_cmd(f"127.0.0.1:{free_port()}", topic, spool, duration=f"{minutes}m"),
        tmp_path,
        "down",
    )
    try:
        # 45 s: longer than kafka-python's 30 s bootstrap timeout, so an agent that dies on an
        # unreachable broker is seen dying (with its traceback) rather than timing out here.
        wait_until(
            lambda: all(spooled(d)[2] == START + window - 1 for d in node_dirs(spool)),
            45,
            down,
            "the spool held the whole window while the broker was unreachable",
            lambda: (
                "(spooled (records, samples, last second) per node: "
                f"{[spooled(d) for d in node_dirs(spool)]}, "
                f"window ends {START + window - 1})"
            ),
        )
        time.sleep(0.5)
        assert down.proc.poll() is None, (
            f"the agent must not report success without a broker\n{down.output()}"
        )
    finally:
        down.kill()
    for d in node_dirs(spool):
        s = Spool(d, fsync=False)
        try:
            assert s.acked == -1 and s.dropped_samples == 0
            assert s.pending_samples == GPUS * window and s.last_ts == START + window - 1
        finally:
            s.close()

    up = run_agent(
        agent_cmd(broker.bootstrap, topic, spool, duration=f"{minutes}m"), tmp_path, "up"
    )
    assert up.proc.returncode == 0, up.output()
    assert "published 0 samples" in up.out.read_text()  # nothing re-sampled, only drained
    rb = read_topic(broker.bootstrap, topic)
    short = SimulatedFleet(
        seed=SEED, nodes=NODES, gpus_per_node=GPUS, start=START, duration_s=window
    )
    assert_exact(rb, short, START, START + window, allow_duplicates=False)
