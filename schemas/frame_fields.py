"""The scalars of a v2 frame (texts, integers) and the reasons a frame is refused: one line
naming the field (with the second's index for a per-second array) or the rule. Shared by
:mod:`schemas.frame_columns` and :mod:`schemas.frame_check`."""

from __future__ import annotations

import re
from typing import Any, NoReturn

from schemas.common import CONTROL_CHARS, MAX_TEXT
from schemas.reason import bounded, excerpt, location

_CONTROL = re.compile(CONTROL_CHARS)
#: Texts already found valid (device ids, models, tenants and jobs repeat in every record).
_TEXT_OK: set[str] = set()
_TEXT_CACHE = 16_384  # at most a few MB


class FrameError(ValueError):
    """Why a frame is refused: one line naming the field (and the second) or the rule."""


def text(v: Any, where: str, name: str) -> str:
    """An identifier: a string of 1..128 characters, no control character."""
    if type(v) is str and v in _TEXT_OK:
        return v
    if type(v) is not str:
        bad(where, (name,), f"must be a string (got {excerpt(v)})")
    if not 1 <= len(v) <= MAX_TEXT:
        bad(where, (name,), f"must be 1..{MAX_TEXT} characters (got {excerpt(v)})")
    if _CONTROL.search(v):
        bad(where, (name,), "must not contain control characters (U+0000-U+001F, U+007F)")
    if len(_TEXT_OK) >= _TEXT_CACHE:
        _TEXT_OK.clear()
    _TEXT_OK.add(v)
    return v


def integer(v: Any, where: str, path: tuple[str | int, ...], lo: int, hi: int) -> int:
    """An integer within ``lo..hi`` (a number with no fractional part is one, as an int)."""
    if type(v) is not int:
        if type(v) is not float or not v.is_integer():
            bad(where, path, f"must be an integer (got {excerpt(v)})")
        v = int(v)
    if not lo <= v <= hi:
        bad(where, path, f"must be within {lo}..{hi} (got {excerpt(v)})")
    return v


def first(keys: Any) -> Any:
    """The key a reason names, of several at fault (stable across runs)."""
    return sorted(keys, key=str)[0]


def bad(where: str, path: tuple[Any, ...], why: str) -> NoReturn:
    """Refuse the frame: ``where.path: why``."""
    raise FrameError(bounded(f"{location(where, path)}: {why}"))


def broken(where: str, rule: str, why: str) -> NoReturn:
    """Refuse the frame for a published rule: ``where (rule id): why``."""
    raise FrameError(bounded(f"{where} (rule {rule}): {why}"))
