"""Turning raw ``gpu.usage.v1`` bytes into validated samples, or into rejections with reasons.

Policy (the published JSON Schema states the same in its description):

- Exactly what the schema states is accepted: pydantic strict mode, so nothing is coerced (a
  string is not a number, ``true`` is not ``1``). An integer is a valid number; an integer field
  also takes a number with no fractional part (``1700000000.0``), as JSON Schema defines
  *integer*. The rules JSON Schema keywords cannot state are the schema's
  ``x-gpumeter-rules`` (:data:`schemas.usage.RULES`).
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

import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter, ValidationError

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

#: Longest reason a rejection carries (the value itself is only ever shown shortened).
MAX_REASON_CHARS = 300
#: Containers nested deeper than this inside a sample or the envelope are a defect (a valid
#: record nests 4 levels: record, samples, sample, flags).
MAX_DEPTH = 16

_SAMPLE_INTEGERS = ("ts", "mem_used", "mem_total")
_ENVELOPE_INTEGERS = ("schema_version", "seq")
_GAP_INTEGERS = ("start", "end")
_INT_MIN, _INT_END = -(2**63), 2**64  # what orjson (and most producers) can hold
_SURROGATE = re.compile("[\ud800-\udfff]")


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
        loaded = _load(raw_sample)
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
    loaded = _load(raw)
    if isinstance(loaded, Rejection):
        return ParsedBatch(None, [loaded])
    doc, spans = loaded
    if not isinstance(doc, dict):
        got = _json_kind(doc)
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
                spans = spans if spans is not None else _sample_spans(raw)
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
        return Rejection(code, _bounded(f"{_where('', path) or 'record'}: {why}"), raw=raw)
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
        reason = _bounded(f"{_where(where, path)}: {why}")
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


def _integral(doc: dict[str, Any], names: tuple[str, ...]) -> None:
    """JSON Schema's integer includes numbers with no fractional part; strict pydantic does
    not, so they become ints here (only on the slow path: the fast path rejected them)."""
    for name in names:
        v = doc.get(name)
        if type(v) is float and v.is_integer() and _INT_MIN <= v < _INT_END:
            doc[name] = int(v)


# -- defects no validator sees the same way ------------------------------------------------------


def _find_defect(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The first thing in a parsed value that is not plain JSON data: a non-finite number, an
    integer beyond 64 bits, a lone surrogate, nesting deeper than :data:`MAX_DEPTH`, or a mark
    the tolerant parser left (invalid UTF-8). Iterative: never recurses, whatever the depth."""
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, (), 0)]
    while stack:
        v, path, depth = stack.pop()
        t = type(v)
        if t is str:
            m = _SURROGATE.search(v)
            if m:
                return path, f"lone surrogate \\u{ord(m.group()):04x} (not valid Unicode text)"
        elif t is float:
            if not math.isfinite(v):
                return path, f"{_json_float(v)} is not a finite number"
        elif t is int:
            if not _INT_MIN <= v < _INT_END:
                return path, f"integer {_excerpt(v)} is out of range"
        elif t is _Bad:
            return path, v.why
        elif t is dict or t is list:
            if depth >= MAX_DEPTH:
                return path, f"nested more than {MAX_DEPTH} levels deep"
            items = list(v.items()) if t is dict else list(enumerate(v))
            for k, x in reversed(items):  # reversed: the first defect in document order wins
                if type(k) is _Bad:
                    return path, f"a key is {k.why}"
                if t is dict and _SURROGATE.search(k):
                    return path + (k,), "lone surrogate in the key (not valid Unicode text)"
                stack.append((x, path + (k,), depth + 1))
    return None


class _Bad:
    """A value the tolerant parser could read but not represent (the reason says why)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


# -- reading the bytes ---------------------------------------------------------------------------


def _load(raw: bytes) -> tuple[Any, list[tuple[int, int]] | None] | Rejection:
    """The parsed document and, when the iterative tokenizer was needed, the byte span of each
    element of the top-level ``samples`` array. ``NaN``, ``Infinity`` and numbers a double
    cannot hold become :class:`_Bad` marks in place, whichever parser read them."""
    raw = bytes(raw)
    if not raw.strip():
        return Rejection("malformed_json", "not valid JSON: empty input", raw=raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _parse_tolerantly(raw)
    try:
        return json.loads(text, parse_constant=_not_finite, parse_float=_double), None
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return Rejection("malformed_json", reason, raw=raw)
    except (RecursionError, ValueError):
        # nested past Python's recursion limit; an integer past int's 4300-digit limit
        return _parse_tolerantly(raw)


_TOKEN = re.compile(
    rb"[ \t\n\r]*(?:"
    rb'(?P<str>"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")'
    rb"|(?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    rb"|(?P<lit>true|false|null|NaN|Infinity|-Infinity)"
    rb"|(?P<punct>[][{}:,]))"
)
_LITERALS: dict[bytes, Any] = {b"true": True, b"false": False, b"null": None}
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _NEXT = range(6)
#: Containers past this depth from the top are skipped, not built (a sample is at depth 3).
_PARSE_DEPTH = MAX_DEPTH + 2


@dataclass(slots=True)
class _Frame:
    container: dict[Any, Any] | list[Any]
    start: int
    key: Any = None
    spans: list[tuple[int, int]] | None = None  # element spans, for the samples array


def _parse_tolerantly(raw: bytes) -> tuple[Any, list[tuple[int, int]] | None] | Rejection:
    """JSON (plus ``NaN``/``Infinity``, as Python's ``json`` reads it) by an iterative state
    machine: any depth, any byte inside strings. What it cannot represent becomes a :class:`_Bad`
    mark in place, so only the sample (or envelope field) holding it is rejected. Containers
    past :data:`_PARSE_DEPTH` are checked for syntax but not built (bounded memory)."""
    frames: list[_Frame] = []
    deep = bytearray()  # kinds (1: object) of the skipped containers past _PARSE_DEPTH
    deep_start = 0
    samples_frames: list[_Frame] = []
    pos, state = 0, _VALUE
    while True:
        m = _TOKEN.match(raw, pos)
        if m is None:
            return _malformed(raw, pos)
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        start, pos = m.start(kind), m.end()
        tok = m.group(kind)
        value: Any
        if kind == "punct":
            in_object = (
                bool(deep[-1]) if deep else bool(frames) and type(frames[-1].container) is dict
            )
            if tok in b"[{" and state in (_VALUE, _VALUE_OR_CLOSE):
                is_object = tok == b"{"
                if deep or len(frames) >= _PARSE_DEPTH:
                    deep_start = deep_start if deep else start
                    deep.append(is_object)
                else:
                    frame = _Frame({} if is_object else [], start)
                    if (
                        not is_object
                        and len(frames) == 1
                        and type(frames[0].container) is dict
                        and frames[0].key == "samples"
                    ):
                        frame.spans = []
                        samples_frames.append(frame)
                    frames.append(frame)
                state = _KEY_OR_CLOSE if is_object else _VALUE_OR_CLOSE
                continue
            if tok == b":" and state == _COLON:
                state = _VALUE
                continue
            if tok == b"," and state == _NEXT:
                state = _KEY if in_object else _VALUE
                continue
            closes = (tok == b"}" and in_object) or (tok == b"]" and not in_object)
            empty = state == (_KEY_OR_CLOSE if in_object else _VALUE_OR_CLOSE)
            if not (closes and (state == _NEXT or empty)):
                return _malformed(raw, start)
            if deep:
                deep.pop()
                if deep:
                    state = _NEXT
                    continue
                value, start = _Bad(f"nested more than {MAX_DEPTH} levels deep"), deep_start
            else:
                frame = frames.pop()
                value, start = frame.container, frame.start
        elif state in (_KEY, _KEY_OR_CLOSE):
            if kind != "str":
                return _malformed(raw, start)
            if not deep:
                frames[-1].key = _string(tok)
            state = _COLON
            continue
        elif state in (_VALUE, _VALUE_OR_CLOSE):
            if deep:
                state = _NEXT
                continue
            value = _scalar(kind, tok)
        else:
            return _malformed(raw, start)
        # a value is complete: it is the document, or it goes into its container
        if not frames:
            if raw[pos:].strip(b" \t\n\r"):
                return _malformed(raw, pos)
            return value, _spans_of(value, samples_frames)
        parent = frames[-1]
        if isinstance(parent.container, dict):
            parent.container[parent.key] = value
        else:
            parent.container.append(value)
            if parent.spans is not None:
                parent.spans.append((start, pos))
        state = _NEXT


def _spans_of(doc: Any, samples_frames: list[_Frame]) -> list[tuple[int, int]] | None:
    samples = doc.get("samples") if type(doc) is dict else None
    for frame in samples_frames:  # a duplicate "samples" key: the last one won in doc
        if frame.container is samples:
            return frame.spans
    return None


def _string(tok: bytes) -> Any:
    body = tok[1:-1]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Bad(f"not valid UTF-8 (byte 0x{body[exc.start]:02x} at byte {exc.start})")
    # The token pattern admitted only JSON escapes, so json reads it; lone surrogates stay
    # (and _find_defect names them).
    return json.loads(f'"{text}"') if "\\" in text else text


def _not_finite(literal: str) -> _Bad:
    return _Bad(f"{literal} is not a finite number")


def _double(literal: str) -> float | _Bad:
    f = float(literal)
    if math.isinf(f):
        return _Bad(f"{_shorten(literal, 24)} is too large for a double")
    return f


def _scalar(kind: str | None, tok: bytes) -> Any:
    if kind == "str":
        return _string(tok)
    if kind == "lit":
        return _LITERALS[tok] if tok in _LITERALS else _not_finite(tok.decode())
    if b"." in tok or b"e" in tok or b"E" in tok:
        return _double(tok.decode())
    if len(tok) > 40:
        return _Bad(f"integer {tok[:12].decode()}…({len(tok.lstrip(b'-'))} digits) is out of range")
    return int(tok)


def _malformed(raw: bytes, pos: int) -> Rejection:
    while pos < len(raw) and raw[pos] in b" \t\n\r":
        pos += 1
    what = "end of the record" if pos >= len(raw) else f"byte 0x{raw[pos]:02x}"
    return Rejection("malformed_json", f"not valid JSON: unexpected {what} at byte {pos}", raw=raw)


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _sample_spans(raw: bytes) -> list[tuple[int, int]]:
    """The byte span of each element of the top-level ``samples`` array, for a record ``json``
    already read: json's C decoder skips each value (``raw_decode`` says where it ends), so
    this costs one C call per top-level value and per sample. Empty if not found (the caller
    then keeps no exact bytes)."""
    text = raw.decode("utf-8")  # it decoded before, in _load
    decode = _DECODER.raw_decode
    found: list[tuple[int, int]] = []
    try:
        i = _skip(text, 0)
        if text[i] != "{":
            return []
        i = _skip(text, i + 1)
        while text[i] != "}":
            key, i = decode(text, i)
            i = _skip(text, _skip(text, i) + 1)  # past the colon
            if key == "samples" and text[i] == "[":
                spans = []
                i = _skip(text, i + 1)
                while text[i] != "]":
                    _, end = decode(text, i)
                    spans.append((i, end))
                    i = _skip(text, end)
                    if text[i] == ",":
                        i = _skip(text, i + 1)
                found = spans  # a later "samples" key wins, as in json
                i += 1
            else:
                _, i = decode(text, i)
            i = _skip(text, i)
            if text[i] == ",":
                i = _skip(text, i + 1)
    except (ValueError, IndexError, RecursionError):  # not expected: json read this text
        return []
    if text.isascii():
        return found
    # character offsets to byte offsets, in one pass (valid UTF-8 re-encodes exactly)
    spans, at_char, at_byte = [], 0, 0
    for a, b in found:
        at_byte += len(text[at_char:a].encode())
        first = at_byte
        at_byte += len(text[a:b].encode())
        at_char = b
        spans.append((first, at_byte))
    return spans


def _skip(text: str, i: int) -> int:
    m = _SPACE.match(text, i)
    return m.end() if m is not None else i


# -- reasons -------------------------------------------------------------------------------------

_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "missing": "required field missing",
    "extra_forbidden": "unknown field (the schema allows no others)",
    "finite_number": "must be a finite number",
    # the only pattern in the contract: published as not-pattern [\x00-\x1f\x7f]
    "string_pattern_mismatch": "must not contain control characters (U+0000-U+001F, U+007F)",
}
_NO_INPUT = frozenset({"missing", "extra_forbidden"})
_TIME_FIELDS = frozenset({"ts", "start", "end"})
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def describe(error: ValidationError, where: str = "") -> str:
    """A one-line, human-actionable summary of a pydantic error, at most
    :data:`MAX_REASON_CHARS` long: ``field: problem (got X)``, or ``where (rule id): problem``
    for a cross-field rule; values shortened, never repeated whole."""
    parts = []
    for e in error.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(e["loc"])
        kind = e["type"]
        ctx = e.get("ctx") or {}
        if kind == "gpumeter_rule":
            parts.append(f"{_where(where, loc) or 'record'} (rule {ctx['rule']}): {e['msg']}")
            continue
        if kind == "reserved_name":
            parts.append(f"{_where(where, (*loc, ctx['field']))}: {e['msg']}")
            continue
        msg = _MESSAGES.get(kind) or e["msg"].removeprefix("Value error, ")
        if loc and loc[-1] in _TIME_FIELDS and kind in ("greater_than_equal", "less_than_equal"):
            bound = ctx["ge" if kind == "greater_than_equal" else "le"]
            at = datetime.fromtimestamp(bound, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            msg += f" ({at}; Unix epoch seconds expected)"
        got = "" if kind in _NO_INPUT else f" (got {_excerpt(e.get('input'))})"
        parts.append(f"{_where(where, loc) or 'record'}: {msg}{got}")
    return _join_bounded(parts)


def _join_bounded(parts: list[str]) -> str:
    out = ""
    for n, part in enumerate(parts):
        more = f"; and {len(parts) - n} more" if n else ""
        candidate = f"{out}; {part}" if out else part
        if len(candidate) > MAX_REASON_CHARS - 16 and out:
            return out + more
        out = candidate
    return _bounded(out)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _where(prefix: str, path: tuple[Any, ...]) -> str:
    out = prefix
    for p in path:
        if type(p) is int:
            out += f"[{p}]"
        else:
            name = p if type(p) is str and _PLAIN_KEY.fullmatch(p) else _excerpt(p)
            out += f".{name}" if out else name
    return out


def _excerpt(v: Any) -> str:
    """A value as a producer would write it in JSON, shortened."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if type(v) is int:
        if v.bit_length() <= 64:
            return str(v)
        if v.bit_length() > 14_000:  # str() refuses > 4300 digits
            return f"an integer of about {int(v.bit_length() * math.log10(2))} digits"
        s = str(abs(v))
        return f"{'-' if v < 0 else ''}{s[:12]}…({len(s)} digits)"
    if type(v) is float:
        return _json_float(v)
    if type(v) is str:
        return _shorten(v, 32)
    if type(v) is list:
        return f"an array of {len(v)}"
    if type(v) is dict:
        return "an object"
    return type(v).__name__


def _shorten(s: str, n: int) -> str:
    text = json.dumps(s[:n], ensure_ascii=False) if not _SURROGATE.search(s[:n]) else repr(s[:n])
    return text if len(s) <= n else f"{text}…({len(s)} chars)"


def _json_float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def _json_kind(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )
