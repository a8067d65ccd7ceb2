"""The worker's gate, both contract versions: what callers import.

- :func:`parse_record` (version 2 and version 1, into frames) and :func:`parse_parked`:
  :mod:`schemas.frames_validation`.
- :func:`parse_batch` and :func:`parse_sample` (version 1 only, into samples; kept while
  callers switch): :mod:`schemas.samples_validation`.
"""

from __future__ import annotations

from schemas.frame_check import FrameError as FrameError
from schemas.frames_validation import ACCEPTED_VERSIONS as ACCEPTED_VERSIONS
from schemas.frames_validation import ParsedRecord as ParsedRecord
from schemas.frames_validation import parse_parked as parse_parked
from schemas.frames_validation import parse_record as parse_record
from schemas.reason import MAX_REASON_CHARS as MAX_REASON_CHARS
from schemas.reason import describe as describe
from schemas.rejection import Rejection as Rejection
from schemas.rejection import RejectionCode as RejectionCode
from schemas.samples_validation import MAX_DEPTH as MAX_DEPTH
from schemas.samples_validation import ParsedBatch as ParsedBatch
from schemas.samples_validation import parse_batch as parse_batch
from schemas.samples_validation import parse_sample as parse_sample

__all__ = [
    "ACCEPTED_VERSIONS",
    "MAX_DEPTH",
    "MAX_REASON_CHARS",
    "FrameError",
    "ParsedBatch",
    "ParsedRecord",
    "Rejection",
    "RejectionCode",
    "describe",
    "parse_batch",
    "parse_parked",
    "parse_record",
    "parse_sample",
]
