"""A refused record or sample: a closed set of codes, a one-line reason, the exact bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RejectionCode = Literal[
    "malformed_json",
    "unknown_schema_version",
    "invalid_envelope",
    "invalid_sample",
    # v2: one element of frames is invalid; costs that frame only.
    "invalid_frame",
    # A valid sample dated more than max_future_skew_s after the worker's clock. Kept apart
    # from invalid_sample: the worker parks it and re-admits it (parse_sample, parse_parked)
    # once its second is no longer in the future. Its raw is the sample's (v2: the future
    # seconds' frame's) canonical JSON.
    "future_timestamp",
]

#: Longest reason a rejection carries (the value itself is only ever shown shortened).
MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class Rejection:
    code: RejectionCode
    reason: str
    #: the element's index in its record: ``samples[i]`` (v1) or ``frames[i]`` (v2); None: the
    #: whole record
    sample_index: int | None = None
    raw: bytes = b""  # the offending payload (whole record, or the one sample's or frame's JSON)
