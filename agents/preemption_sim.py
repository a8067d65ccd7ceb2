"""Internal demand in the simulated fleet: an internal tenant (``research``) whose jobs take
whole GPUs back from external spot allocations (preemptions), and use idle GPUs.

Applied to each node's whole-GPU timelines as the simulator builds them
(``SimulatedFleet(internal="research")``), with an RNG of its own, so the rest of the schedule
is what the seed gives without it:

- **Preemption.** Each external spot job on whole GPUs that runs at least
  :data:`MIN_RUN_S` x 2 inside the window is preempted with probability :data:`P_PREEMPT`: at
  a second ``at`` inside the window, a research job of the same GPUs starts, the spot job's
  segment on each GPU ends at ``at`` (it no longer holds the device from ``at`` on), and one
  :class:`SimulatedPreemption` per GPU records it. With probability :data:`P_CHECKPOINT` the spot
  job checkpointed every :data:`CHECKPOINT_EVERY_S` from its start: ``checkpoint_at`` is the
  last one before ``at`` (none yet: no checkpoint).
- **Idle capacity.** An idle gap of at least :data:`MIN_GAP_S` inside the window gets a
  research job with probability :data:`P_IDLE_USE` (internal use of otherwise idle GPUs).

Ground truth of a preemption (``lost_seconds``): the seconds the spot job held that GPU in
``[max(checkpoint_at or its start, window start), at)``, counted from the schedule: the seconds
the ledger must show lost.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from agents.sampler import GpuInfo
from agents.schedule import Segment, mix64
from schemas.preemption import PreemptionReported

INTERNAL_TENANT = "research"
P_PREEMPT = 0.75
P_CHECKPOINT = 0.5
CHECKPOINT_EVERY_S = 900
MIN_RUN_S = 120
P_IDLE_USE = 0.35
MIN_GAP_S = 1800
#: A research job runs 30 min .. 4 h (log-uniform), or until the GPU's next allocation.
RESEARCH_MIN_S, RESEARCH_MAX_S = 1800, 4 * 3600


@dataclass(frozen=True, slots=True)
class SimulatedPreemption:
    """One device an external allocation lost to internal demand, with its ground truth."""

    tenant: str
    job: str
    gpu_uuid: str
    gpu_model: str
    share_milli: int
    at: int
    checkpoint_at: int | None
    preempted_by: str
    lost_seconds: int  # ground truth within the window: seconds held in [lost_from, at)

    def record(self, now: float | None = None) -> PreemptionReported:
        """The ``gpu.preemptions.v1`` record the scheduler's integration publishes."""
        doc: dict[str, object] = {
            "tenant": self.tenant,
            "job": self.job,
            "gpu_uuid": self.gpu_uuid,
            "share_milli": self.share_milli,
            "at": self.at,
            "preempted_by": self.preempted_by,
            "reason": "internal demand",
        }
        if self.checkpoint_at is not None:
            doc["checkpoint_at"] = self.checkpoint_at
        context = {} if now is None else {"now": now}
        return PreemptionReported.model_validate(doc, context=context)


@dataclass
class InternalDemand:
    """Rewrites whole-GPU timelines node by node; collects the preemptions it made."""

    seed: int
    start: int
    end: int
    tenant: str = INTERNAL_TENANT
    preemptions: list[SimulatedPreemption] = field(default_factory=list)
    jobs: int = 0

    def apply(
        self, node: int, gpus: list[GpuInfo], timelines: list[list[Segment]]
    ) -> list[list[Segment]]:
        """The node's whole-GPU timelines (non-overlapping segments per GPU, one Segment
        object per job shared by its GPUs) with internal demand applied."""
        rng = random.Random(f"gpumeter-sim/{self.seed}/internal/{node}")
        out = [sorted(t, key=lambda s: s.start) for t in timelines]
        self._preempt(rng, node, gpus, out)
        for i in range(len(out)):
            out[i] = self._fill_idle(rng, node, out[i])
        return out

    def _preempt(
        self, rng: random.Random, node: int, gpus: list[GpuInfo], out: list[list[Segment]]
    ) -> None:
        seen: dict[str, list[int]] = {}  # spot job -> the GPUs (indexes) it holds
        for i, timeline in enumerate(out):
            for seg in timeline:
                if (
                    seg.billing_class == "spot"
                    and seg.job is not None
                    and seg.tenant != self.tenant
                ):
                    seen.setdefault(seg.job, []).append(i)
        for job, holders in seen.items():  # insertion order: deterministic
            seg = next(s for s in out[holders[0]] if s.job == job)
            lo, hi = max(seg.start, self.start) + MIN_RUN_S, min(seg.end, self.end) - MIN_RUN_S
            draws = (rng.random(), rng.random(), rng.random(), rng.random())
            if hi <= lo or draws[0] >= P_PREEMPT:
                continue
            at = lo + int(draws[1] * (hi - lo))
            checkpoint = None
            if draws[2] < P_CHECKPOINT:
                last = seg.start + (at - 1 - seg.start) // CHECKPOINT_EVERY_S * CHECKPOINT_EVERY_S
                checkpoint = last if last > seg.start else None
            lost_from = max(checkpoint if checkpoint is not None else seg.start, self.start)
            research = self._research_job(node, at, _duration(draws[3]))
            for i in holders:
                timeline = out[i]
                k = next(n for n, s in enumerate(timeline) if s.job == job)
                nxt = timeline[k + 1].start if k + 1 < len(timeline) else research.end
                timeline[k] = seg._replace(end=at)
                timeline.insert(k + 1, research._replace(end=min(research.end, nxt)))
                assert seg.tenant is not None
                self.preemptions.append(
                    SimulatedPreemption(
                        seg.tenant,
                        job,
                        gpus[i].uuid,
                        gpus[i].model,
                        seg.milli,
                        at,
                        checkpoint,
                        self.tenant,
                        at - lost_from,
                    )
                )

    def _fill_idle(self, rng: random.Random, node: int, timeline: list[Segment]) -> list[Segment]:
        out: list[Segment] = []
        t = self.start
        for seg in [*timeline, Segment(self.end, self.end)]:
            gap_start, gap_end = max(t, self.start), min(seg.start, self.end)
            if gap_end - gap_start >= MIN_GAP_S:
                use, length = rng.random(), _duration(rng.random())
                if use < P_IDLE_USE:
                    begin = gap_start + 600  # the team's job queues a while behind the gap
                    job = self._research_job(node, begin, length)
                    out.append(job._replace(end=min(job.end, gap_end)))
            if seg.end > seg.start:
                out.append(seg)
            t = max(t, seg.end)
        return out

    def _research_job(self, node: int, begin: int, length: int) -> Segment:
        from agents.simulator import JobProfile  # the simulator imports this module lazily

        self.jobs += 1
        key = mix64(self.seed, (3 << 32) + node * 65_536 + self.jobs)
        base = 60.0 + (key & 0xFF) / 255 * 35.0  # research trains: busy GPUs
        profile = JobProfile(base, 10.0, 0.8, key, begin)
        return Segment(
            begin, begin + length, self.tenant, f"{self.tenant}-r{self.jobs:04d}", None, profile
        )


def _duration(u: float) -> int:
    return int(math.exp(math.log(RESEARCH_MIN_S) + u * math.log(RESEARCH_MAX_S / RESEARCH_MIN_S)))
