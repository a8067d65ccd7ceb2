"""The fault suite's harness: a simulated fleet through the real CLI processes (``gpumeter
agent --simulate``, ``gpumeter worker``) on an embedded broker of the scenario's own, faults
injected by hand (kill -9, SIGSTOP, broker restart, clock skew), and the ledger compared with
the simulator's schedule per (GPU, MIG slice, minute, tenant, job).

Every scenario records what it injected and what it checked in :data:`RESULTS`; the session
prints one line over all of them (tests/conftest.py): scenarios, faults injected, GPU-seconds
checked, lost, doubled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.simulator import SimulatedFleet

START = 1_795_651_200  # 2026-11-20T00:00:00Z
Cell = tuple[str, str, int, str, str]  # (gpu_uuid, mig_uuid, minute, tenant, job)


@dataclass(frozen=True)
class FaultResult:
    scenario: str
    faults: int
    checked: int  # GPU-seconds in the ground truth
    lost: int
    doubled: int


RESULTS: list[FaultResult] = []


def summary_line() -> str | None:
    if not RESULTS:
        return None
    return (
        f"fault suite: {len(RESULTS)} scenarios, {sum(r.faults for r in RESULTS)} faults "
        f"injected, {sum(r.checked for r in RESULTS):,} GPU-seconds checked, "
        f"{sum(r.lost for r in RESULTS):,} lost, {sum(r.doubled for r in RESULTS):,} doubled "
        f"({', '.join(r.scenario for r in RESULTS)})"
    )


def fleet(minutes: int = 30, nodes: int = 2, gpus: int = 4, seed: int = 7) -> SimulatedFleet:
    return SimulatedFleet(
        seed=seed, nodes=nodes, gpus_per_node=gpus, start=START, duration_s=minutes * 60
    )


def truth_cells(f: SimulatedFleet) -> Counter[Cell]:
    """Ground truth from the schedule (not from samples): seconds per cell."""
    out: Counter[Cell] = Counter()
    for _node, gpu, seg in f.schedule():
        tenant, job = (seg.tenant, seg.job) if seg.tenant and seg.job else ("__idle__", "")
        t = seg.start
        while t < seg.end:
            minute = t - t % 60
            upto = min(seg.end, minute + 60)
            out[(gpu.uuid, gpu.mig_uuid or "", minute, tenant, job)] += upto - t
            t = upto
    return out


class Scenario:
    """One scenario's processes: its own data directory, spool and group."""

    def __init__(self, name: str, bootstrap: str, topic: str, tmp: Path) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.topic = topic
        self.tmp = tmp
        self.faults = 0
        self.env = {
            **os.environ,
            "GPUMETER_DATA_DIR": str(tmp / "data"),
            "GPUMETER_GRACE_SECONDS": "60",
        }
        for k in [k for k in self.env if k.startswith("GPUMETER_KAFKA_")]:
            del self.env[k]

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gpumeter.cli", *args]

    def agent(self, f: SimulatedFleet, minutes: int, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._cli(
                "agent",
                "--simulate",
                "--nodes",
                str(len(f.node_ids)),
                "--gpus",
                str(f.gpu_count // len(f.node_ids)),
                "--seed",
                "7",
                "--start",
                time.strftime("%Y-%m-%dT%H:%M", time.gmtime(START)),
                "--duration",
                f"{minutes}m",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                self.topic,
                "--spool-dir",
                str(self.tmp / "spool"),
                "--no-fsync",
                "--quiet",
                *extra,
            ),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def worker(self, idle_s: float = 4) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._cli(
                "worker",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                self.topic,
                "--app-id",
                f"faults-{self.name}",
                "--exit-when-idle",
                str(idle_s),
                "--stop-timeout-s",
                "60",
                "--chunk-records",  # kill points are placed by chunks of < 150 records
                "100",
            ),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait(self, proc: subprocess.Popen[str], timeout: float = 240) -> str:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"{self.name}: process did not finish:\n{out[-3000:]}") from None
        assert proc.returncode == 0, f"{self.name}: exit {proc.returncode}\n{out[-3000:]}"
        return out

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        self.faults += 1

    def stats(self, out: str) -> dict[str, Any]:
        for line in out.splitlines():
            if line.startswith("WORKER-STATS "):
                return dict(json.loads(line.removeprefix("WORKER-STATS ")))
        return {}

    def ledger(self) -> Counter[Cell]:
        r = subprocess.run(
            self._cli(
                "sql",
                "SELECT gpu_uuid, mig_uuid, toUnixTimestamp(minute) AS m, tenant, job, "
                "sum(gpu_seconds) AS s FROM usage_minutely FINAL "
                "GROUP BY gpu_uuid, mig_uuid, m, tenant, job HAVING s > 0",
                "--format",
                "json",
            ),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return Counter(
            {
                (x["gpu_uuid"], x["mig_uuid"], int(x["m"]), x["tenant"], x["job"]): int(x["s"])
                for x in json.loads(r.stdout)
            }
        )

    def ledger_totals_by_node(self) -> dict[str, int]:
        r = subprocess.run(
            self._cli(
                "sql",
                "SELECT node_id, sum(gpu_seconds) AS s FROM usage_minutely FINAL GROUP BY node_id",
                "--format",
                "json",
            ),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return {x["node_id"]: int(x["s"]) for x in json.loads(r.stdout)}

    def check(self, f: SimulatedFleet) -> FaultResult:
        """Compare the ledger with the schedule, cell by cell; record and return the result."""
        truth, ledger = truth_cells(f), self.ledger()
        lost = sum(max(0, v - ledger.get(k, 0)) for k, v in truth.items())
        doubled = sum(max(0, v - truth.get(k, 0)) for k, v in ledger.items())
        result = FaultResult(self.name, self.faults, sum(truth.values()), lost, doubled)
        RESULTS.append(result)
        return result
