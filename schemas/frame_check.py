"""One v2 frame, checked column by column: a :class:`~schemas.frame.Frame`, or the reason it is
refused. No Python object per second: each per-second array is checked with whole-list
operations (the set of its element types, its min and max, its length), and only when one of
them fails is the array walked to name the first bad second.

Exactly what the published schema and :data:`schemas.rule_v2.RULES_V2` state, with no
coercion: a string is not a number, ``true`` is not ``1``; an integer is a number, and an
integer field or element also takes a number with no fractional part (JSON Schema's integer).
The caller has already ruled out what is not plain JSON data (:func:`schemas.defects.find_defect`
on the slow path; orjson refuses it on the fast path)."""

from __future__ import annotations

import re
from itertools import repeat
from operator import add, le, mul, sub, truediv
from typing import Any, NoReturn

from kernel.names import BILLING_CLASSES, RESERVED_TENANTS
from schemas.common import (
    CONTROL_CHARS,
    MAX_ENERGY_J,
    MAX_MEMORY_BYTES,
    MAX_PERCENT,
    MAX_POWER_W,
    MAX_TEMP_C,
    MAX_TEXT,
    MAX_TS,
    MIN_TEMP_C,
    MIN_TS,
    SampleFlag,
)
from schemas.frame import Frame, Share
from schemas.reason import bounded, excerpt, location
from schemas.rule import ENERGY_EXEMPT_FLAGS, ENERGY_POWER_FACTOR, ENERGY_SLACK_J
from schemas.rule_v2 import MAX_FRAME_SECONDS, WHOLE_MILLI

_REQUIRED = frozenset(
    (
        "gpu_uuid",
        "gpu_model",
        "start",
        "allocations",
        "sm_util",
        "mem_util",
        "mem_used",
        "mem_total",
        "power_w",
        "energy_j",
    )
)
_KEYS = _REQUIRED | {"mig_uuid", "temp_c", "flags"}
_SHARE_REQUIRED = frozenset(("tenant", "job", "share_milli"))
_SHARE_KEYS = _SHARE_REQUIRED | {"billing_class", "sm_util"}
_FLAGS_KEYS = frozenset(("index", "flags"))
_SAMPLE_FLAGS: frozenset[str] = frozenset(SampleFlag.__args__)  # type: ignore[attr-defined]
_EXEMPT = frozenset(ENERGY_EXEMPT_FLAGS)
_CLASSES: frozenset[str] = frozenset(BILLING_CLASSES)
_NUMBER = frozenset((float, int))
_INTEGER = frozenset((int,))
_NULLABLE_NUMBER = frozenset((float, int, type(None)))
_CONTROL = re.compile(CONTROL_CHARS)
_F, _S = ENERGY_POWER_FACTOR, ENERGY_SLACK_J
#: energy / power strictly inside (1/factor, factor), by far more than a rounding error: then
#: power / factor - slack <= energy <= power * factor + slack holds (slack >= 0)
_RATIO_LOW, _RATIO_HIGH = (1 + 1e-9) / _F, _F * (1 - 1e-9)
#: Texts already found valid (device ids, models, tenants and jobs repeat in every record).
_TEXT_OK: set[str] = set()
_TEXT_CACHE = 65_536


class FrameError(ValueError):
    """Why a frame is refused: one line naming the field (and the second) or the rule."""


def check_frame(f: Any, where: str, fast: bool = False) -> Frame:
    """The frame ``f`` (one parsed element of ``frames``), or :class:`FrameError`. ``where``
    prefixes reasons (``frames[3]``).

    ``fast``: the caller knows the record holds no boolean (no ``true``/``false`` literal in
    its bytes). Then a column's ``min`` and ``max`` check its types and its range at once (a
    string, null, array or object among numbers cannot be compared, so it raises; only a
    boolean would compare as a number), and only a column that fails is walked element by
    element for the reason. Without ``fast``, each column's element types are checked first."""
    if type(f) is not dict:
        _bad(where, (), f"must be an object (got {excerpt(f)})")
    keys = f.keys()
    if not keys <= _KEYS:
        _bad(where, (_first(keys - _KEYS),), "unknown field (the schema allows no others)")
    if not keys >= _REQUIRED:
        _bad(where, (_first(_REQUIRED - keys),), "required field missing")
    gpu_uuid = _text(f["gpu_uuid"], where, "gpu_uuid")
    mig_uuid = f.get("mig_uuid")
    if mig_uuid is not None:
        _text(mig_uuid, where, "mig_uuid")
    gpu_model = _text(f["gpu_model"], where, "gpu_model")
    start = _integer(f["start"], where, ("start",), MIN_TS, MAX_TS)
    sm_util = f["sm_util"]
    if type(sm_util) is not list:
        _bad(where, ("sm_util",), f"must be an array (got {excerpt(sm_util)})")
    n = len(sm_util)
    if not 1 <= n <= MAX_FRAME_SECONDS:
        _bad(where, ("sm_util",), f"must hold 1..{MAX_FRAME_SECONDS} seconds (got {n})")
    if start + n - 1 > MAX_TS:
        _rule(
            where,
            "frame-ends-in-range",
            f"the last second {start + n - 1} is after {MAX_TS} (start {start}, {n} seconds)",
        )
    _numbers(sm_util, n, 0, MAX_PERCENT, where, "sm_util", fast)
    mem_util = f["mem_util"]
    _numbers(mem_util, n, 0, MAX_PERCENT, where, "mem_util", fast)
    mem_total = _integer(f["mem_total"], where, ("mem_total",), 0, MAX_MEMORY_BYTES)
    mem_used, mem_max = _integers(f["mem_used"], n, 0, MAX_MEMORY_BYTES, where, "mem_used", fast)
    power_w, energy_j = f["power_w"], f["energy_j"]
    power_range = _numbers(power_w, n, 0, MAX_POWER_W, where, "power_w", fast)
    energy_range = _numbers(energy_j, n, 0, MAX_ENERGY_J, where, "energy_j", fast)
    temp_c = f.get("temp_c")
    if temp_c is not None:
        _numbers(temp_c, n, MIN_TEMP_C, MAX_TEMP_C, where, "temp_c", fast, nullable=True)
    flags = _flags(f.get("flags", []), n, where)
    shares = _allocations(f["allocations"], n, where, fast)
    if mem_max > mem_total:
        i = next(i for i, v in enumerate(mem_used) if v > mem_total)
        _rule(
            where,
            "mem-used-within-total",
            f"mem_used[{i}] {mem_used[i]} exceeds mem_total {mem_total} bytes",
        )
    _energy(power_w, energy_j, power_range, energy_range, flags, where)
    return Frame(
        gpu_uuid,
        mig_uuid,
        gpu_model,
        start,
        shares,
        sm_util,
        mem_util,
        mem_used,
        mem_total,
        power_w,
        energy_j,
        temp_c,
        flags,
    )


# -- columns -------------------------------------------------------------------------------------


def _column(col: Any, n: int, where: str, name: str) -> list[Any]:
    if type(col) is not list:
        _bad(where, (name,), f"must be an array (got {excerpt(col)})")
    if len(col) != n:
        _rule(
            where,
            "frame-columns-aligned",
            f"{name} has {len(col)} seconds, sm_util has {n}",
        )
    return col


def _numbers(
    col: Any,
    n: int,
    lo: float,
    hi: float,
    where: str,
    name: str,
    fast: bool,
    nullable: bool = False,
) -> tuple[float, float]:
    """A per-second array of numbers within ``lo..hi`` (nulls allowed when ``nullable``): its
    least and greatest value (``lo, hi`` when it holds only nulls)."""
    if type(col) is not list or len(col) != n:
        _column(col, n, where, name)  # raises
    if fast:
        try:
            least, greatest = min(col), max(col)
            if lo <= least and greatest <= hi:
                return least, greatest
        except TypeError:
            pass  # not all numbers: named below
    types = set(map(type, col))
    if not types <= (_NULLABLE_NUMBER if nullable else _NUMBER):
        ok = _NULLABLE_NUMBER if nullable else _NUMBER
        i = next(i for i, v in enumerate(col) if type(v) not in ok)
        what = "a number or null" if nullable else "a number"
        _bad(where, (name, i), f"must be {what} (got {excerpt(col[i])})")
    values = col if type(None) not in types else [v for v in col if v is not None]
    if not values:
        return lo, hi
    least, greatest = min(values), max(values)
    if least < lo or greatest > hi:
        i = next(i for i, v in enumerate(col) if v is not None and not lo <= v <= hi)
        _bad(where, (name, i), f"must be within {lo:g}..{hi:g} (got {excerpt(col[i])})")
    return least, greatest


def _integers(
    col: Any, n: int, lo: int, hi: int, where: str, name: str, fast: bool
) -> tuple[list[int], int]:
    """A per-second array of integers within ``lo..hi``, and its greatest value; numbers with
    no fractional part become ints."""
    _column(col, n, where, name)
    if fast:
        try:
            # a sum of ints is an int: one float makes it a float (then converted below)
            if type(sum(col)) is int:
                greatest = max(col)
                if lo <= min(col) and greatest <= hi:
                    return col, greatest
        except TypeError:
            pass
    types = set(map(type, col))
    if not types <= _INTEGER:
        if not types <= _NUMBER or not all(type(v) is int or v.is_integer() for v in col):
            i = next(
                i
                for i, v in enumerate(col)
                if not (type(v) is int or (type(v) is float and v.is_integer()))
            )
            _bad(where, (name, i), f"must be an integer (got {excerpt(col[i])})")
        col = [int(v) for v in col]
    greatest = max(col)
    if min(col) < lo or greatest > hi:
        i = next(i for i, v in enumerate(col) if not lo <= v <= hi)
        _bad(where, (name, i), f"must be within {lo}..{hi} (got {excerpt(col[i])})")
    return col, greatest


def _energy(
    power: list[float],
    energy: list[float],
    power_range: tuple[float, float],
    energy_range: tuple[float, float],
    flags: dict[int, tuple[str, ...]],
    where: str,
) -> None:
    """Rule energy-matches-power for every second not exempt by its flags. The bounds are
    monotone in power (also as rounded floats), so when the extremes pass, every second
    passes, with no walk."""
    exempt = {i for i, fl in flags.items() if _EXEMPT.intersection(fl)} if flags else ()
    if len(exempt) == len(power):
        return
    if not exempt:
        (p_min, p_max), (e_min, e_max) = power_range, energy_range
        if e_max <= p_min * _F + _S and p_max / _F - _S <= e_min:
            return
        if p_min > 0:
            # energy within (1/factor, factor) x power, with room for rounding, keeps the rule
            ratios = list(map(truediv, energy, power))
            if min(ratios) >= _RATIO_LOW and max(ratios) <= _RATIO_HIGH:
                return
        # the rule's own expressions, element-wise, at C speed
        highs = map(add, map(mul, power, repeat(_F)), repeat(_S))
        lows = map(sub, map(truediv, power, repeat(_F)), repeat(_S))
        if all(map(le, energy, highs)) and all(map(le, lows, energy)):
            return
    for i, (p, e) in enumerate(zip(power, energy, strict=True)):
        if i in exempt:
            continue
        high, low = p * _F + _S, p / _F - _S
        if not low <= e <= high:
            _rule(
                where,
                "energy-matches-power",
                f"energy_j[{i}] {e:g} J is inconsistent with power_w[{i}] {p:g} W over one "
                f"second (allowed {max(low, 0):.0f}..{high:.0f} J)",
            )


def _flags(flags: Any, n: int, where: str) -> dict[int, tuple[str, ...]]:
    if type(flags) is not list:
        _bad(where, ("flags",), f"must be an array (got {excerpt(flags)})")
    out: dict[int, tuple[str, ...]] = {}
    for k, entry in enumerate(flags):
        if type(entry) is not dict:
            _bad(where, ("flags", k), f"must be an object (got {excerpt(entry)})")
        if entry.keys() != _FLAGS_KEYS:
            extra = entry.keys() - _FLAGS_KEYS
            if extra:
                _bad(where, ("flags", k, _first(extra)), "unknown field (the schema allows none)")
            _bad(where, ("flags", k, _first(_FLAGS_KEYS - entry.keys())), "required field missing")
        index = _integer(entry["index"], where, ("flags", k, "index"), 0, MAX_FRAME_SECONDS - 1)
        names = entry["flags"]
        if type(names) is not list:
            _bad(where, ("flags", k, "flags"), f"must be an array (got {excerpt(names)})")
        for j, name in enumerate(names):
            if type(name) is not str or name not in _SAMPLE_FLAGS:
                _bad(
                    where,
                    ("flags", k, "flags", j),
                    f"must be one of {', '.join(sorted(_SAMPLE_FLAGS))} (got {excerpt(name)})",
                )
        if index >= n:
            _rule(where, "flags-index-in-frame", f"flags[{k}].index {index} is not < n = {n}")
        if index in out:
            _rule(where, "flags-index-in-frame", f"flags[{k}].index {index} appears twice")
        out[index] = tuple(names)
    return out


# -- allocations ---------------------------------------------------------------------------------


def _allocations(items: Any, n: int, where: str, fast: bool) -> tuple[Share, ...]:
    if type(items) is not list:
        _bad(where, ("allocations",), f"must be an array (got {excerpt(items)})")
    if len(items) > WHOLE_MILLI:
        _bad(where, ("allocations",), f"holds at most {WHOLE_MILLI} (got {len(items)})")
    if len(items) < 2:  # one share is within the device and unique by its own bounds
        return (_share(items[0], 0, n, where, fast),) if items else ()
    shares = tuple(_share(a, k, n, where, fast) for k, a in enumerate(items))
    total = sum(s.milli for s in shares)
    if total > WHOLE_MILLI:
        _rule(
            where,
            "shares-within-device",
            f"allocations' share_milli sum to {total}, more than {WHOLE_MILLI}",
        )
    if len({(s.tenant, s.job) for s in shares}) != len(shares):
        seen: set[tuple[str, str]] = set()
        for s in shares:
            if (s.tenant, s.job) in seen:
                _rule(
                    where,
                    "allocation-unique",
                    f"tenant {excerpt(s.tenant)} job {excerpt(s.job)} is allocated twice",
                )
            seen.add((s.tenant, s.job))
    return shares


def _share(a: Any, k: int, n: int, where: str, fast: bool) -> Share:
    at = f"{where}.allocations[{k}]"
    if type(a) is not dict:
        _bad(at, (), f"must be an object (got {excerpt(a)})")
    keys = a.keys()
    if not keys <= _SHARE_KEYS:
        _bad(at, (_first(keys - _SHARE_KEYS),), "unknown field (the schema allows no others)")
    if not keys >= _SHARE_REQUIRED:
        _bad(at, (_first(_SHARE_REQUIRED - keys),), "required field missing")
    tenant = _text(a["tenant"], at, "tenant")
    if tenant in RESERVED_TENANTS:
        _bad(
            at,
            ("tenant",),
            f"'{tenant}' is reserved (it marks idle seconds in the ledger); leave the idle "
            "part of the device unallocated",
        )
    job = _text(a["job"], at, "job")
    milli = _integer(a["share_milli"], at, ("share_milli",), 1, WHOLE_MILLI)
    billing_class = a.get("billing_class")
    if billing_class is not None and (
        type(billing_class) is not str or billing_class not in _CLASSES
    ):
        _bad(
            at,
            ("billing_class",),
            f"must be one of {', '.join(sorted(_CLASSES))} or null (got {excerpt(billing_class)})",
        )
    sm = a.get("sm_util")
    if sm is not None:
        _numbers(sm, n, 0, MAX_PERCENT, at, "sm_util", fast)
        sm = tuple(sm)
    return Share(tenant, job, milli, billing_class, sm)


# -- scalars and reasons -------------------------------------------------------------------------


def _text(v: Any, where: str, name: str) -> str:
    if type(v) is str and v in _TEXT_OK:
        return v
    if type(v) is not str:
        _bad(where, (name,), f"must be a string (got {excerpt(v)})")
    if not 1 <= len(v) <= MAX_TEXT:
        _bad(where, (name,), f"must be 1..{MAX_TEXT} characters (got {excerpt(v)})")
    if _CONTROL.search(v):
        _bad(where, (name,), "must not contain control characters (U+0000-U+001F, U+007F)")
    if len(_TEXT_OK) >= _TEXT_CACHE:
        _TEXT_OK.clear()
    _TEXT_OK.add(v)
    return v


def _integer(v: Any, where: str, path: tuple[str | int, ...], lo: int, hi: int) -> int:
    if type(v) is not int:
        if type(v) is not float or not v.is_integer():
            _bad(where, path, f"must be an integer (got {excerpt(v)})")
        v = int(v)
    if not lo <= v <= hi:
        _bad(where, path, f"must be within {lo}..{hi} (got {excerpt(v)})")
    return v


def _first(keys: Any) -> Any:
    return sorted(keys, key=str)[0]


def _bad(where: str, path: tuple[Any, ...], why: str) -> NoReturn:
    raise FrameError(bounded(f"{location(where, path)}: {why}"))


def _rule(where: str, rule: str, why: str) -> NoReturn:
    raise FrameError(bounded(f"{where} (rule {rule}): {why}"))
