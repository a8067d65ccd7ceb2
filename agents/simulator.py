"""A simulated GPU fleet: tenants' jobs on nodes of GPUs, deterministic from a seed.

The fleet is generated up front as a *schedule*: per GPU a timeline of allocations (tenant, job,
billing class, activity profile) and idle gaps covering ``[start, start + duration_s)``. The node
samplers answer ``sample(ts)`` from that schedule, and :meth:`ScheduledFleet.ground_truth` counts
the same schedule without sampling, so the two are independent witnesses of one truth.

Determinism: every per-second value (utilization jitter, power noise) is a hash of
``(seed, gpu, ts)``, never a stateful RNG, so a sample does not depend on which seconds were
asked before (an agent replaying after a crash gets identical samples). The seeded RNG is used
only while building the schedule, in a fixed order.

Speed: a simulated day of 4 x 8 GPUs is 2.76 million samples. Samples are built with
``GpuSecond.unchecked`` from a complete field dict (values are trusted and within the contract;
several times cheaper than ``model_construct``), and each GPU keeps a cursor on its current
timeline segment so the usual lookup is one comparison.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from agents.sampler import GpuInfo, GroundTruth, Sampler
from schemas.usage import BillingClass, GpuSecond

DEFAULT_TENANTS: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli")
#: 2026-01-01T00:00:00Z: a fixed default so the same seed gives the same samples on any day.
DEFAULT_START = 1_767_225_600
DAY_S = 86_400

#: Tenants whose jobs carry a billing class, so billing has every class to show.
RESERVED_TENANTS = frozenset({"umbrella"})
SPOT_SHARE = {"hooli": 0.6}

#: Namespace of simulated and replayed GPU uuids (deterministic, distinct from real ones).
GPU_NAMESPACE = uuid.UUID("0b6f3c1e-5a47-5c2d-8e90-2f4b7d1a6c33")

_M64 = (1 << 64) - 1
_MIB = 1024**2


@dataclass(frozen=True, slots=True)
class GpuModelSpec:
    """What the simulation needs to know about a GPU model (NVML name and memory as NVML reports)."""

    name: str
    memory_total: int
    idle_w: float
    max_w: float


H100 = GpuModelSpec("NVIDIA H100 80GB HBM3", 81_559 * _MIB, 70.0, 700.0)
A100 = GpuModelSpec("NVIDIA A100-SXM4-80GB", 81_920 * _MIB, 55.0, 400.0)
GPU_MODELS: dict[str, GpuModelSpec] = {s.name: s for s in (H100, A100)}


_MIX_A = 0x9E3779B97F4A7C15
_MIX_B = 0xD1B54A32D192ED03


def mix64(a: int, b: int) -> int:
    """A 64-bit hash of two integers (splitmix64 finalizer): cheap, stateless, order-free noise."""
    x = (a * _MIX_A + b * _MIX_B) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def gpu_uuid(*parts: object) -> str:
    return "GPU-" + str(uuid.uuid5(GPU_NAMESPACE, "/".join(map(str, parts))))


class ActivityProfile(Protocol):
    """How busy an allocation keeps its GPU; ``noise`` is a per-(gpu, second) 64-bit hash."""

    @property
    def mem_fraction(self) -> float:
        """Share of the GPU's memory the allocation holds (constant over its life)."""
        ...

    def sm_util(self, ts: int, noise: int) -> float: ...


@dataclass(frozen=True, slots=True)
class JobProfile:
    """A job's activity: a base SM utilization with jitter, and optionally stretches of zero
    (allocated but inactive: the GPU is billed yet does no work, which utilization must show)."""

    base_util: float
    spread: float
    mem_fraction: float
    key: int
    start: int
    inactive_period_s: int = 0  # 0: no inactive stretches
    inactive_per_mille: int = 0

    def sm_util(self, ts: int, noise: int) -> float:
        if (
            self.inactive_period_s
            and mix64(self.key, (ts - self.start) // self.inactive_period_s) % 1000
            < self.inactive_per_mille
        ):
            return 0.0
        u = self.base_util + ((noise & 0xFFFF) * (1 / 65535) - 0.5) * self.spread
        return 0.0 if u < 0.0 else 100.0 if u > 100.0 else u


class Segment(NamedTuple):
    """One stretch of one GPU's timeline: allocated (tenant and job set) or idle (all None)."""

    start: int
    end: int
    tenant: str | None = None
    job: str | None = None
    billing_class: BillingClass | None = None
    profile: ActivityProfile | None = None


def fill_timeline(allocs: Sequence[Segment], start: int, end: int) -> list[Segment]:
    """Clip non-overlapping allocations to [start, end) and fill the gaps with idle segments, so
    every second of the window belongs to exactly one segment."""
    out: list[Segment] = []
    t = start
    for a in sorted(allocs, key=lambda s: s.start):
        s, e = max(a.start, start), min(a.end, end)
        if s >= e:
            continue
        if s < t:
            raise ValueError(f"allocation {a.job} overlaps the previous one at {s}")
        if s > t:
            out.append(Segment(t, s))
        out.append(a._replace(start=s, end=e))
        t = e
    if t < end:
        out.append(Segment(t, end))
    return out


class _Lane:
    """One GPU's timeline with a cursor. The current segment's fields are cached on the lane, so
    sampling seconds in order costs one comparison and a few attribute loads per GPU."""

    __slots__ = (
        "info", "uuid", "model", "mem_total", "idle_w", "span_w", "salt", "starts", "segs", "mem",
        "cur_start", "cur_end", "tenant", "job", "billing_class", "profile", "mem_used",
    )  # fmt: skip

    def __init__(self, info: GpuInfo, spec: GpuModelSpec, key: int, segs: list[Segment]) -> None:
        self.info, self.segs = info, segs
        self.uuid, self.model, self.mem_total = info.uuid, spec.name, spec.memory_total
        self.idle_w, self.span_w = spec.idle_w, (spec.max_w - spec.idle_w) * 0.01
        self.salt = key * _MIX_A  # the first step of mix64(key, ts), hoisted out of the loop
        self.starts = [s.start for s in segs]
        # Memory held by an allocation is constant for its life; precomputed per segment.
        self.mem = [
            0
            if s.profile is None
            else int(s.profile.mem_fraction * spec.memory_total) // _MIB * _MIB
            for s in segs
        ]
        self.cur_start = self.cur_end = 0

    def seek(self, ts: int) -> None:
        i = bisect_right(self.starts, ts) - 1
        if i < 0 or ts >= self.segs[-1].end:
            raise ValueError(
                f"second {ts} is outside the schedule "
                f"[{self.segs[0].start}, {self.segs[-1].end}) of {self.uuid}"
            )
        seg = self.segs[i]
        self.cur_start, self.cur_end = seg.start, seg.end
        self.tenant, self.job, self.billing_class = seg.tenant, seg.job, seg.billing_class
        self.profile, self.mem_used = seg.profile, self.mem[i]


class ScheduleSampler:
    """A node's :class:`~agents.sampler.Sampler` that answers from a precomputed schedule."""

    def __init__(self, node_id: str, lanes: Sequence[_Lane]) -> None:
        self.node_id = node_id
        self._lanes = list(lanes)
        self._gpus = tuple(lane.info for lane in lanes)

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def close(self) -> None:
        pass

    def sample(self, ts: int) -> list[GpuSecond]:
        unchecked = GpuSecond.unchecked
        ts_salt = ts * _MIX_B
        out: list[GpuSecond] = []
        for lane in self._lanes:
            if not lane.cur_start <= ts < lane.cur_end:
                lane.seek(ts)
            # mix64(key, ts), inlined: this loop runs millions of times per simulated day
            x = (lane.salt + ts_salt) & _M64
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
            n = x ^ (x >> 31)
            prof = lane.profile
            if prof is None:
                sm = mem_util = 0.0
            else:
                sm = round(prof.sm_util(ts, n), 1)
                mem_util = round(sm * 0.55, 1)
            # Power: idle floor + a share proportional to SM load, +-2 W sensor noise.
            power = round(lane.idle_w + lane.span_w * sm + ((n >> 16) & 0xFF) * (4 / 255) - 2.0, 1)
            # Energy over the second differs from the power reading by up to +-2 %: far inside
            # the contract's power/energy consistency rule (factor 3 plus 50 J).
            energy = round(power * (1.0 + (((n >> 24) & 0xFFF) * (1 / 4095) - 0.5) * 0.04), 2)
            # Every field, in declaration order (the same dict model_construct would build).
            out.append(
                unchecked(
                    {
                        "gpu_uuid": lane.uuid,
                        "mig_uuid": None,
                        "gpu_model": lane.model,
                        "ts": ts,
                        "tenant": lane.tenant,
                        "job": lane.job,
                        "billing_class": lane.billing_class,
                        "sm_util": sm,
                        "mem_util": mem_util,
                        "mem_used": lane.mem_used,
                        "mem_total": lane.mem_total,
                        "power_w": power,
                        "energy_j": energy,
                        "temp_c": round(31.0 + sm * 0.45 + ((n >> 40) & 0xFF) * (2 / 255), 1),
                        "flags": (),
                    }
                )
            )
        return out


class ScheduledFleet:
    """Nodes of GPUs with per-GPU timelines: samplers and ground truth from one schedule."""

    start: int
    end: int

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        # node_id -> (gpus, per-GPU filled timelines, per-GPU noise keys, per-GPU specs)
        self._nodes: list[
            tuple[str, list[GpuInfo], list[list[Segment]], list[int], list[GpuModelSpec]]
        ] = []

    def _add_node(
        self,
        node_id: str,
        gpus: list[GpuInfo],
        timelines: list[list[Segment]],
        keys: list[int],
        specs: list[GpuModelSpec],
    ) -> None:
        filled = [fill_timeline(t, self.start, self.end) for t in timelines]
        self._nodes.append((node_id, gpus, filled, keys, specs))

    def samplers(self) -> list[Sampler]:
        """One sampler per node; each call gives fresh cursors, so agents never share state."""
        return [
            ScheduleSampler(
                node_id,
                [_Lane(g, sp, k, t) for g, t, k, sp in zip(gpus, tl, keys, specs, strict=True)],
            )
            for node_id, gpus, tl, keys, specs in self._nodes
        ]

    def schedule(self) -> Iterator[tuple[str, GpuInfo, Segment]]:
        """Every (node id, GPU, segment) of the window, idle segments included, in node order."""
        for node_id, gpus, timelines, _, _ in self._nodes:
            for gpu, segs in zip(gpus, timelines, strict=True):
                for seg in segs:
                    yield node_id, gpu, seg

    @property
    def node_ids(self) -> list[str]:
        return [n[0] for n in self._nodes]

    def gpus(self) -> list[GpuInfo]:
        """Every GPU of the fleet, node by node (``len()`` is the fleet size; ``.model`` each model)."""
        return [g for n in self._nodes for g in n[1]]

    @property
    def gpu_count(self) -> int:
        return sum(len(n[1]) for n in self._nodes)

    def ground_truth(self, start: int | None = None, end: int | None = None) -> GroundTruth:
        """Allocated GPU-seconds per (tenant, job, model, hour) and idle seconds per GPU over
        [start, end) (default: the whole window), counted from the schedule, not from samples."""
        lo = self.start if start is None else max(start, self.start)
        hi = self.end if end is None else min(end, self.end)
        truth = GroundTruth()
        for _, gpus, timelines, _, _ in self._nodes:
            for gpu, segs in zip(gpus, timelines, strict=True):
                for seg in segs:
                    s, e = max(seg.start, lo), min(seg.end, hi)
                    if s >= e:
                        continue
                    if seg.tenant is None or seg.job is None:
                        truth.idle[gpu.uuid] += e - s
                    else:
                        truth.add_allocated(seg.tenant, seg.job, gpu.model, s, e)
        return truth


def _load_factor(t: int) -> float:
    """The daily load curve: weekday UTC business hours (08-18) are busiest."""
    weekday = (t // DAY_S + 3) % 7 < 5  # 1970-01-01 was a Thursday (3 with Monday = 0)
    hour = t % DAY_S // 3600
    if 8 <= hour < 18:
        return 1.0 if weekday else 0.45
    return 0.35 if weekday else 0.25


class SimulatedFleet(ScheduledFleet):
    """``nodes`` x ``gpus_per_node`` GPUs; nodes alternate H100 and A100 (``models``).

    Per node, jobs arrive as a Poisson process thinned by :func:`_load_factor` at
    ``jobs_per_hour`` per node at peak; a job asks for 1, 2, 4 or 8 GPUs for minutes to hours
    and waits (up to ``max_wait_s``, else it is abandoned) until that many GPUs are free.
    Jobs arriving before ``start`` are simulated too, so the window opens on a busy fleet.
    """

    MIN_JOB_S = 300
    MAX_JOB_S = 6 * 3600

    def __init__(
        self,
        seed: int = 7,
        nodes: int = 4,
        gpus_per_node: int = 8,
        tenants: Sequence[str] = DEFAULT_TENANTS,
        start: int = DEFAULT_START,
        duration_s: int = DAY_S,
        *,
        models: Sequence[str] = (H100.name, A100.name),
        jobs_per_hour: float = 3.5,
        max_wait_s: int = 3600,
    ) -> None:
        if nodes < 1 or gpus_per_node < 1 or duration_s < 1 or not tenants:
            raise ValueError(
                "nodes, gpus_per_node and duration_s must be positive, tenants non-empty"
            )
        unknown = [m for m in models if m not in GPU_MODELS]
        if unknown or not models:
            raise ValueError(f"unknown GPU models {unknown}; known: {sorted(GPU_MODELS)}")
        super().__init__(start, start + duration_s)
        self.seed = seed
        self.tenants = tuple(tenants)
        self.jobs = 0
        rng = random.Random(f"gpumeter-sim/{seed}")
        job_numbers: dict[str, int] = {}
        for node in range(nodes):
            spec = GPU_MODELS[models[node % len(models)]]
            node_id = f"sim-node-{node:02d}"
            gpus = [
                GpuInfo(gpu_uuid(seed, node, i), spec.name, i, None, spec.memory_total)
                for i in range(gpus_per_node)
            ]
            timelines = self._schedule(rng, gpus_per_node, jobs_per_hour, max_wait_s, job_numbers)
            keys = [mix64(seed, node * 4096 + i) for i in range(gpus_per_node)]
            self._add_node(node_id, gpus, timelines, keys, [spec] * gpus_per_node)

    def _schedule(
        self,
        rng: random.Random,
        n: int,
        jobs_per_hour: float,
        max_wait_s: int,
        job_numbers: dict[str, int],
    ) -> list[list[Segment]]:
        # Zipf-like tenant shares: a few big customers and a tail, as real fleets have.
        weights = [1.0 / (i + 1) for i in range(len(self.tenants))]
        peak_rate = jobs_per_hour / 3600
        timelines: list[list[Segment]] = [[] for _ in range(n)]
        free_at = [self.start - self.MAX_JOB_S] * n
        t = float(self.start - self.MAX_JOB_S)
        log_min, log_max = math.log(self.MIN_JOB_S), math.log(self.MAX_JOB_S)
        while True:
            t += rng.expovariate(peak_rate)
            if t >= self.end:
                return timelines
            if rng.random() >= _load_factor(int(t)):
                continue  # thinning: fewer arrivals off-hours
            tenant = rng.choices(self.tenants, weights)[0]
            k = min(n, rng.choices((1, 2, 4, 8), (0.45, 0.3, 0.15, 0.1))[0])
            duration = int(math.exp(rng.uniform(log_min, log_max)))
            # The k GPUs free soonest (ties: lowest index) keep each GPU's timeline non-overlapping.
            chosen = sorted(range(n), key=lambda i: (free_at[i], i))[:k]
            begin = max(int(t), max(free_at[i] for i in chosen))
            profile_draws = (rng.random(), rng.random(), rng.random(), rng.random(), rng.random())
            spot = rng.random()
            if begin - int(t) > max_wait_s:
                continue  # the tenant gave up waiting: no allocation
            end = begin + duration
            for i in chosen:
                free_at[i] = end
            if end <= self.start:
                continue  # finished before the window: never seen, so it gets no job id
            job_numbers[tenant] = job_numbers.get(tenant, 0) + 1
            job = f"{tenant}-j{job_numbers[tenant]:04d}"
            billing_class: BillingClass | None = None
            if tenant in RESERVED_TENANTS:
                billing_class = "reserved"
            elif spot < SPOT_SHARE.get(tenant, 0.0):
                billing_class = "spot"
            # The job's noise key comes from its ordinal: deterministic, unlike hash(str).
            profile = self._profile(profile_draws, mix64(self.seed, (1 << 32) + self.jobs), begin)
            self.jobs += 1
            seg = Segment(begin, end, tenant, job, billing_class, profile)
            for i in chosen:
                timelines[i].append(seg)

    @staticmethod
    def _profile(d: tuple[float, float, float, float, float], key: int, start: int) -> JobProfile:
        mem = 0.25 + 0.7 * d[1]
        if d[0] < 0.05:  # allocated and never used: pure waste, billed all the same
            return JobProfile(0.0, 0.0, 0.02, key, start)
        base = 35.0 + 63.0 * d[2]
        spread = 6.0 + 14.0 * d[3]
        if d[0] < 0.25:  # notebook-like: works in bursts, sits at 0 % for whole stretches
            period = (600, 900, 1800, 3600)[int(d[4] * 4)]
            return JobProfile(base, spread, mem, key, start, period, 300 + int(d[4] * 1000) % 500)
        return JobProfile(base, spread, mem, key, start)
