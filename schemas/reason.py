"""Reasons: a pydantic validation error as one line that names the field (or the rule) and,
shortened, the value; never longer than :data:`MAX_REASON_CHARS`."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

#: Longest reason a rejection carries (the value itself is only ever shown shortened).
MAX_REASON_CHARS = 300
_SURROGATE = re.compile("[\ud800-\udfff]")

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
            parts.append(f"{location(where, loc) or 'record'} (rule {ctx['rule']}): {e['msg']}")
            continue
        if kind == "reserved_name":
            parts.append(f"{location(where, (*loc, ctx['field']))}: {e['msg']}")
            continue
        msg = _MESSAGES.get(kind) or e["msg"].removeprefix("Value error, ")
        if loc and loc[-1] in _TIME_FIELDS and kind in ("greater_than_equal", "less_than_equal"):
            bound = ctx["ge" if kind == "greater_than_equal" else "le"]
            at = datetime.fromtimestamp(bound, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            msg += f" ({at}; Unix epoch seconds expected)"
        got = "" if kind in _NO_INPUT else f" (got {excerpt(e.get('input'))})"
        parts.append(f"{location(where, loc) or 'record'}: {msg}{got}")
    return _join_bounded(parts)


def _join_bounded(parts: list[str]) -> str:
    out = ""
    for n, part in enumerate(parts):
        more = f"; and {len(parts) - n} more" if n else ""
        candidate = f"{out}; {part}" if out else part
        if len(candidate) > MAX_REASON_CHARS - 16 and out:
            return out + more
        out = candidate
    return bounded(out)


def bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def location(prefix: str, path: tuple[Any, ...]) -> str:
    out = prefix
    for p in path:
        if type(p) is int:
            out += f"[{p}]"
        else:
            name = p if type(p) is str and _PLAIN_KEY.fullmatch(p) else excerpt(p)
            out += f".{name}" if out else name
    return out


def excerpt(v: Any) -> str:
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
        return json_float(v)
    if type(v) is str:
        return shorten(v, 32)
    if type(v) is list:
        return f"an array of {len(v)}"
    if type(v) is dict:
        return "an object"
    return type(v).__name__


def shorten(s: str, n: int) -> str:
    text = json.dumps(s[:n], ensure_ascii=False) if not _SURROGATE.search(s[:n]) else repr(s[:n])
    return text if len(s) <= n else f"{text}…({len(s)} chars)"


def json_float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def json_kind(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )
