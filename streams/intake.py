"""The worker's gate: one record's bytes become frames to count, or rejections with reasons.

A thin adapter over :func:`schemas.validation.parse_record` (contract v2 frames, and v1 samples
translated into frames), so the processor reads one shape. Rejections keep their codes; a
parked ``future_timestamp`` payload is re-parsed by :func:`parse_parked`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.frame import Frame
from schemas.rejection import Rejection
from schemas.validation import parse_parked as _parse_parked
from schemas.validation import parse_record


@dataclass(slots=True)
class Intake:
    node_id: str  # "" when the envelope was refused
    accepted: bool  # the envelope was accepted (its good frames count)
    frames: list[Frame] = field(default_factory=list)
    gap_seconds: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def parse(raw: bytes, *, now: float, max_future_skew_s: int) -> Intake:
    parsed = parse_record(raw, now=now, max_future_skew_s=max_future_skew_s)
    if parsed.node_id is None:
        return Intake("", False, rejections=parsed.rejections)
    return Intake(
        parsed.node_id,
        True,
        parsed.frames,
        sum(g.end - g.start for g in parsed.gaps),
        parsed.rejections,
    )


def rejection_index(r: Rejection) -> int:
    """Where in its record a rejection points (-1: the whole record)."""
    return -1 if r.sample_index is None else r.sample_index


def parse_parked(raw: bytes, *, now: float, max_future_skew_s: int) -> list[Frame] | None:
    """A parked payload whose time has come, as frames; None while it is still in the future
    (or, impossible for what the worker parked itself, invalid)."""
    parked = _parse_parked(raw, now=now, max_future_skew_s=max_future_skew_s)
    if isinstance(parked, Frame):
        return [parked]
    return None
