"""Tokens of a scheduled fleet's inference jobs: what their servers would report on
``gpu.work.v1`` (:func:`simulated_work`), and the ground truth those reports must add up to
(:func:`token_truth`), counted from the schedule's segments directly."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping

from agents.schedule import ScheduledFleet
from schemas.work import WorkUnitsReported

#: Tenants that serve inference in the demo and their tokens (prompt + generated) per allocated
#: GPU-second. The others train: GPU-hours, no tokens.
DEFAULT_TOKEN_RATES: dict[str, int] = {"acme": 2_400, "globex": 900}


def job_token_rate(tenant_rate: int, job: str) -> int:
    """A job's tokens per GPU-second: 75..125 % of its tenant's rate, fixed by the job id (a
    hash, not an RNG draw, so adding token rates changes nothing else the seed decides)."""
    spread = int.from_bytes(hashlib.blake2b(job.encode(), digest_size=8).digest(), "big") % 51
    return tenant_rate * (75 + spread) // 100


def simulated_work(
    fleet: ScheduledFleet,
    rates: Mapping[str, int] = DEFAULT_TOKEN_RATES,
    *,
    window_s: int = 60,
    start: int | None = None,
    end: int | None = None,
) -> list[WorkUnitsReported]:
    """What the inference servers of the fleet's jobs would report on ``gpu.work.v1``: per
    job, node and ``window_s`` window (aligned to the epoch), the job's token rate times its
    GPU-seconds there; ``source`` is the node, as one server per job and node. Only tenants in
    ``rates`` report. Deterministic: the same fleet gives the same reports (same identities)."""
    if window_s < 1:
        raise ValueError(f"window_s must be positive, got {window_s}")
    lo = fleet.start if start is None else max(start, fleet.start)
    hi = fleet.end if end is None else min(end, fleet.end)
    # (tenant, job, node, window) -> [first second, end, GPU-seconds]
    acc: dict[tuple[str, str, str, int], list[int]] = {}
    for node_id, _gpu, seg in fleet.schedule():
        if seg.tenant is None or seg.job is None or seg.tenant not in rates:
            continue
        s, e = max(seg.start, lo), min(seg.end, hi)
        w = s - s % window_s
        while w < e:
            a, b = max(s, w), min(e, w + window_s)
            cell = acc.setdefault((seg.tenant, seg.job, node_id, w), [a, b, 0])
            cell[0], cell[1], cell[2] = min(cell[0], a), max(cell[1], b), cell[2] + b - a
            w += window_s
    return [
        WorkUnitsReported(
            tenant=tenant,
            job=job,
            source=node_id,
            unit="tokens",
            quantity=job_token_rate(rates[tenant], job) * gpu_s,
            window_start=first,
            window_end=last,
        )
        for (tenant, job, node_id, _w), (first, last, gpu_s) in sorted(acc.items())
    ]


def token_truth(
    fleet: ScheduledFleet,
    rates: Mapping[str, int] = DEFAULT_TOKEN_RATES,
    start: int | None = None,
    end: int | None = None,
) -> dict[tuple[str, str], int]:
    """Tokens per (tenant, job) over [start, end), from the schedule's segments directly (not
    from the windows of :func:`simulated_work`): the ground truth the work units must match."""
    lo = fleet.start if start is None else max(start, fleet.start)
    hi = fleet.end if end is None else min(end, fleet.end)
    truth: dict[tuple[str, str], int] = defaultdict(int)
    for _node, _gpu, seg in fleet.schedule():
        if seg.tenant is None or seg.job is None or seg.tenant not in rates:
            continue
        seconds = min(seg.end, hi) - max(seg.start, lo)
        if seconds > 0:
            truth[(seg.tenant, seg.job)] += job_token_rate(rates[seg.tenant], seg.job) * seconds
    return dict(truth)
