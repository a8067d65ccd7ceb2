"""The agent on a full spool disk (issue 9, finding 3) and stopped by SIGTERM with no broker.

The issue's repro, on a real file system: the spool directory on a 1 MiB tmpfs, the broker
unreachable, ``gpumeter agent --simulate --nodes 2 --gpus 8 --duration 1h --speed max
--spool-max-mb 1``. The agent must keep going (dropping the oldest batches, counted), stop
cleanly on SIGTERM within its stated time, restart on the same full spool, and, once space and
the broker are back, deliver what it kept plus ``spool_full`` gaps that cover exactly the
seconds it dropped: every GPU-second of the hour is either delivered or reported as a gap.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the test is skipped (the same policy is
covered without privileges by tests/unit/agents/test_spool_disk_full.py's fault-injecting file
layer)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.simulator import SimulatedFleet
from tests.integration.agent_run import (
    START,
    AgentProc,
    agent_cmd,
    read_topic,
    spooled,
    wait_until,
)

pytestmark = pytest.mark.integration

NODES, GPUS = 2, 8
HOUR = 3600
STOP_WITHIN_S = 10  # SIGTERM to exit, broker gone (agents/README.md)


def _cmd(bootstrap: str, topic: str, spool: Path) -> list[str]:
    cmd = agent_cmd(bootstrap, topic, spool, duration="1h", speed="max")
    cmd[cmd.index("--nodes") + 1] = str(NODES)
    cmd[cmd.index("--gpus") + 1] = str(GPUS)
    cmd.remove("--no-fsync")
    return [*cmd, "--spool-max-mb", "1"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_spool_disk_drops_oldest_reports_gaps_and_recovers(
    broker, topic_factory, small_fs: Path, tmp_path: Path
) -> None:
    from infra.embedded.broker import free_port

    spool = small_fs / "spool"
    dirs = [spool / f"sim-node-{n:02d}" for n in range(NODES)]
    topic = topic_factory("usage", partitions=2)
    # given the broker unreachable and a 1 MiB file system for two nodes' spools
    down = AgentProc.start(_cmd(f"127.0.0.1:{free_port()}", topic, spool), tmp_path, "down")
    try:
        # when the agent samples the whole hour (about 1.2 MB per node of batches)
        wait_until(
            lambda: all(d.exists() and spooled(d)[2] == START + HOUR - 1 for d in dirs),
            60,
            down,
            "the spool held the end of the hour",
            lambda: [spooled(d) for d in dirs if d.exists()],
        )
        # then it is still running (no ENOSPC traceback loop) ...
        assert down.proc.poll() is None, down.output()
        # ... and SIGTERM stops it within the stated time although the broker is gone
        t0 = time.monotonic()
        os.kill(down.proc.pid, signal.SIGTERM)
        rc = down.wait(STOP_WITHIN_S + 5)
        took = time.monotonic() - t0
    finally:
        down.kill()
    out, err = down.out.read_text(), down.err.read_text()
    assert rc == 0, down.output()
    assert took <= STOP_WITHIN_S, f"SIGTERM took {took:.1f} s\n{down.output()}"
    assert "Traceback" not in err, down.output()
    assert "stopped by SIGTERM" in out, down.output()
    dropped = int(out.split("full disk: ")[1].split(" ")[0])
    assert dropped > 0, down.output()

    # when space comes back and the agent starts again on the same spool, broker up
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    up = AgentProc.start(_cmd(broker.bootstrap, topic, spool), tmp_path, "up")
    assert up.wait(90) == 0, up.output()
    assert "published 0 samples" in up.out.read_text(), up.output()  # nothing re-sampled

    # then every GPU-second of the hour was delivered or reported as a spool_full gap, never
    # both and never neither; the gaps account for exactly the dropped samples
    rb = read_topic(broker.bootstrap, topic)
    assert not rb.rejections, rb.rejections[:3]
    fleet = SimulatedFleet(seed=7, nodes=NODES, gpus_per_node=GPUS, start=START, duration_s=HOUR)
    gpus_of = {}
    for s in fleet.samplers():
        gpus_of[s.node_id] = [g.uuid for g in s.gpus()]
    gap_seconds = {node: set() for node in gpus_of}
    for node, start, end, reason in rb.gaps:
        assert reason == "spool_full", (node, start, end, reason)
        gap_seconds[node] |= set(range(start, end))
    missing, both = [], []
    for node, gpus in gpus_of.items():
        for gpu in gpus:
            for ts in range(START, START + HOUR):
                have = (gpu, None, ts) in rb.distinct
                if not have and ts not in gap_seconds[node]:
                    missing.append((gpu, ts))
                if have and ts in gap_seconds[node]:
                    both.append((gpu, ts))
    assert not missing, f"{len(missing)} GPU-seconds neither delivered nor reported: {missing[:5]}"
    assert not both, f"{len(both)} delivered GPU-seconds also reported as gaps: {both[:5]}"
    assert sum(len(g) for g in gap_seconds.values()) * GPUS == dropped
