"""Trace replay: real GPU allocations from Alibaba's production clusters, as a fleet of samplers.

Allocations come from ``alibaba-gpu-v2025-dlrm/disaggregated_DLRM_trace.csv`` (NSDI 2025): each
``role=HN`` instance holds one GPU from ``scheduled_time`` (else ``creation_time``; empty = alive
before the trace starts) to ``deletion_time`` (empty = alive at its end). Tenant = ``app_name``,
job = ``instance_sn``. The trace names no GPUs, so instances are packed onto virtual GPUs (one
instance per GPU at a time, first fit by start time) grouped into nodes of ``gpus_per_node``.

Activity comes from a *different, unrelated* trace that we combine with it:
``alibaba-genai-v2026-gpu-util/pod_gpu_duty_cycle_first6h.csv`` (per-minute GPU utilization of
114 Stable Diffusion serving containers). Each instance is mapped deterministically to one
container and replays its curve (each value held for its minute, the 6 h cycled). The DLRM trace
has no utilization, power or GPU model; the curves and the power model are ours, not Alibaba's.

Replay time: second ``ts`` of the fleet is trace second ``window_offset_s + (ts - start)``.
The data is read from ``../shared/data`` at run time and never copied into the repository
(its terms allow research use, not redistribution).
"""

from __future__ import annotations

import csv
import heapq
import zlib
from dataclasses import dataclass
from pathlib import Path

from agents.errors import AgentError
from agents.sampler import GpuInfo
from agents.schedule import (
    GPU_MODELS,
    ActivityProfile,
    ScheduledFleet,
    Segment,
    gpu_uuid,
    mix64,
)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DLRM_CSV = Path("alibaba-gpu-v2025-dlrm") / "disaggregated_DLRM_trace.csv"
UTIL_CSV = Path("alibaba-genai-v2026-gpu-util") / "pod_gpu_duty_cycle_first6h.csv"
#: Last second of the DLRM trace window; instances with no deletion time live until here.
TRACE_END_S = 2_677_541
CURVE_MINUTES = 360  # the utilization file holds the first 6 hours


class TraceDataMissing(AgentError, FileNotFoundError):
    """The traces are not at the given path (they live outside the repository)."""


@dataclass(frozen=True, slots=True)
class TraceInstance:
    """One GPU instance of the DLRM trace, in trace seconds, [start, end)."""

    row: int
    instance: str
    app: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class CurveProfile:
    """Replays a container's per-minute utilization curve; ``offset`` maps epoch ts to trace s."""

    curve: tuple[float, ...]
    offset: int
    phase: int
    mem_fraction: float

    def sm_util(self, ts: int, noise: int) -> float:
        return self.curve[((ts + self.offset) // 60 + self.phase) % CURVE_MINUTES]


@dataclass(frozen=True, slots=True)
class FlatProfile:
    """Constant utilization per instance: replay without reading the utilization trace."""

    util: float
    mem_fraction: float

    def sm_util(self, ts: int, noise: int) -> float:
        return self.util


def _second(field: str) -> int | None:
    return int(float(field)) if field else None


def read_instances(path: Path) -> list[TraceInstance]:
    """The GPU (``role=HN``) instances with a non-empty lifetime, in file order."""
    out: list[TraceInstance] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        col = {name: i for i, name in enumerate(next(reader))}
        role, sn, app = col["role"], col["instance_sn"], col["app_name"]
        created, scheduled, deleted = (
            col["creation_time"],
            col["scheduled_time"],
            col["deletion_time"],
        )
        for n, r in enumerate(reader):
            if r[role] != "HN":
                continue
            start = _second(r[scheduled])
            if start is None:
                start = _second(r[created])
            end = _second(r[deleted])
            s = 0 if start is None else start
            e = TRACE_END_S if end is None else end
            if s < e:  # a few instances are deleted the second they are scheduled: no GPU time
                out.append(TraceInstance(n, r[sn], r[app], s, e))
    return out


def read_curves(path: Path) -> list[tuple[float, ...]]:
    """Per container (sorted by its hashed id), 360 per-minute utilization values; a minute with
    no sample holds the previous value, as a scrape-based monitor would show it."""
    rows: dict[str, list[tuple[int, float]]] = {}
    t0: int | None = None
    with path.open(newline="") as f:
        reader = csv.reader(f)
        col = {name: i for i, name in enumerate(next(reader))}
        v, t, c = col["value"], col["timestamp_anon"], col["container_ip"]
        for r in reader:
            ts = int(float(r[t]))
            t0 = ts if t0 is None else min(t0, ts)
            rows.setdefault(r[c], []).append((ts, min(100.0, max(0.0, float(r[v])))))
    curves: list[tuple[float, ...]] = []
    for container in sorted(rows):
        minute_values = {(ts - (t0 or 0)) // 60: val for ts, val in sorted(rows[container])}
        held, curve = 0.0, []
        for m in range(CURVE_MINUTES):
            held = minute_values.get(m, held)
            curve.append(round(held, 1))
        curves.append(tuple(curve))
    return curves


def pack(
    instances: list[TraceInstance], max_gpus: int | None
) -> tuple[list[list[TraceInstance]], int]:
    """First fit by start time: each instance goes to the lowest-numbered GPU free at its start
    (ties by start, end, then a fixed hash of the file row, so the packing is deterministic and
    a ``max_gpus`` cap keeps a spread of services rather than the first ones in the file).
    Returns per-GPU instances and how many did not fit under ``max_gpus``."""
    gpus: list[list[TraceInstance]] = []
    free: list[int] = []  # heap of GPU numbers free now
    busy: list[tuple[int, int]] = []  # heap of (end, GPU number)
    dropped = 0
    for inst in sorted(
        instances, key=lambda i: (i.start, i.end, (i.row * 2654435761) % 2**32, i.row)
    ):
        while busy and busy[0][0] <= inst.start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            g = heapq.heappop(free)
        elif max_gpus is None or len(gpus) < max_gpus:
            g = len(gpus)
            gpus.append([])
        else:
            dropped += 1
            continue
        gpus[g].append(inst)
        heapq.heappush(busy, (inst.end, g))
    return gpus, dropped


class TraceFleet(ScheduledFleet):
    """The DLRM trace's GPU instances overlapping the replay window, on virtual GPUs.

    ``max_gpus`` caps the fleet for small runs: instances that do not fit are left out of both
    the replay and the ground truth, and counted in :attr:`dropped`. Without it the fleet has as
    many GPUs as the busiest moment of the window needs, rounded up to whole nodes.
    """

    def __init__(
        self,
        data_dir: Path = DEFAULT_DATA_DIR,
        start: int = 1_767_225_600,
        duration_s: int = 3600,
        window_offset_s: int = 0,
        gpus_per_node: int = 8,
        max_gpus: int | None = None,
        with_utilization: bool = True,
        gpu_model: str = "NVIDIA A100-SXM4-80GB",
    ) -> None:
        if gpu_model not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {gpu_model!r}; known: {sorted(GPU_MODELS)}")
        if duration_s < 1 or gpus_per_node < 1 or (max_gpus is not None and max_gpus < 1):
            raise ValueError("duration_s, gpus_per_node and max_gpus must be positive")
        if not 0 <= window_offset_s < window_offset_s + duration_s <= TRACE_END_S:
            raise ValueError(
                f"replay window [{window_offset_s}, {window_offset_s + duration_s}) "
                f"is outside the trace's 0..{TRACE_END_S} s"
            )
        dlrm = Path(data_dir) / DLRM_CSV
        util = Path(data_dir) / UTIL_CSV
        for p in (dlrm, *((util,) if with_utilization else ())):
            if not p.is_file():
                raise TraceDataMissing(f"trace file {p} not found (see shared/data/README.md)")
        super().__init__(start, start + duration_s)
        spec = GPU_MODELS[gpu_model]
        lo, hi = window_offset_s, window_offset_s + duration_s
        self.offset = window_offset_s - start  # epoch ts + offset = trace second
        window = [i for i in read_instances(dlrm) if i.start < hi and i.end > lo]
        # Clip before packing: an instance that ended before the window must not hold a GPU.
        clipped = [
            TraceInstance(i.row, i.instance, i.app, max(i.start, lo), min(i.end, hi))
            for i in window
        ]
        per_gpu, self.dropped = pack(clipped, max_gpus)
        self.instances = len(clipped) - self.dropped
        curves = read_curves(util) if with_utilization else []
        n_gpus = max_gpus or -(-max(len(per_gpu), 1) // gpus_per_node) * gpus_per_node
        per_gpu += [[] for _ in range(n_gpus - len(per_gpu))]
        for first in range(0, n_gpus, gpus_per_node):
            node = first // gpus_per_node
            gpus, timelines, keys = [], [], []
            for idx, g in enumerate(range(first, min(first + gpus_per_node, n_gpus))):
                gpus.append(GpuInfo(gpu_uuid("trace", g), spec.name, idx, None, spec.memory_total))
                keys.append(mix64(0x7ACE, g))
                timelines.append([self._segment(i, curves) for i in per_gpu[g]])
            tracks = [[t] for t in timelines]
            self._add_node(f"trace-node-{node:04d}", gpus, tracks, keys, [spec] * len(gpus))

    def _segment(self, inst: TraceInstance, curves: list[tuple[float, ...]]) -> Segment:
        # crc32, not hash(): str hashes change per process, the mapping must not.
        h = zlib.crc32(inst.instance.encode())
        mem = 0.3 + (h >> 8) % 600 / 1000
        profile: ActivityProfile
        if curves:
            profile = CurveProfile(
                curves[h % len(curves)], self.offset, (h >> 16) % CURVE_MINUTES, mem
            )
        else:
            profile = FlatProfile(float(20 + h % 70), mem)
        return Segment(
            inst.start - self.offset, inst.end - self.offset, inst.app, inst.instance, None, profile
        )
