"""The realtime part of bench/bench_agent.py: one node of 8 simulated GPUs at 1 Hz in a fresh
process (CPU seconds per wall second, peak RSS), and its idle baseline (same imports and a
connected producer, waking each second)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TOPIC = "bench.agent.usage"


def _rss_kib(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak (VmHWM), KiB. Not ``ru_maxrss``: Linux
    carries that across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def realtime_child(
    bootstrap: str, spool_dir: Path, seconds: float, idle: bool, version: int, shares: bool
) -> int:
    """Runs in a fresh process: one 8-GPU node at 1 Hz (or, ``idle``, the baseline)."""
    from agents.agent import NodeAgent, run_realtime
    from agents.kafka import Delivery, make_producer
    from agents.simulator import SimulatedFleet
    from agents.spool import Spool

    now = int(time.time())
    fleet = SimulatedFleet(
        nodes=1, gpus_per_node=8, start=now - 60, duration_s=int(seconds) + 600, shares=shares
    )
    producer = make_producer(bootstrap)
    producer.partitions_for(TOPIC)  # connected before measuring
    (sampler,) = fleet.samplers()
    spool = Spool(spool_dir, fsync=True)
    delivery = Delivery(spool, producer, TOPIC, key=b"rt")
    agent = NodeAgent(sampler, spool, delivery, flush_every_s=10, schema_version=version)
    rss0, cpu0, t0 = _rss_kib(), _cpu_s(), time.monotonic()
    deadline = t0 + seconds
    if idle:
        while time.monotonic() < deadline:
            time.sleep(max(0.0, (int(time.time()) + 1) - time.time()))
    else:
        run_realtime(agent, should_stop=lambda: time.monotonic() >= deadline)
    wall, cpu = time.monotonic() - t0, _cpu_s() - cpu0
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "cpu_per_wall_s": cpu / wall,
                "rss_start_mib": rss0 / 1024,
                "rss_end_mib": _rss_kib() / 1024,
                "peak_rss_mib": _rss_kib("VmHWM") / 1024,
                "samples": agent.stats.samples,
                "batches": agent.stats.batches,
                "acked": agent.delivery.stats.acked,
                "gap_seconds": agent.stats.gap_seconds,
            }
        )
    )
    producer.close(timeout=5)
    spool.close()
    return 0


def realtime(
    bootstrap: str, tmp: Path, seconds: float, *, version: int, shares: bool
) -> tuple[dict, dict]:
    """The agent and the idle baseline, side by side (both use little CPU)."""
    procs = {}
    for kind in ("agent", "idle"):
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("bench_agent.py")),
            "--realtime-child",
            kind,
            "--bootstrap",
            bootstrap,
            "--spool",
            str(tmp / f"rt-{kind}"),
            "--realtime",
            str(seconds),
            "--schema-version",
            str(version),
            *(["--shares"] if shares else []),
        ]
        procs[kind] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for kind, p in procs.items():
        stdout, stderr = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            sys.stderr.write(stderr.decode(errors="replace")[-3000:])
            raise SystemExit(f"realtime {kind} child failed ({p.returncode})")
        out[kind] = json.loads(stdout.decode().strip().splitlines()[-1])
    return out["agent"], out["idle"]
