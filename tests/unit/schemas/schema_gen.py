"""What both schema agreement tests (v1 samples, v2 frames) share: records generated from a
published JSON Schema (hypothesis-jsonschema, adapted to the installed Hypothesis), JSON as
different producers write it, the unicode-text rule, and the property settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import utils as cu

hypothesis_jsonschema = pytest.importorskip("hypothesis_jsonschema")
import hypothesis_jsonschema._from_schema as _hjs  # noqa: E402


class _Many:
    """hypothesis-jsonschema 0.23.1 (the latest) calls ``many(...).more()``, which Hypothesis
    replaced by iterating ``with many(...) as elements: for _ in elements``; this adapts the
    new protocol to the old call. Remove once hypothesis-jsonschema follows Hypothesis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._many = cu.many(*args, **kwargs)
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        if next(self._elements, StopIteration) is StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


if not hasattr(cu.many, "more"):

    class _Utils:
        many = _Many

    _hjs.cu = _Utils  # type: ignore[assignment]

from_schema = hypothesis_jsonschema.from_schema


def has_lone_surrogate(value: Any) -> bool:
    """Rule unicode-text."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def encode(doc: dict[str, Any], ascii_only: bool, ints_as_floats: bool = False) -> bytes:
    """JSON as different producers write it: \\uXXXX escapes or UTF-8 text; integers as
    ``7`` or, like Python's json given floats, as ``7.0`` (the same JSON Schema instance)."""
    if ints_as_floats:
        doc = _floats(doc)
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _floats(v: Any) -> Any:
    if type(v) is int and abs(v) < 2**53:
        return float(v)
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_floats(x) for x in v]
    return v


PROPERTY_SETTINGS = settings(
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
