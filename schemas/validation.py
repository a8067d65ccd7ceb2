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

from schemas.usage import GpuSecond, GpuSecondsSampled

RejectionCode = Literal[
    "malformed_json", "unknown_schema_version", "invalid_envelope", "invalid_sample"
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


def parse_batch(raw: bytes, *, now: float | None = None) -> ParsedBatch:
    """Validate one record. Never raises on bad input: problems come back as rejections."""
    context = {"now": time.time() if now is None else now}
    try:
        return ParsedBatch(GpuSecondsSampled.model_validate_json(raw, context=context))
    except ValidationError:
        pass  # find out which part is bad below
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
        envelope = GpuSecondsSampled.model_validate(doc, context=context)
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
            good.append(GpuSecond.model_validate(item, context=context))
        except ValidationError as exc:
            rejections.append(
                Rejection(
                    "invalid_sample",
                    describe(exc, prefix=f"samples[{i}]."),
                    sample_index=i,
                    raw=_dumps(item),
                )
            )
    return ParsedBatch(envelope.model_copy(update={"samples": tuple(good)}), rejections)


def _dumps(item: Any) -> bytes:
    try:
        return orjson.dumps(item)
    except TypeError:
        return repr(item).encode()
