"""Replay of fractional pods in the openb format (Alibaba cluster-trace-gpu-v2023): a small
synthetic pod list written here (no real trace in the repository), replayed through the node
agent as contract-v2 records; milli-GPU-seconds per tenant and per job read back from the
records' frames equal a ground truth computed from the file alone (pod durations x gpu_milli
x num_gpu)."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agents.agent import NodeAgent, run_accelerated
from agents.openb import HEADER, OpenbFleet, OpenbFormatError
from agents.spool import Spool

START = 1_767_225_600
WINDOW = (1_000, 4_600)  # trace seconds replayed: one hour


def write_pod_list(path: Path, seed: int = 11, pods: int = 120) -> None:
    """Pods like the trace's: 40 % sharing one GPU (gpu_milli 50..950), whole-GPU pods of 1, 2,
    4 or 8 GPUs, CPU-only pods, pods never scheduled, pods across the window's edges."""
    rnd = random.Random(seed)
    rows = []
    for i in range(pods):
        created = rnd.randrange(0, 5_000)
        kind = rnd.random()
        if kind < 0.4:
            num_gpu, milli = 1, rnd.choice([50, 110, 220, 250, 320, 460, 500, 750, 950])
        elif kind < 0.8:
            num_gpu, milli = rnd.choice([1, 1, 1, 2, 4, 8]), 1000
        else:
            num_gpu, milli = 0, 0
        pending = rnd.random() < 0.1
        scheduled = "" if pending else str(created + rnd.randrange(0, 30))
        deleted = created + rnd.randrange(1, 2_400)
        qos = rnd.choice(["LS", "BE", "Burstable", "Guaranteed"])
        phase = "Pending" if pending else rnd.choice(["Running", "Succeeded", "Failed"])
        rows.append(
            [f"openb-pod-{i:04d}", 4000, 16384, num_gpu, milli, "", qos, phase, created, deleted,
             scheduled]
        )  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)


def truth_from_file(path: Path) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """milli-GPU-seconds per tenant and per (tenant, job), from the file's rows directly."""
    lo, hi = WINDOW
    per_tenant: Counter[str] = Counter()
    per_job: Counter[tuple[str, str]] = Counter()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["scheduled_time"] == "" or int(row["num_gpu"]) == 0:
                continue
            seconds = min(int(row["deletion_time"]), hi) - max(int(row["scheduled_time"]), lo)
            if seconds <= 0:
                continue
            milli = seconds * int(row["gpu_milli"]) * int(row["num_gpu"])
            tenant = f"openb-{row['qos']}"
            per_tenant[tenant] += milli
            per_job[(tenant, row["name"])] += milli
    return per_tenant, per_job


class NoDelivery:
    def pump(self) -> None: ...

    def flush(self, timeout: float, should_stop: object = None) -> bool:
        return True

    def drained(self) -> bool:
        return True


def test_replayed_pods_meter_exactly_per_tenant_and_job(tmp_path: Path) -> None:
    # given a pod list in the openb format, replayed for one hour on as many GPUs as it needs
    pods = tmp_path / "openb_pod_list_test.csv"
    write_pod_list(pods)
    fleet = OpenbFleet(
        pods, start=START, duration_s=WINDOW[1] - WINDOW[0], window_offset_s=WINDOW[0]
    )
    assert fleet.dropped == 0
    # when every node's agent samples the window and spools contract-v2 records
    agents = [
        NodeAgent(s, Spool(tmp_path / s.node_id, fsync=False), NoDelivery(), 60, 2)  # type: ignore[arg-type]
        for s in fleet.samplers()
    ]
    assert run_accelerated(agents, fleet.start, fleet.end)
    measured_tenant: Counter[str] = Counter()
    measured_job: Counter[tuple[str, str]] = Counter()
    shared_seconds = 0
    for a in agents:
        for _, data in a.spool.pending():
            for frame in orjson.loads(data)["frames"]:
                n = len(frame["sm_util"])
                allocs = frame["allocations"]
                assert sum(x["share_milli"] for x in allocs) <= 1000
                shared_seconds += n * (len(allocs) > 1)
                for x in allocs:
                    measured_tenant[x["tenant"]] += n * x["share_milli"]
                    measured_job[(x["tenant"], x["job"])] += n * x["share_milli"]
        a.spool.close()
    # then milli-GPU-seconds per tenant and per job equal the file's, exactly
    per_tenant, per_job = truth_from_file(pods)
    assert measured_tenant == per_tenant
    assert measured_job == per_job
    assert fleet.ground_truth().per_tenant_milli() == per_tenant
    # and the replay did pack several pods onto one GPU
    assert shared_seconds > 0


def test_a_gpu_limit_drops_pods_from_replay_and_truth_alike(tmp_path: Path) -> None:
    pods = tmp_path / "pods.csv"
    write_pod_list(pods, seed=3)
    fleet = OpenbFleet(pods, start=START, duration_s=3600, window_offset_s=WINDOW[0], max_gpus=4)
    assert fleet.dropped > 0 and fleet.gpu_count == 4
    truth = fleet.ground_truth()
    counted: Counter[str] = Counter()
    for sampler in fleet.samplers():
        for ts in range(fleet.start, fleet.end):
            for d in sampler.seconds(ts):
                for s in d.allocations:
                    counted[s.tenant] += s.milli
    assert counted == truth.per_tenant_milli()
    assert truth.allocated_milli_seconds + truth.idle_milli == 4 * 3600 * 1000


def test_a_file_not_in_the_format_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "pods.csv"
    bad.write_text("name,num_gpu\nx,1\n")
    with pytest.raises(OpenbFormatError, match="header"):
        OpenbFleet(bad)
    bad.write_text(",".join(HEADER) + "\np,1,1,2,500,,LS,Running,0,10,0\n")
    with pytest.raises(OpenbFormatError, match=r"pods.csv:2: num_gpu 2 with gpu_milli 500"):
        OpenbFleet(bad)
