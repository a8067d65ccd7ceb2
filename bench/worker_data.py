"""The worker bench's data: contract-v2 records from the simulated fleet (shared GPUs, whole
GPUs and a MIG GPU per node), with their ground truth counted from the device seconds
themselves (not from the records, not by the worker's code), and the floor's handler."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from agents.framer import Framer
from agents.simulator import SimulatedFleet
from schemas.frame import encode_frames

IDLE = "__idle__"


@dataclass
class BenchData:
    records: list[tuple[bytes, bytes, int]]  # (key, value, device-seconds)
    #: milli-GPU-seconds per tenant (idle included), counted from the device seconds
    milli_by_tenant: Counter[str] = field(default_factory=Counter)
    devices: int = 0

    @property
    def seconds(self) -> int:
        return sum(n for *_, n in self.records)

    @property
    def bytes(self) -> int:
        return sum(len(v) for _, v, _ in self.records)


def make_records(nodes: int, gpus: int, seconds: int, start: int, flush: int) -> BenchData:
    """One v2 record per node per ``flush`` seconds (frames of up to ``flush`` seconds, as
    ``gpumeter agent --simulate`` sends them), in time order across nodes."""
    fleet = SimulatedFleet(
        nodes=nodes, gpus_per_node=gpus, start=start, duration_s=seconds, shares=True
    )
    samplers = fleet.samplers()
    data = BenchData([])
    truth = data.milli_by_tenant
    seen: set[tuple[str, str | None]] = set()
    for seq, t0 in enumerate(range(start, start + seconds, flush)):
        for sampler in samplers:
            framer = Framer()
            n = 0
            for ts in range(t0, min(t0 + flush, start + seconds)):
                secs = sampler.seconds(ts)
                framer.add(secs)
                n += len(secs)
                for d in secs:
                    seen.add((d.gpu_uuid, d.mig_uuid))
                    held = 0
                    for a in d.allocations:
                        truth[a.tenant] += a.milli
                        held += a.milli
                    if held < 1000:
                        truth[IDLE] += 1000 - held
            payload = encode_frames(
                sampler.node_id, f"bench-{sampler.node_id}", seq, framer.take(), []
            )
            data.records.append((sampler.node_id.encode(), payload, n))
    data.devices = len(seen)
    return data


def floor_handler() -> tuple[Callable[[list], None], dict]:
    """The floor: orjson and a dict aggregate per (tenant, job, share, GPU, minute) of each
    frame's seconds, SM utilization and energy (no validation, no exactness, no store).
    ``state["seconds"]`` counts the device-seconds it saw."""
    agg: dict[tuple, list] = {}
    state: dict = {"agg": agg, "seconds": 0}

    def handle(msgs: list) -> None:
        seen = 0
        for m in msgs:
            doc = orjson.loads(m.value)
            for f in doc["frames"]:
                start = f["start"]
                end = start + len(f["sm_util"])
                seen += end - start
                allocs = f["allocations"] or [{"tenant": IDLE, "job": "", "share_milli": 1000}]
                for minute in range(start - start % 60, end, 60):
                    a = max(start, minute) - start
                    b = min(end, minute + 60) - start
                    sm = sum(f["sm_util"][a:b])
                    energy = sum(round(e * 1000) for e in f["energy_j"][a:b])
                    for al in allocs:
                        key = (al["tenant"], al["job"], al["share_milli"], f["gpu_uuid"], minute)
                        acc = agg.get(key)
                        if acc is None:
                            acc = agg[key] = [0, 0.0, 0]
                        acc[0] += b - a
                        acc[1] += sm
                        acc[2] += energy
        state["seconds"] += seen

    return handle, state
