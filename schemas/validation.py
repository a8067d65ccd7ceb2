"""Turning raw ``gpu.usage.v1`` bytes into validated samples, or into rejections with reasons.

Policy: a record whose envelope (JSON, schema version, node, agent, seq) is bad is rejected
whole. A record whose envelope is good but some samples are bad keeps its good samples: each
bad sample is rejected on its own, with its index, so one broken GPU reading never costs the
node's other GPU-seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from schemas.usage import MAX_FUTURE_SKEW_S, GpuSecond, GpuSecondsSampled

RejectionCode = Literal[
    "malformed_json",
    "unknown_schema_version",
    "invalid_envelope",
    "invalid_sample",
    # A valid sample dated more than max_future_skew_s after the worker's clock. Kept apart
    # from invalid_sample: the worker parks it and re-admits it (parse_sample) once its
    # second is no longer in the future. Its raw is the sample's canonical JSON.
    "future_timestamp",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    code: RejectionCode
    reason: str
    sample_index: int | None = None  # None: the whole record
    raw: bytes = b""  # the offending payload (whole record, or the one sample's JSON)


@dataclass(slots=True)
class ParsedBatch:
    batch: GpuSecondsSampled | None  # envelope, with only the valid samples
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def samples(self) -> tuple[GpuSecond, ...]:
        return self.batch.samples if self.batch is not None else ()


def describe(error: ValidationError, prefix: str = "") -> str:
    """A one-line, human-actionable summary of a pydantic error: ``field: problem (got X)``."""
    parts = []
    for e in error.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        parts.append(f"{prefix}{loc}: {msg}{shown}")
    return "; ".join(parts)


def parse_batch(
    raw: bytes, *, now: float | None = None, max_future_skew_s: int = MAX_FUTURE_SKEW_S
) -> ParsedBatch:
    """Validate one record. Never raises on bad input: problems come back as rejections.

    A sample more than ``max_future_skew_s`` after ``now`` (default: the wall clock) is
    rejected alone with code ``future_timestamp``."""
    now = time.time() if now is None else now
    try:
        parsed = GpuSecondsSampled.model_validate_json(raw)
    except ValidationError:
        pass  # find out which part is bad below
    else:
        return _park_future(parsed, [], now + max_future_skew_s, max_future_skew_s)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ParsedBatch(None, [Rejection("malformed_json", f"not valid JSON: {exc}", raw=raw)])
    if not isinstance(doc, dict):
        return ParsedBatch(
            None,
            [Rejection("malformed_json", f"expected a JSON object, got {type(doc).__name__}", raw=raw)],
        )
    samples = doc.pop("samples", [])
    try:
        envelope = GpuSecondsSampled.model_validate(doc)
    except ValidationError as exc:
        code: RejectionCode = (
            "unknown_schema_version"
            if any(e["loc"] == ("schema_version",) for e in exc.errors())
            else "invalid_envelope"
        )
        return ParsedBatch(None, [Rejection(code, describe(exc), raw=raw)])
    if not isinstance(samples, list):
        return ParsedBatch(
            None, [Rejection("invalid_envelope", "samples: must be a JSON array", raw=raw)]
        )
    good: list[GpuSecond] = []
    rejections: list[Rejection] = []
    for i, item in enumerate(samples):
        try:
            good.append(GpuSecond.model_validate(item))
        except ValidationError as exc:
            rejections.append(
                Rejection(
                    "invalid_sample",
                    describe(exc, prefix=f"samples[{i}]."),
                    sample_index=i,
                    raw=_dumps(item),
                )
            )
    return _park_future(
        envelope.model_copy(update={"samples": tuple(good)}),
        rejections,
        now + max_future_skew_s,
        max_future_skew_s,
    )


def parse_sample(
    raw_sample: bytes, *, now: float | None = None, max_future_skew_s: int = MAX_FUTURE_SKEW_S
) -> GpuSecond | Rejection:
    """Validate one sample's JSON (e.g. a parked ``future_timestamp`` rejection's raw)."""
    now = time.time() if now is None else now
    try:
        sample = GpuSecond.model_validate_json(raw_sample)
    except ValidationError as exc:
        return Rejection("invalid_sample", describe(exc, prefix="sample."), raw=raw_sample)
    if sample.ts > now + max_future_skew_s:
        return _future(sample, None, now, max_future_skew_s)
    return sample


def _park_future(
    batch: GpuSecondsSampled, rejections: list[Rejection], limit: float, skew: int
) -> ParsedBatch:
    samples = batch.samples
    if not samples or max(s.ts for s in samples) <= limit:
        return ParsedBatch(batch, rejections)
    now = limit - skew
    keep = [s for s in samples if s.ts <= limit]
    parked = [_future(s, i, now, skew) for i, s in enumerate(samples) if s.ts > limit]
    return ParsedBatch(batch.model_copy(update={"samples": tuple(keep)}), rejections + parked)


def _future(sample: GpuSecond, index: int | None, now: float, skew: int) -> Rejection:
    where = "sample" if index is None else f"samples[{index}]"
    return Rejection(
        "future_timestamp",
        f"{where}.ts: timestamp {sample.ts} is {sample.ts - int(now)} s in the future "
        f"(more than {skew} s): check the node's clock",
        sample_index=index,
        raw=orjson.dumps(sample.__dict__),
    )


def _dumps(item: Any) -> bytes:
    try:
        return orjson.dumps(item)
    except TypeError:
        return repr(item).encode()
