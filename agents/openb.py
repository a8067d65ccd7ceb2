"""Replay of fractional-GPU pods in the format of Alibaba's cluster-trace-gpu-v2023 ("openb").

The pod list (``openb_pod_list_*.csv`` in github.com/alibaba/clusterdata,
``cluster-trace-gpu-v2023/csv``) has the header::

    name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time

``num_gpu`` is 0..8 GPUs; ``gpu_milli`` is the share of one GPU for GPU-sharing pods
(``num_gpu == 1``), 1000 otherwise; times are trace seconds, and ``scheduled_time`` is empty
for a pod that never ran (Pending). What the replay does with it:

- A pod holds its GPUs over ``[scheduled_time, deletion_time)``; a pod never scheduled, or
  deleted the second it was scheduled, holds nothing; a CPU-only pod (``num_gpu == 0``) is
  not a GPU pod.
- Placement (the trace names no node or GPU): pods in order of start (then end, then name),
  a GPU-sharing pod (``num_gpu == 1``, ``gpu_milli < 1000``) on the lowest-numbered GPU whose
  shares in use leave room for it (first fit, shares summing to at most 1000), a whole-GPU pod
  on the ``num_gpu`` lowest-numbered GPUs wholly free. A pod that does not fit under
  ``max_gpus`` is left out of replay and ground truth alike, and counted in
  :attr:`OpenbFleet.dropped`.
- Tenant: the pod's ``qos`` class (``LS``, ``BE``, ``Burstable``, ``Guaranteed``), prefixed
  ``openb-``; job: the pod's name. The trace has no tenants; QoS classes are how the cluster
  sold its capacity, so they stand in for customers.
- Every GPU is one model (``gpu_model``): the trace's GPU types (``G1``..``G3``, ``V100M32``,
  ...) are internal codes without prices. Utilization is a flat per-pod value (a hash of the
  name); the trace has none.

The file is read at run time from wherever it is; none of it is copied into the repository.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

from agents.errors import AgentError
from agents.sampler import GpuInfo
from agents.schedule import GPU_MODELS, ScheduledFleet, Segment, gpu_uuid, mix64
from agents.trace import FlatProfile
from schemas.frame import WHOLE

#: The pod list's header, as in the published files.
HEADER = [
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
]


class OpenbFormatError(AgentError, ValueError):
    """The pod list is not in the openb format; the message names the row."""


@dataclass(frozen=True, slots=True)
class OpenbPod:
    """One GPU pod of the list, in trace seconds, [start, end)."""

    name: str
    qos: str
    num_gpu: int
    gpu_milli: int
    start: int
    end: int

    @property
    def shared(self) -> bool:
        return self.num_gpu == 1 and self.gpu_milli < WHOLE


def read_pods(path: Path) -> list[OpenbPod]:
    """The GPU pods that ran (scheduled, with a non-empty lifetime), in file order."""
    out: list[OpenbPod] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise OpenbFormatError(f"{path}: expected the header {','.join(HEADER)}")
        col = {name: i for i, name in enumerate(HEADER)}
        for n, row in enumerate(reader, start=2):
            try:
                num_gpu = int(row[col["num_gpu"]])
                milli = int(row[col["gpu_milli"]] or 0)
                scheduled = row[col["scheduled_time"]]
                deleted = int(float(row[col["deletion_time"]]))
            except (ValueError, IndexError) as exc:
                raise OpenbFormatError(f"{path}:{n}: {exc}") from None
            if num_gpu == 0 or not scheduled:
                continue  # CPU-only, or never ran
            if not (1 <= num_gpu <= 64 and 1 <= milli <= WHOLE) or (num_gpu > 1 and milli != WHOLE):
                raise OpenbFormatError(
                    f"{path}:{n}: num_gpu {num_gpu} with gpu_milli {milli} (a share is of one GPU)"
                )
            start = int(float(scheduled))
            if start < deleted:
                out.append(
                    OpenbPod(row[col["name"]], row[col["qos"]], num_gpu, milli, start, deleted)
                )
    return out


def place(pods: list[OpenbPod], max_gpus: int | None) -> tuple[list[list[list[OpenbPod]]], int]:
    """Per GPU its tracks (each a list of pods that never overlap), and how many pods did not
    fit. See the module docstring for the rule."""
    gpus: list[list[list[OpenbPod]]] = []
    running: list[list[OpenbPod]] = []  # per GPU, the pods on it now
    dropped = 0
    for pod in sorted(pods, key=lambda p: (p.start, p.end, p.name)):
        for now in running:
            now[:] = [p for p in now if p.end > pod.start]
        chosen = _fit(pod, running, max_gpus)
        if chosen is None:
            dropped += 1
            continue
        for g in chosen:
            while g >= len(gpus):
                gpus.append([])
                running.append([])
            running[g].append(pod)
            # the first track free at the pod's start, else a new one
            track = next((t for t in gpus[g] if t[-1].end <= pod.start), None)
            if track is None:
                gpus[g].append([pod])
            else:
                track.append(pod)
    return gpus, dropped


def _fit(pod: OpenbPod, running: list[list[OpenbPod]], max_gpus: int | None) -> list[int] | None:
    limit = max_gpus if max_gpus is not None else len(running) + pod.num_gpu
    used = [sum(p.gpu_milli for p in now) for now in running]
    used += [0] * (max(limit - len(used), 0))
    if pod.shared:
        # first fit among GPUs already shared, or free; never onto a whole-GPU pod's GPU
        for g in range(limit):
            whole_there = g < len(running) and any(not p.shared for p in running[g])
            if not whole_there and used[g] + pod.gpu_milli <= WHOLE:
                return [g]
        return None
    free = [g for g in range(limit) if used[g] == 0]
    return free[: pod.num_gpu] if len(free) >= pod.num_gpu else None


class OpenbFleet(ScheduledFleet):
    """The pods of an openb pod list overlapping the replay window, placed on virtual GPUs.

    Second ``ts`` of the fleet is trace second ``window_offset_s + (ts - start)``; pods are
    clipped to the window before placement, so a pod that ended before it holds no GPU."""

    def __init__(
        self,
        pod_list: Path,
        start: int = 1_767_225_600,
        duration_s: int = 3600,
        window_offset_s: int = 0,
        gpus_per_node: int = 8,
        max_gpus: int | None = None,
        gpu_model: str = "NVIDIA A100-SXM4-80GB",
    ) -> None:
        if gpu_model not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {gpu_model!r}; known: {sorted(GPU_MODELS)}")
        if duration_s < 1 or gpus_per_node < 1 or (max_gpus is not None and max_gpus < 1):
            raise ValueError("duration_s, gpus_per_node and max_gpus must be positive")
        if not Path(pod_list).is_file():
            raise OpenbFormatError(f"pod list {pod_list} not found")
        super().__init__(start, start + duration_s)
        spec = GPU_MODELS[gpu_model]
        lo, hi = window_offset_s, window_offset_s + duration_s
        offset = window_offset_s - start  # epoch ts + offset = trace second
        pods = [
            OpenbPod(p.name, p.qos, p.num_gpu, p.gpu_milli, max(p.start, lo), min(p.end, hi))
            for p in read_pods(Path(pod_list))
            if p.start < hi and p.end > lo
        ]
        per_gpu, self.dropped = place(pods, max_gpus)
        self.pods = len(pods) - self.dropped
        n_gpus = max_gpus or -(-max(len(per_gpu), 1) // gpus_per_node) * gpus_per_node
        per_gpu += [[] for _ in range(n_gpus - len(per_gpu))]
        for first in range(0, n_gpus, gpus_per_node):
            gpus, tracks, keys = [], [], []
            for idx, g in enumerate(range(first, min(first + gpus_per_node, n_gpus))):
                gpus.append(GpuInfo(gpu_uuid("openb", g), spec.name, idx, None, spec.memory_total))
                keys.append(mix64(0x0BE7B, g))
                tracks.append([[_segment(p, offset) for p in t] for t in per_gpu[g]] or [[]])
            node = f"openb-node-{first // gpus_per_node:04d}"
            self._add_node(node, gpus, tracks, keys, [spec] * len(gpus))


def tenant_of(qos: str) -> str:
    return f"openb-{qos or 'unknown'}"


def _segment(pod: OpenbPod, offset: int) -> Segment:
    h = zlib.crc32(pod.name.encode())
    profile = FlatProfile(float(20 + h % 70), 0.1 + (h >> 8) % 500 / 1000)
    return Segment(
        pod.start - offset, pod.end - offset, tenant_of(pod.qos), pod.name, None, profile,
        pod.gpu_milli,
    )  # fmt: skip
