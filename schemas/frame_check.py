"""One v2 frame, checked column by column: a :class:`~schemas.frame.Frame`, or the reason it is
refused. No Python object per second: each per-second array is checked with whole-list
operations (:mod:`schemas.frame_columns`); this module checks the frame's structure, its
allocations and its flags.

Exactly what the published schema and :data:`schemas.rule_v2.RULES_V2` state, with no
coercion: a string is not a number, ``true`` is not ``1``; an integer is a number, and an
integer field or element also takes a number with no fractional part (JSON Schema's integer).
The caller has already ruled out what is not plain JSON data (:func:`schemas.defects.find_defect`
on the slow path; orjson refuses it on the fast path)."""

from __future__ import annotations

from typing import Any

from kernel.names import BILLING_CLASSES, RESERVED_TENANTS
from schemas.common import (
    MAX_ENERGY_J,
    MAX_MEMORY_BYTES,
    MAX_PERCENT,
    MAX_POWER_W,
    MAX_TEMP_C,
    MAX_TS,
    MIN_TEMP_C,
    MIN_TS,
    SampleFlag,
)
from schemas.frame import Frame, Share
from schemas.frame_columns import energy, integers, numbers
from schemas.frame_fields import FrameError as FrameError
from schemas.frame_fields import bad, broken, first, integer, text
from schemas.reason import excerpt
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
_CLASSES: frozenset[str] = frozenset(BILLING_CLASSES)


def check_frame(f: Any, where: str, fast: bool = False) -> Frame:
    """The frame ``f`` (one parsed element of ``frames``), or :class:`FrameError`. ``where``
    prefixes reasons (``frames[3]``).

    ``fast``: the caller knows the record holds no boolean (no ``true``/``false`` literal in
    its bytes). Then a column's ``min`` and ``max`` check its types and its range at once (a
    string, null, array or object among numbers cannot be compared, so it raises; only a
    boolean would compare as a number), and only a column that fails is walked element by
    element for the reason. Without ``fast``, each column's element types are checked first."""
    if type(f) is not dict:
        bad(where, (), f"must be an object (got {excerpt(f)})")
    keys = f.keys()
    if not keys <= _KEYS:
        bad(where, (first(keys - _KEYS),), "unknown field (the schema allows no others)")
    if not keys >= _REQUIRED:
        bad(where, (first(_REQUIRED - keys),), "required field missing")
    gpu_uuid = text(f["gpu_uuid"], where, "gpu_uuid")
    mig_uuid = f.get("mig_uuid")
    if mig_uuid is not None:
        text(mig_uuid, where, "mig_uuid")
    gpu_model = text(f["gpu_model"], where, "gpu_model")
    start = integer(f["start"], where, ("start",), MIN_TS, MAX_TS)
    sm_util = f["sm_util"]
    if type(sm_util) is not list:
        bad(where, ("sm_util",), f"must be an array (got {excerpt(sm_util)})")
    n = len(sm_util)
    if not 1 <= n <= MAX_FRAME_SECONDS:
        bad(where, ("sm_util",), f"must hold 1..{MAX_FRAME_SECONDS} seconds (got {n})")
    if start + n - 1 > MAX_TS:
        broken(
            where,
            "frame-ends-in-range",
            f"the last second {start + n - 1} is after {MAX_TS} (start {start}, {n} seconds)",
        )
    numbers(sm_util, n, 0, MAX_PERCENT, where, "sm_util", fast)
    mem_util = f["mem_util"]
    numbers(mem_util, n, 0, MAX_PERCENT, where, "mem_util", fast)
    mem_total = integer(f["mem_total"], where, ("mem_total",), 0, MAX_MEMORY_BYTES)
    mem_used, mem_max = integers(f["mem_used"], n, 0, MAX_MEMORY_BYTES, where, "mem_used", fast)
    power_w, energy_j = f["power_w"], f["energy_j"]
    power_range = numbers(power_w, n, 0, MAX_POWER_W, where, "power_w", fast)
    energy_range = numbers(energy_j, n, 0, MAX_ENERGY_J, where, "energy_j", fast)
    temp_c = f.get("temp_c")
    if temp_c is not None:
        numbers(temp_c, n, MIN_TEMP_C, MAX_TEMP_C, where, "temp_c", fast, nullable=True)
    flags = _flags(f.get("flags", []), n, where)
    shares = _allocations(f["allocations"], n, where, fast)
    if mem_max > mem_total:
        i = next(i for i, v in enumerate(mem_used) if v > mem_total)
        broken(
            where,
            "mem-used-within-total",
            f"mem_used[{i}] {mem_used[i]} exceeds mem_total {mem_total} bytes",
        )
    energy(power_w, energy_j, power_range, energy_range, flags, where)
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


def _flags(flags: Any, n: int, where: str) -> dict[int, tuple[str, ...]]:
    if type(flags) is not list:
        bad(where, ("flags",), f"must be an array (got {excerpt(flags)})")
    out: dict[int, tuple[str, ...]] = {}
    for k, entry in enumerate(flags):
        if type(entry) is not dict:
            bad(where, ("flags", k), f"must be an object (got {excerpt(entry)})")
        if entry.keys() != _FLAGS_KEYS:
            extra = entry.keys() - _FLAGS_KEYS
            if extra:
                bad(where, ("flags", k, first(extra)), "unknown field (the schema allows none)")
            bad(where, ("flags", k, first(_FLAGS_KEYS - entry.keys())), "required field missing")
        index = integer(entry["index"], where, ("flags", k, "index"), 0, MAX_FRAME_SECONDS - 1)
        names = entry["flags"]
        if type(names) is not list:
            bad(where, ("flags", k, "flags"), f"must be an array (got {excerpt(names)})")
        for j, name in enumerate(names):
            if type(name) is not str or name not in _SAMPLE_FLAGS:
                bad(
                    where,
                    ("flags", k, "flags", j),
                    f"must be one of {', '.join(sorted(_SAMPLE_FLAGS))} (got {excerpt(name)})",
                )
        if index >= n:
            broken(where, "flags-index-in-frame", f"flags[{k}].index {index} is not < n = {n}")
        if index in out:
            broken(where, "flags-index-in-frame", f"flags[{k}].index {index} appears twice")
        out[index] = tuple(names)
    return out


# -- allocations ---------------------------------------------------------------------------------


def _allocations(items: Any, n: int, where: str, fast: bool) -> tuple[Share, ...]:
    if type(items) is not list:
        bad(where, ("allocations",), f"must be an array (got {excerpt(items)})")
    if len(items) > WHOLE_MILLI:
        bad(where, ("allocations",), f"holds at most {WHOLE_MILLI} (got {len(items)})")
    if len(items) < 2:  # one share is within the device and unique by its own bounds
        return (_share(items[0], 0, n, where, fast),) if items else ()
    shares = tuple(_share(a, k, n, where, fast) for k, a in enumerate(items))
    total = sum(s.milli for s in shares)
    if total > WHOLE_MILLI:
        broken(
            where,
            "shares-within-device",
            f"allocations' share_milli sum to {total}, more than {WHOLE_MILLI}",
        )
    if len({(s.tenant, s.job) for s in shares}) != len(shares):
        seen: set[tuple[str, str]] = set()
        for s in shares:
            if (s.tenant, s.job) in seen:
                broken(
                    where,
                    "allocation-unique",
                    f"tenant {excerpt(s.tenant)} job {excerpt(s.job)} is allocated twice",
                )
            seen.add((s.tenant, s.job))
    return shares


def _share(a: Any, k: int, n: int, where: str, fast: bool) -> Share:
    at = f"{where}.allocations[{k}]"
    if type(a) is not dict:
        bad(at, (), f"must be an object (got {excerpt(a)})")
    keys = a.keys()
    if not keys <= _SHARE_KEYS:
        bad(at, (first(keys - _SHARE_KEYS),), "unknown field (the schema allows no others)")
    if not keys >= _SHARE_REQUIRED:
        bad(at, (first(_SHARE_REQUIRED - keys),), "required field missing")
    tenant = text(a["tenant"], at, "tenant")
    if tenant in RESERVED_TENANTS:
        bad(
            at,
            ("tenant",),
            f"'{tenant}' is reserved (it marks idle seconds in the ledger); leave the idle "
            "part of the device unallocated",
        )
    job = text(a["job"], at, "job")
    milli = integer(a["share_milli"], at, ("share_milli",), 1, WHOLE_MILLI)
    billing_class = a.get("billing_class")
    if billing_class is not None and (
        type(billing_class) is not str or billing_class not in _CLASSES
    ):
        bad(
            at,
            ("billing_class",),
            f"must be one of {', '.join(sorted(_CLASSES))} or null (got {excerpt(billing_class)})",
        )
    sm = a.get("sm_util")
    if sm is not None:
        numbers(sm, n, 0, MAX_PERCENT, at, "sm_util", fast)
        sm = tuple(sm)
    return Share(tenant, job, milli, billing_class, sm)
