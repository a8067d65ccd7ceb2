"""Version 1 records (``samples``): raw bytes into validated samples, or rejections with reasons.

Version 2 (frames) and the version-independent gate are :mod:`schemas.frames_validation`.

Policy (the published JSON Schema states the same in its description):

- Exactly what the schema states is accepted: pydantic strict mode, so nothing is coerced (a
  string is not a number, ``true`` is not ``1``). An integer is a valid number; an integer field
  also takes a number with no fractional part (``1700000000.0``), as JSON Schema defines
  *integer*. The rules JSON Schema keywords cannot state are the schema's
  ``x-gpumeter-rules`` (:data:`schemas.rule.RULES`).
- A bad envelope costs its record: not a JSON object, an unknown ``schema_version``, a bad
  ``node_id``/``agent_id``/``seq``, a bad gap (gaps belong to the envelope), an unknown key.
- A bad sample costs only itself, whatever its defect: wrong type or range, a broken rule, an
  unknown field, ``NaN``/``Infinity`` or a number a double cannot hold (``1e400``), an integer
  out of range however long, nesting too deep, a string that is not UTF-8 or holds a lone
  surrogate. The record and its other samples are kept, so one broken reading never costs the
  node's other GPU-seconds.
- A valid sample dated more than ``max_future_skew_s`` after the worker's clock is rejected
  alone with code ``future_timestamp``; its ``raw`` is its canonical JSON, so the worker can
  park it and re-admit it later with :func:`parse_sample`.
- Reasons are one line under :data:`MAX_REASON_CHARS` characters and name the field (or the
  rule) and, shortened, the value.

How: the fast path is one strict ``model_validate_json`` of the whole record. Only when it
fails is the record parsed again, with Python's ``json`` (C speed, tolerant of what JSON
forbids but producers send: ``NaN``, huge numbers, lone surrogates) or, when even that cannot
(invalid UTF-8 inside a string, nesting past the recursion limit, integers of thousands of
digits), with an iterative tokenizer here that never recurses. Then the envelope and each
sample are checked on their own: first for defects no validator sees the same way
(:func:`_find_defect`), then by the same strict pydantic models on their canonical JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.defects import find_defect as _find_defect
from schemas.defects import integral as _integral
from schemas.json_reader import MAX_DEPTH, load, sample_spans
from schemas.reason import (
    MAX_REASON_CHARS,
    bounded,
    describe,
    json_kind,
    location,
)
from schemas.rejection import Rejection, RejectionCode
from schemas.usage import MAX_FUTURE_SKEW_S, GpuSecond, GpuSecondsSampled

__all__ = [
    "MAX_DEPTH",
    "MAX_REASON_CHARS",
    "ParsedBatch",
    "Rejection",
    "RejectionCode",
    "describe",
    "parse_batch",
    "parse_sample",
]

_SAMPLE_INTEGERS = ("ts", "mem_used", "mem_total")
_ENVELOPE_INTEGERS = ("schema_version", "seq")
_GAP_INTEGERS = ("start", "end")


@dataclass(slots=True)
class ParsedBatch:
    batch: GpuSecondsSampled | None  # envelope, with only the valid samples
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def samples(self) -> tuple[GpuSecond, ...]:
        return self.batch.samples if self.batch is not None else ()


def parse_batch(
    raw: bytes, *, now: float | None = None, max_future_skew_s: int = MAX_FUTURE_SKEW_S
) -> ParsedBatch:
    """Validate one record. Never raises on bad input: problems come back as rejections.

    ``now`` is the worker's clock (default: the wall clock); a sample dated more than
    ``max_future_skew_s`` after it is rejected alone with code ``future_timestamp``."""
    try:
        batch = _validate_record(raw, strict=True)
    except ValidationError as exc:
        return _parse_piecewise(raw, _clock(now), max_future_skew_s, _faulted_samples(exc))
    samples = batch.samples
    if samples:
        limit = _clock(now) + max_future_skew_s
        if max(s.ts for s in samples) > limit:
            return _park_future(batch, limit, max_future_skew_s)
    return ParsedBatch(batch)


def parse_sample(
    raw_sample: bytes,
    *,
    now: float | None = None,
    max_future_skew_s: int = MAX_FUTURE_SKEW_S,
    index: int | None = None,
) -> GpuSecond | Rejection:
    """Validate one sample's JSON, as :func:`parse_batch` validates an element of ``samples``.

    For re-admitting a parked ``future_timestamp`` sample (its ``raw``). ``index``, when given,
    is the sample's index in its record, used in reasons and in ``Rejection.sample_index``."""
    try:
        sample = _validate_sample(raw_sample, strict=True)
    except ValidationError:
        loaded = load(raw_sample)
        if isinstance(loaded, Rejection):
            return replace(loaded, code="invalid_sample", sample_index=index)
        checked = _check_sample(loaded[0], index, raw_sample)
        if isinstance(checked, Rejection):
            return checked
        sample = checked
    now = _clock(now)
    if sample.ts > now + max_future_skew_s:
        return _future(sample, index, now, max_future_skew_s)
    return sample


_validate_record = GpuSecondsSampled.model_validate_json
_validate_sample = GpuSecond.model_validate_json
_validate_samples = TypeAdapter(list[GpuSecond]).validate_json


def _faulted_samples(exc: ValidationError) -> set[int] | None:
    """The indices of the samples a whole-record validation faulted, when it faulted nothing
    else; None when the JSON itself or the envelope is at fault (then every part is checked).
    Samples it did not fault are clean: jiter read them and strict validation passed them."""
    faulted = set()
    for e in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = e["loc"]
        if len(loc) < 2 or loc[0] != "samples" or type(loc[1]) is not int:
            return None
        faulted.add(loc[1])
    return faulted


def _clock(now: float | None) -> float:
    return time.time() if now is None else now


# -- the slow path: envelope and samples one by one ----------------------------------------------


def _parse_piecewise(
    raw: bytes, now: float, skew: int, faulted: set[int] | None = None
) -> ParsedBatch:
    loaded = load(raw)
    if isinstance(loaded, Rejection):
        return ParsedBatch(None, [loaded])
    doc, spans = loaded
    if not isinstance(doc, dict):
        got = json_kind(doc)
        return ParsedBatch(
            None, [Rejection("malformed_json", f"expected a JSON object, got {got}", raw=raw)]
        )
    samples = doc.get("samples", [])
    if isinstance(samples, list):  # checked one by one below; anything else is the envelope's
        doc["samples"] = []
    envelope = _check_envelope(doc, raw)
    if isinstance(envelope, Rejection):
        return ParsedBatch(None, [envelope])
    checked: dict[int, GpuSecond | Rejection] = {}
    if faulted is not None:
        # Only the faulted samples need a look of their own; the others pass in one call.
        clean = [i for i in range(len(samples)) if i not in faulted]
        try:
            checked.update(
                zip(
                    clean,
                    _validate_samples(orjson.dumps([samples[i] for i in clean]), strict=True),
                    strict=True,
                )
            )
        except ValidationError:
            checked.clear()  # not expected; then every sample gets its own look
    rejections: list[Rejection] = []
    good: list[GpuSecond] = []
    limit = now + skew
    for i, item in enumerate(samples):
        result = checked.get(i)
        if result is None:
            exact = raw[spans[i][0] : spans[i][1]] if spans and i < len(spans) else None
            result = _check_sample(item, i, exact)
        if isinstance(result, Rejection):
            if not result.raw:  # a defect: keep its exact bytes, which only a re-scan finds
                spans = spans if spans is not None else sample_spans(raw)
                if i < len(spans):
                    result = replace(result, raw=raw[spans[i][0] : spans[i][1]])
            rejections.append(result)
        elif result.ts > limit:
            rejections.append(_future(result, i, now, skew))
        else:
            good.append(result)
    return ParsedBatch(envelope.model_copy(update={"samples": tuple(good)}), rejections)


def _check_envelope(doc: dict[str, Any], raw: bytes) -> GpuSecondsSampled | Rejection:
    defect = _find_defect(doc)
    if defect is not None:
        path, why = defect
        code: RejectionCode = (
            "unknown_schema_version" if path[:1] == ("schema_version",) else "invalid_envelope"
        )
        return Rejection(code, bounded(f"{location('', path) or 'record'}: {why}"), raw=raw)
    _integral(doc, _ENVELOPE_INTEGERS)
    gaps = doc.get("gaps")
    if isinstance(gaps, list):
        for gap in gaps:
            if isinstance(gap, dict):
                _integral(gap, _GAP_INTEGERS)
    try:
        return _validate_record(orjson.dumps(doc), strict=True)
    except ValidationError as exc:
        code = (
            "unknown_schema_version"
            if any(e["loc"][:1] == ("schema_version",) for e in exc.errors())
            else "invalid_envelope"
        )
        return Rejection(code, describe(exc), raw=raw)


def _check_sample(item: Any, index: int | None, exact: bytes | None) -> GpuSecond | Rejection:
    """One element of ``samples``: a GpuSecond, or its rejection. ``exact`` is its bytes in the
    record when known (else its canonical JSON is kept as ``raw``)."""
    where = "sample" if index is None else f"samples[{index}]"
    defect = _find_defect(item)
    if defect is not None:
        path, why = defect
        reason = bounded(f"{location(where, path)}: {why}")
        return Rejection("invalid_sample", reason, index, exact or b"")
    if isinstance(item, dict):
        _integral(item, _SAMPLE_INTEGERS)
    encoded = orjson.dumps(item)  # cannot fail: _find_defect ruled out what orjson refuses
    try:
        return _validate_sample(encoded, strict=True)
    except ValidationError as exc:
        return Rejection("invalid_sample", describe(exc, where), index, exact or encoded)


def _park_future(batch: GpuSecondsSampled, limit: float, skew: int) -> ParsedBatch:
    keep: list[GpuSecond] = []
    parked: list[Rejection] = []
    for i, s in enumerate(batch.samples):
        if s.ts > limit:
            parked.append(_future(s, i, limit - skew, skew))
        else:
            keep.append(s)
    return ParsedBatch(batch.model_copy(update={"samples": tuple(keep)}), parked)


def _future(sample: GpuSecond, index: int | None, now: float, skew: int) -> Rejection:
    where = "sample" if index is None else f"samples[{index}]"
    return Rejection(
        "future_timestamp",
        f"{where}.ts: timestamp {sample.ts} is {sample.ts - int(now)} s in the future "
        f"(more than {skew} s): check the node's clock",
        sample_index=index,
        # Canonical JSON of the validated sample (every field, schema order): parse_sample
        # accepts it as is once its second is no longer in the future.
        raw=orjson.dumps(sample.__dict__),
    )
