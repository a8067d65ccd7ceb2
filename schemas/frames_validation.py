"""The worker's gate for usage records of either version: raw bytes in, frames and rejections out.

:func:`parse_record` reads a record once. ``schema_version`` 2 (the current version) is checked
here: the envelope (everything but ``frames``) with the strict pydantic model, each frame column
by column (:func:`schemas.frame_check.check_frame`, no object per second). Version 1 (or no
``schema_version``) goes through :func:`schemas.validation.parse_batch`, unchanged, and its
samples become frames (:func:`schemas.frame.frames_from_samples`); its rejections are v1's.

Policy, as the published schema states it: a bad envelope costs the record; a bad frame costs
only itself (code ``invalid_frame``, ``sample_index`` = its index in ``frames``, the exact bytes
as ``raw``), whatever its defect, including ``NaN``, numbers too large, lone surrogates, invalid
UTF-8 and deep nesting (then the record is read by the tolerant reader of
:mod:`schemas.json_reader` and :func:`schemas.defects.find_defect` names the defect). The seconds
of a valid frame dated more than ``max_future_skew_s`` after ``now`` are split off and parked
(code ``future_timestamp``, ``raw`` their frame's JSON); :func:`parse_parked` re-admits them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.defects import find_defect, integral
from schemas.frame import Frame, frame_slice, frame_wire, frames_from_samples
from schemas.frame_check import FrameError, check_frame
from schemas.json_reader import load, sample_spans
from schemas.reason import bounded, describe, excerpt, json_kind, location
from schemas.rejection import Rejection
from schemas.rule import MAX_FUTURE_SKEW_S
from schemas.samples_validation import parse_batch, parse_sample
from schemas.usage import Gap
from schemas.usage_v2 import SCHEMA_VERSION_V2, GpuFramesSampled

#: The versions :func:`parse_record` accepts (1: for one release, translated into frames).
ACCEPTED_VERSIONS = (1, SCHEMA_VERSION_V2)
_ENVELOPE_INTEGERS = ("schema_version", "seq")
_GAP_INTEGERS = ("start", "end")


@dataclass(slots=True)
class ParsedRecord:
    """One record, validated. ``node_id`` is None when the whole record was rejected (then
    ``rejections`` holds that one rejection and nothing else is set)."""

    node_id: str | None = None
    agent_id: str | None = None
    seq: int | None = None
    schema_version: int | None = None
    frames: list[Frame] = field(default_factory=list)  # the valid frames (their past seconds)
    gaps: tuple[Gap, ...] = ()
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def seconds(self) -> int:
        """Device-seconds in the valid frames."""
        return sum(len(f.sm_util) for f in self.frames)


def parse_record(
    raw: bytes, *, now: float | None = None, max_future_skew_s: int = MAX_FUTURE_SKEW_S
) -> ParsedRecord:
    """Validate one record of either version. Never raises on bad input: problems come back
    as rejections. ``now`` is the worker's clock (default: the wall clock)."""
    if type(raw) is not bytes:
        raw = bytes(raw)  # a memoryview or bytearray from a client
    try:
        doc: Any = orjson.loads(raw)
        spans = None
        tolerant = False
    except orjson.JSONDecodeError:
        loaded = load(raw, key="frames")
        if isinstance(loaded, Rejection):
            return ParsedRecord(rejections=[loaded])
        doc, spans = loaded
        tolerant = True
    if type(doc) is not dict:
        reason = f"expected a JSON object, got {json_kind(doc)}"
        return ParsedRecord(rejections=[Rejection("malformed_json", reason, raw=bytes(raw))])
    version = _version(doc, raw)
    if isinstance(version, Rejection):
        return ParsedRecord(rejections=[version])
    if version == 1:
        return _from_v1(raw, now, max_future_skew_s)
    limit = (time.time() if now is None else now) + max_future_skew_s
    return _parse_v2(doc, bytes(raw), spans, tolerant, limit, max_future_skew_s)


def parse_parked(
    raw: bytes,
    *,
    now: float | None = None,
    max_future_skew_s: int = MAX_FUTURE_SKEW_S,
    index: int | None = None,
) -> Frame | Rejection:
    """Re-admit a parked ``future_timestamp`` rejection's ``raw``: the frame, once its *last*
    second is within ``max_future_skew_s`` of ``now``; until then the same rejection again.
    A v1 sample parked before the switch (its JSON has ``ts``) comes back as a one-second
    frame. ``index`` is the element's index in its record, for reasons."""
    clock = time.time() if now is None else now
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        loaded = load(raw)
        doc = loaded[0] if not isinstance(loaded, Rejection) else None
    if type(doc) is dict and "ts" in doc and "start" not in doc:
        sample = parse_sample(raw, now=clock, max_future_skew_s=max_future_skew_s, index=index)
        return sample if isinstance(sample, Rejection) else frames_from_samples([sample])[0]
    where = "frame" if index is None else f"frames[{index}]"
    checked = _frame(doc, where, True)
    if isinstance(checked, str):
        return Rejection("invalid_frame", checked, index, bytes(raw))
    if checked.end - 1 > clock + max_future_skew_s:
        return _future(checked, where, index, clock, max_future_skew_s)
    return checked


# -- version 1 -----------------------------------------------------------------------------------


def _from_v1(raw: bytes, now: float | None, skew: int) -> ParsedRecord:
    parsed = parse_batch(raw, now=now, max_future_skew_s=skew)
    batch = parsed.batch
    if batch is None:
        return ParsedRecord(rejections=parsed.rejections)
    return ParsedRecord(
        batch.node_id,
        batch.agent_id,
        batch.seq,
        batch.schema_version,
        frames_from_samples(batch.samples),
        batch.gaps,
        parsed.rejections,
    )


def _version(doc: dict[str, Any], raw: bytes) -> int | Rejection:
    """1 (also when absent) or 2, else the record's rejection."""
    if "schema_version" not in doc:
        return 1
    v = doc["schema_version"]
    defect = find_defect(v)
    if defect is not None:
        why = defect[1]
    elif type(v) is float and v.is_integer() and int(v) in ACCEPTED_VERSIONS:
        return int(v)
    elif type(v) is int and v in ACCEPTED_VERSIONS:
        return v
    elif type(v) is int or type(v) is float:
        why = (
            f"unknown schema_version {excerpt(v)}; this worker understands "
            f"{list(ACCEPTED_VERSIONS)} (upgrade the worker or the agent)"
        )
    else:
        why = f"must be an integer (got {excerpt(v)})"
    return Rejection("unknown_schema_version", bounded(f"schema_version: {why}"), raw=bytes(raw))


# -- version 2 -----------------------------------------------------------------------------------

_validate_envelope = GpuFramesSampled.model_validate_json


def _parse_v2(
    doc: dict[str, Any],
    raw: bytes,
    spans: list[tuple[int, int]] | None,
    tolerant: bool,
    limit: float,
    skew: int,
) -> ParsedRecord:
    frames = doc.get("frames", [])
    envelope = _check_envelope(doc, frames, raw, tolerant)
    if isinstance(envelope, Rejection):
        return ParsedRecord(rejections=[envelope])
    out = ParsedRecord(
        envelope.node_id,
        envelope.agent_id,
        envelope.seq,
        SCHEMA_VERSION_V2,
        [],
        tuple(envelope.gaps),
    )
    good = out.frames
    # No true/false literal in the bytes: no boolean in the record, so columns take the fast
    # check (a reason's wording never depends on it, only the cost).
    fast = b"true" not in raw and b"false" not in raw
    for i, item in enumerate(frames):
        checked = _frame(item, f"frames[{i}]", tolerant, fast)
        if isinstance(checked, str):
            if spans is None:
                spans = sample_spans(raw, "frames")
            exact = raw[spans[i][0] : spans[i][1]] if i < len(spans) else b""
            out.rejections.append(Rejection("invalid_frame", checked, i, exact))
        elif checked.end - 1 > limit:
            keep = math.floor(limit) - checked.start + 1  # seconds at or before the limit
            if keep > 0:
                good.append(frame_slice(checked, 0, keep))
                checked = frame_slice(checked, keep, len(checked.sm_util))
            out.rejections.append(_future(checked, f"frames[{i}]", i, limit - skew, skew))
        else:
            good.append(checked)
    return out


def _frame(item: Any, where: str, tolerant: bool, fast: bool = False) -> Frame | str:
    """The frame, or the reason it is refused."""
    if tolerant:
        defect = find_defect(item)
        if defect is not None:
            path, why = defect
            return bounded(f"{location(where, path)}: {why}")
    try:
        return check_frame(item, where, fast)
    except FrameError as exc:
        return str(exc)


def _check_envelope(
    doc: dict[str, Any], frames: Any, raw: bytes, tolerant: bool
) -> GpuFramesSampled | Rejection:
    rest = dict(doc)
    if type(frames) is list:  # checked one by one; anything else is the envelope's to refuse
        rest["frames"] = []
    if tolerant:
        defect = find_defect(rest)
        if defect is not None:
            path, why = defect
            return Rejection(
                "invalid_envelope", bounded(f"{location('', path) or 'record'}: {why}"), raw=raw
            )
    integral(rest, _ENVELOPE_INTEGERS)
    gaps = rest.get("gaps")
    if type(gaps) is list and any(type(g) is dict for g in gaps):
        rest["gaps"] = gaps = [dict(g) if type(g) is dict else g for g in gaps]
        for gap in gaps:
            if type(gap) is dict:
                integral(gap, _GAP_INTEGERS)
    try:
        return _validate_envelope(orjson.dumps(rest), strict=True)
    except ValidationError as exc:
        return Rejection("invalid_envelope", describe(exc), raw=raw)


def _future(frame: Frame, where: str, index: int | None, now: float, skew: int) -> Rejection:
    first, last = frame.start, frame.end - 1
    return Rejection(
        "future_timestamp",
        f"{where}: seconds {first}..{last} are up to {last - int(now)} s in the future "
        f"(more than {skew} s): check the node's clock",
        sample_index=index,
        # The frame's canonical JSON: parse_parked accepts it as is once its time has come.
        raw=orjson.dumps(frame_wire(frame)),
    )
