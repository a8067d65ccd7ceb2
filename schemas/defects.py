"""Defects of a parsed JSON value that no validator sees the same way (non-finite numbers,
integers beyond 64 bits, lone surrogates, nesting too deep, marks the tolerant reader left), and
JSON Schema's notion of an integer. Shared by the v1 and v2 validators: whatever the version, a
defect costs only the element (sample or frame) that holds it."""

from __future__ import annotations

import math
import re
from typing import Any

from schemas.json_reader import MAX_DEPTH, BadValue
from schemas.reason import excerpt, json_float

INT_MIN, INT_END = -(2**63), 2**64  # what orjson (and most producers) can hold
_SURROGATE = re.compile("[\ud800-\udfff]")


def integral(doc: dict[str, Any], names: tuple[str, ...]) -> None:
    """JSON Schema's integer includes numbers with no fractional part; strict pydantic does
    not, so they become ints here (only on the slow path: the fast path rejected them)."""
    for name in names:
        v = doc.get(name)
        if type(v) is float and v.is_integer() and INT_MIN <= v < INT_END:
            doc[name] = int(v)


# -- defects no validator sees the same way ------------------------------------------------------


def find_defect(value: Any) -> tuple[tuple[str | int, ...], str] | None:
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
                return path, f"{json_float(v)} is not a finite number"
        elif t is int:
            if not INT_MIN <= v < INT_END:
                return path, f"integer {excerpt(v)} is out of range"
        elif t is BadValue:
            return path, v.why
        elif t is dict or t is list:
            if depth >= MAX_DEPTH:
                return path, f"nested more than {MAX_DEPTH} levels deep"
            items = list(v.items()) if t is dict else list(enumerate(v))
            for k, x in reversed(items):  # reversed: the first defect in document order wins
                if type(k) is BadValue:
                    return path, f"a key is {k.why}"
                if t is dict and _SURROGATE.search(k):
                    return path + (k,), "lone surrogate in the key (not valid Unicode text)"
                stack.append((x, path + (k,), depth + 1))
    return None
