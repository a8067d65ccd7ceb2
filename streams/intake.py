"""The worker's gate: one record's bytes become frames to count, or rejections with reasons.

A thin adapter over :mod:`schemas.validation`, so the processor has one shape whatever the
record's contract version: v1 samples are translated into frames
(:func:`schemas.frame.frames_from_samples`), v2 frames arrive as frames. Rejections keep their
codes; parked ``future_timestamp`` payloads are re-parsed by :func:`parse_parked`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.frame import Frame, frames_from_samples
from schemas.rejection import Rejection
from schemas.usage import GpuSecond
from schemas.validation import parse_batch, parse_sample


@dataclass(slots=True)
class Intake:
    node_id: str  # "" when the envelope was refused
    accepted: bool  # the envelope was accepted (its good frames count)
    frames: list[Frame] = field(default_factory=list)
    gap_seconds: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def parse(raw: bytes, *, now: float, max_future_skew_s: int) -> Intake:
    parsed = parse_batch(raw, now=now, max_future_skew_s=max_future_skew_s)
    batch = parsed.batch
    if batch is None:
        return Intake("", False, rejections=parsed.rejections)
    return Intake(
        batch.node_id,
        True,
        frames_from_samples(batch.samples),
        sum(g.end - g.start for g in batch.gaps),
        parsed.rejections,
    )


def rejection_index(r: Rejection) -> int:
    """Where in its record a rejection points (-1: the whole record)."""
    return -1 if r.sample_index is None else r.sample_index


def parse_parked(raw: bytes, *, now: float, max_future_skew_s: int) -> list[Frame] | None:
    """A parked payload whose time has come, as frames; None while it is still in the future
    (or, impossible for what the worker parked itself, invalid)."""
    sample = parse_sample(raw, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(sample, GpuSecond):
        return frames_from_samples((sample,))
    return None
