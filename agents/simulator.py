"""A simulated GPU fleet: tenants' jobs on nodes of GPUs, deterministic from a seed.

The jobs are generated up front into a schedule (:class:`~agents.schedule.ScheduledFleet`: per
device a timeline of allocations and idle gaps covering ``[start, start + duration_s)``), which
answers both the node samplers and the ground truth.

With ``shares=True`` each node also has shared GPUs and a GPU in MIG mode: a shared GPU is
split into fixed slices (500 + 250 + 250, 750 + 250 or 4 x 250 milli-GPU, by node and index), each
slice a track of fractional pods (inference servers, as Alibaba's gpu-share or HAMi place
them), and the MIG GPU is metered through its slices only (3g.40gb + 2g.20gb + 2 x 1g.10gb),
each slice a device of its own with whole-slice jobs. Ground truth is in GPU-seconds held and
in milli-GPU-seconds.

Determinism: the seeded RNG is used only while building the schedule, in a fixed order; every
per-second value is a hash (see :mod:`agents.schedule`), never a stateful RNG.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.sampler import GpuInfo
from agents.schedule import (
    A100,
    GPU_MODELS,
    H100,
    GpuModelSpec,
    ScheduledFleet,
    Segment,
    gpu_uuid,
    mig_spec,
    mix64,
)
from schemas.usage import BillingClass

if TYPE_CHECKING:
    from agents.preemption_sim import InternalDemand, SimulatedPreemption

DEFAULT_TENANTS: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli")
#: 2026-01-01T00:00:00Z: a fixed default so the same seed gives the same samples on any day.
DEFAULT_START = 1_767_225_600
DAY_S = 86_400

#: Tenants whose jobs carry a billing class, so billing has every class to show.
RESERVED_TENANTS = frozenset({"umbrella"})
SPOT_SHARE = {"hooli": 0.6}
#: How a shared GPU is sliced (milli-GPU per track), chosen by node and GPU index.
SHARE_PATTERNS: tuple[tuple[int, ...], ...] = ((500, 250, 250), (750, 250), (250, 250, 250, 250))
#: The MIG layout of a node's MIG GPU: (compute slices of 7, memory GB) per slice.
MIG_LAYOUT: tuple[tuple[int, int], ...] = ((3, 40), (2, 20), (1, 10), (1, 10))


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

    ``shares`` (nodes of at least 3 GPUs): the last GPU is in MIG mode and the quarter before
    it are shared (module docstring); the others take whole-GPU jobs as above.
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
        shares: bool = False,
        internal: str | None = None,
    ) -> None:
        if nodes < 1 or gpus_per_node < 1 or duration_s < 1 or not tenants:
            raise ValueError(
                "nodes, gpus_per_node and duration_s must be positive, tenants non-empty"
            )
        if shares and gpus_per_node < 3:
            raise ValueError(
                f"shares need nodes of at least 3 GPUs (whole, shared, MIG), got {gpus_per_node}"
            )
        unknown = [m for m in models if m not in GPU_MODELS]
        if unknown or not models:
            raise ValueError(f"unknown GPU models {unknown}; known: {sorted(GPU_MODELS)}")
        super().__init__(start, start + duration_s)
        self.seed = seed
        self.tenants = tuple(tenants)
        self.jobs = 0
        # ``internal``: that tenant's jobs preempt spot allocations and use idle whole GPUs
        # (agents/preemption_sim.py, an RNG of its own: the rest of the schedule is unchanged).
        self.internal_demand: InternalDemand | None = None
        if internal is not None:
            from agents.preemption_sim import InternalDemand

            self.internal_demand = InternalDemand(seed, start, start + duration_s, internal)
        rng = random.Random(f"gpumeter-sim/{seed}")
        job_numbers: dict[str, int] = {}
        for node in range(nodes):
            spec = GPU_MODELS[models[node % len(models)]]
            node_id = f"sim-node-{node:02d}"
            n_mig = 1 if shares else 0
            n_shared = max(1, gpus_per_node // 4) if n_mig else 0
            n_whole = gpus_per_node - n_shared - n_mig
            gpus = [
                GpuInfo(gpu_uuid(seed, node, i), spec.name, i, None, spec.memory_total)
                for i in range(n_whole)
            ]
            timelines = self._schedule(rng, n_whole, jobs_per_hour, max_wait_s, job_numbers)
            if self.internal_demand is not None:
                timelines = self.internal_demand.apply(node, gpus, timelines)
            tracks = [[t] for t in timelines]
            keys = [mix64(seed, node * 4096 + i) for i in range(n_whole)]
            specs = [spec] * n_whole
            if n_mig:
                extra = random.Random(f"gpumeter-sim/{seed}/shares/{node}")
                for i in range(n_whole, n_whole + n_shared):
                    gpus.append(
                        GpuInfo(gpu_uuid(seed, node, i), spec.name, i, None, spec.memory_total)
                    )
                    pattern = SHARE_PATTERNS[(node + i) % len(SHARE_PATTERNS)]
                    tracks.append([self._track(extra, m, "s", job_numbers) for m in pattern])
                    keys.append(mix64(seed, node * 4096 + i))
                    specs.append(spec)
                self._add_mig_gpu(
                    extra,
                    seed,
                    node,
                    gpus_per_node - 1,
                    spec,
                    job_numbers,
                    (gpus, tracks, keys, specs),
                )
            self._add_node(node_id, gpus, tracks, keys, specs)

    def _add_mig_gpu(
        self,
        rng: random.Random,
        seed: int,
        node: int,
        index: int,
        spec: GpuModelSpec,
        job_numbers: dict[str, int],
        into: tuple[list[GpuInfo], list[list[list[Segment]]], list[int], list[GpuModelSpec]],
    ) -> None:
        """A GPU in MIG mode: its slices (:data:`MIG_LAYOUT`), each a device with one track."""
        gpus, tracks, keys, specs = into
        parent = gpu_uuid(seed, node, index)
        for j, (g, mem_gb) in enumerate(MIG_LAYOUT):
            slice_spec = mig_spec(spec, g, mem_gb)
            mig = "MIG-" + gpu_uuid(seed, node, index, "mig", j).removeprefix("GPU-")
            gpus.append(GpuInfo(parent, slice_spec.name, index, mig, slice_spec.memory_total))
            tracks.append([self._track(rng, 1000, "m", job_numbers)])
            keys.append(mix64(seed, node * 4096 + 64 + j))
            specs.append(slice_spec)

    def _track(
        self, rng: random.Random, milli: int, kind: str, job_numbers: dict[str, int]
    ) -> list[Segment]:
        """One slice's pods, back to back as they arrive (Poisson, thinned by the load curve):
        jobs ``<tenant>-<kind><n>`` at ``milli`` of the device."""
        weights = [1.0 / (i + 1) for i in range(len(self.tenants))]
        out: list[Segment] = []
        t = float(self.start - self.MAX_JOB_S)
        free = self.start - self.MAX_JOB_S
        log_min, log_max = math.log(self.MIN_JOB_S), math.log(self.MAX_JOB_S)
        while True:
            t += rng.expovariate(1.0 / 3600)
            if t >= self.end:
                return out
            if rng.random() >= _load_factor(int(t)):
                continue
            tenant = rng.choices(self.tenants, weights)[0]
            begin = max(int(t), free)
            end = begin + int(math.exp(rng.uniform(log_min, log_max)))
            draws = (rng.random(), rng.random(), rng.random(), rng.random(), rng.random())
            spot = rng.random()
            free = end
            if end <= self.start or begin >= self.end:
                continue
            key = f"{tenant}/{kind}"
            job_numbers[key] = job_numbers.get(key, 0) + 1
            job = f"{tenant}-{kind}{job_numbers[key]:04d}"
            billing_class: BillingClass | None = None
            if tenant in RESERVED_TENANTS:
                billing_class = "reserved"
            elif spot < SPOT_SHARE.get(tenant, 0.0):
                billing_class = "spot"
            profile = self._profile(draws, mix64(self.seed, (1 << 32) + self.jobs), begin)
            self.jobs += 1
            out.append(Segment(begin, end, tenant, job, billing_class, profile, milli))

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

    @property
    def preemptions(self) -> list[SimulatedPreemption]:
        """The spot allocations internal demand preempted, with their ground truth."""
        return [] if self.internal_demand is None else list(self.internal_demand.preemptions)

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


# Tokens of the simulated inference jobs live in agents/simulated_work.py; re-exported here,
# where the demo and the tests have always found them.
from agents.simulated_work import DEFAULT_TOKEN_RATES as DEFAULT_TOKEN_RATES  # noqa: E402
from agents.simulated_work import job_token_rate as job_token_rate  # noqa: E402
from agents.simulated_work import simulated_work as simulated_work  # noqa: E402
from agents.simulated_work import token_truth as token_truth  # noqa: E402
