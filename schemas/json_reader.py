"""Reading a record's bytes as JSON, tolerantly: what JSON forbids but producers send (``NaN``,
``Infinity``, numbers a double cannot hold, lone surrogates, invalid UTF-8 inside a string,
nesting past the recursion limit, integers of thousands of digits) is read, not refused, so
that one broken sample costs only itself. Python's ``json`` (C speed) reads what it can; an
iterative tokenizer here, which never recurses, reads the rest. Values that cannot be
represented become :class:`BadValue` marks in place, with the reason."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from schemas.reason import shorten
from schemas.rejection import Rejection

#: Containers nested deeper than this inside a sample or the envelope are a defect (a valid
#: record nests 4 levels: record, samples, sample, flags).
MAX_DEPTH = 16


class BadValue:
    """A value the tolerant parser could read but not represent (the reason says why)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def load(raw: bytes, key: str = "samples") -> tuple[Any, list[tuple[int, int]] | None] | Rejection:
    """The parsed document and, when the iterative tokenizer was needed, the byte span of each
    element of the top-level array ``key`` (``samples`` in v1, ``frames`` in v2). ``NaN``, ``Infinity`` and numbers a double
    cannot hold become :class:`BadValue` marks in place, whichever parser read them."""
    raw = bytes(raw)
    if not raw.strip():
        return Rejection("malformed_json", "not valid JSON: empty input", raw=raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _parse_tolerantly(raw, key)
    try:
        return json.loads(text, parse_constant=_not_finite, parse_float=_double), None
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return Rejection("malformed_json", reason, raw=raw)
    except (RecursionError, ValueError):
        # nested past Python's recursion limit; an integer past int's 4300-digit limit
        return _parse_tolerantly(raw, key)


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


def _parse_tolerantly(
    raw: bytes, key: str = "samples"
) -> tuple[Any, list[tuple[int, int]] | None] | Rejection:
    """JSON (plus ``NaN``/``Infinity``, as Python's ``json`` reads it) by an iterative state
    machine: any depth, any byte inside strings. What it cannot represent becomes a :class:`BadValue`
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
                        and frames[0].key == key
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
                value, start = BadValue(f"nested more than {MAX_DEPTH} levels deep"), deep_start
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
            return value, _spans_of(value, samples_frames, key)
        parent = frames[-1]
        if isinstance(parent.container, dict):
            parent.container[parent.key] = value
        else:
            parent.container.append(value)
            if parent.spans is not None:
                parent.spans.append((start, pos))
        state = _NEXT


def _spans_of(doc: Any, samples_frames: list[_Frame], key: str) -> list[tuple[int, int]] | None:
    samples = doc.get(key) if type(doc) is dict else None
    for frame in samples_frames:  # a duplicate "samples" key: the last one won in doc
        if frame.container is samples:
            return frame.spans
    return None


def _string(tok: bytes) -> Any:
    body = tok[1:-1]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadValue(f"not valid UTF-8 (byte 0x{body[exc.start]:02x} at byte {exc.start})")
    # The token pattern admitted only JSON escapes, so json reads it; lone surrogates stay
    # (and _find_defect names them).
    return json.loads(f'"{text}"') if "\\" in text else text


def _not_finite(literal: str) -> BadValue:
    return BadValue(f"{literal} is not a finite number")


def _double(literal: str) -> float | BadValue:
    f = float(literal)
    if math.isinf(f):
        return BadValue(f"{shorten(literal, 24)} is too large for a double")
    return f


def _scalar(kind: str | None, tok: bytes) -> Any:
    if kind == "str":
        return _string(tok)
    if kind == "lit":
        return _LITERALS[tok] if tok in _LITERALS else _not_finite(tok.decode())
    if b"." in tok or b"e" in tok or b"E" in tok:
        return _double(tok.decode())
    if len(tok) > 40:
        return BadValue(
            f"integer {tok[:12].decode()}…({len(tok.lstrip(b'-'))} digits) is out of range"
        )
    return int(tok)


def _malformed(raw: bytes, pos: int) -> Rejection:
    while pos < len(raw) and raw[pos] in b" \t\n\r":
        pos += 1
    what = "end of the record" if pos >= len(raw) else f"byte 0x{raw[pos]:02x}"
    return Rejection("malformed_json", f"not valid JSON: unexpected {what} at byte {pos}", raw=raw)


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def sample_spans(raw: bytes, key: str = "samples") -> list[tuple[int, int]]:
    """The byte span of each element of the top-level array ``key`` (``samples``, ``frames``), for a record ``json``
    already read: json's C decoder skips each value (``raw_decode`` says where it ends), so
    this costs one C call per top-level value and per sample. Empty if not found (the caller
    then keeps no exact bytes)."""
    text = raw.decode("utf-8")  # it decoded before, in load
    decode = _DECODER.raw_decode
    found: list[tuple[int, int]] = []
    try:
        i = _skip(text, 0)
        if text[i] != "{":
            return []
        i = _skip(text, i + 1)
        while text[i] != "}":
            name, i = decode(text, i)
            i = _skip(text, _skip(text, i) + 1)  # past the colon
            if name == key and text[i] == "[":
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
