"""The per-second arrays of a v2 frame, each checked with whole-list operations: its length,
then its ``min`` and ``max`` (which check the element types too when the record holds no
boolean), and rule energy-matches-power from the columns' extremes. Only a column that fails is
walked element by element, to name the first bad second."""

from __future__ import annotations

from itertools import repeat
from operator import add, le, mul, sub, truediv
from typing import Any

from schemas.frame_fields import bad, broken
from schemas.reason import excerpt
from schemas.rule import ENERGY_EXEMPT_FLAGS, ENERGY_POWER_FACTOR, ENERGY_SLACK_J

_EXEMPT = frozenset(ENERGY_EXEMPT_FLAGS)
_NUMBER = frozenset((float, int))
_INTEGER = frozenset((int,))
_NULLABLE_NUMBER = frozenset((float, int, type(None)))
_F, _S = ENERGY_POWER_FACTOR, ENERGY_SLACK_J
#: energy / power strictly inside (1/factor, factor), by far more than a rounding error: then
#: power / factor - slack <= energy <= power * factor + slack holds (slack >= 0)
_RATIO_LOW, _RATIO_HIGH = (1 + 1e-9) / _F, _F * (1 - 1e-9)


def column(col: Any, n: int, where: str, name: str) -> list[Any]:
    if type(col) is not list:
        bad(where, (name,), f"must be an array (got {excerpt(col)})")
    if len(col) != n:
        broken(
            where,
            "frame-columns-aligned",
            f"{name} has {len(col)} seconds, sm_util has {n}",
        )
    return col


def numbers(
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
        column(col, n, where, name)  # raises
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
        bad(where, (name, i), f"must be {what} (got {excerpt(col[i])})")
    values = col if type(None) not in types else [v for v in col if v is not None]
    if not values:
        return lo, hi
    least, greatest = min(values), max(values)
    if least < lo or greatest > hi:
        i = next(i for i, v in enumerate(col) if v is not None and not lo <= v <= hi)
        bad(where, (name, i), f"must be within {lo:g}..{hi:g} (got {excerpt(col[i])})")
    return least, greatest


def integers(
    col: Any, n: int, lo: int, hi: int, where: str, name: str, fast: bool
) -> tuple[list[int], int]:
    """A per-second array of integers within ``lo..hi``, and its greatest value; numbers with
    no fractional part become ints."""
    column(col, n, where, name)
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
            bad(where, (name, i), f"must be an integer (got {excerpt(col[i])})")
        col = [int(v) for v in col]
    greatest = max(col)
    if min(col) < lo or greatest > hi:
        i = next(i for i, v in enumerate(col) if not lo <= v <= hi)
        bad(where, (name, i), f"must be within {lo}..{hi} (got {excerpt(col[i])})")
    return col, greatest


def energy(
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
            broken(
                where,
                "energy-matches-power",
                f"energy_j[{i}] {e:g} J is inconsistent with power_w[{i}] {p:g} W over one "
                f"second (allowed {max(low, 0):.0f}..{high:.0f} J)",
            )
