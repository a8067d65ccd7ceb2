"""The allocation file: who holds which GPU (or MIG slice), and at what share.

Written by the scheduler's prolog/epilog or a Kubernetes device-plugin hook, read by the agent
(:class:`agents.attribution.Attributor`). Format (UTF-8 JSON)::

    {
      "version": 1,                                  # optional
      "allocations": [
        {"gpu_uuid": "GPU-5e2f...", "mig_uuid": null,
         "tenant": "acme", "job": "train-42",
         "billing_class": "on_demand",              # "on_demand" | "reserved" | "spot" | null
         "share_milli": 500,                        # 1..1000 milli-GPU (optional, default 1000)
         "since": 1718000000}                       # epoch seconds | null (optional)
      ]
    }

- ``gpu_uuid`` is required. ``mig_uuid`` (optional, default null) names one MIG slice of that
  GPU; an entry with ``mig_uuid: null`` allocates the whole GPU, every slice included.
- ``tenant`` and ``job`` are required, 1..128 characters, no control characters.
- ``share_milli`` (optional): the allocation's share of the device in milli-GPUs, an integer
  1..1000; 1000 (the default) is the whole device. Several entries may name one
  ``(gpu_uuid, mig_uuid)`` when they are shares (time-slicing, MPS, fractional-GPU schedulers):
  their shares sum to at most 1000 (the rest is idle) and no ``(tenant, job)`` appears twice
  on one device. Entries dated in the future count towards the sum already.
- ``since`` (optional): the entry applies from that second on; an entry dated in the future is
  ignored until then (lets a prolog write ahead of the job's start).
- Unknown keys are errors (they are usually typos such as ``tenat``, which would otherwise
  silently bill nobody).
- The writer must write atomically: ``<file>.tmp`` then ``rename()`` over the file
  (:func:`write_allocation_file`), so the agent never reads half a file.

Kubernetes fractional GPUs reach the agent through this file, written by a hook that knows
where the device plugin placed each pod (see agents/README.md);
:func:`share_milli_from_pod` turns the pod's fractional-GPU request into ``share_milli``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agents.errors import AgentError
from kernel.names import BILLING_CLASSES as CLASS_ORDER
from kernel.names import BillingClass
from schemas.frame import WHOLE

#: The billing classes an entry may name (kernel.names), as a set for membership tests.
BILLING_CLASSES: frozenset[str] = frozenset(CLASS_ORDER)
# Mirrors schemas.usage.Identifier: a value that would fail validation must be rejected here,
# or one bad entry or environment variable would make every sample of the GPU invalid.
_IDENTIFIER = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_ENTRY_KEYS = frozenset(
    {"gpu_uuid", "mig_uuid", "tenant", "job", "billing_class", "since", "share_milli"}
)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Who holds a device, at what share (milli-GPU). ``billing_class`` None: the tenant's
    contract default."""

    tenant: str
    job: str
    billing_class: BillingClass | None = None
    milli: int = WHOLE


class AllocationFileError(AgentError, ValueError):
    """The allocation file cannot be used; the message names the file and the bad entry."""


@dataclass(frozen=True, slots=True)
class Entry:
    gpu_uuid: str
    mig_uuid: str | None
    allocation: Allocation
    since: int | None


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and _IDENTIFIER.match(value) is not None


def is_share(value: object) -> bool:
    """An integer 1..1000 (``true`` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= WHOLE


def parse_allocation_file(text: str, source: str = "<allocation file>") -> list[Entry]:
    """Parse and validate the whole file; raise on the first bad entry, naming it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AllocationFileError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("allocations"), list):
        raise AllocationFileError(f'{source}: expected an object {{"allocations": [...]}}')
    entries: list[Entry] = []
    # per device: the shares so far and where each (tenant, job) was first seen
    total: dict[tuple[str, str | None], int] = {}
    seen: dict[tuple[str, str | None, str, str], int] = {}
    for i, raw in enumerate(doc["allocations"]):
        entry = _parse_entry(raw, f"{source}: allocations[{i}]")
        device = (entry.gpu_uuid, entry.mig_uuid)
        label = (
            f"{source}: allocations[{i}] (gpu_uuid={entry.gpu_uuid!r}, mig_uuid={entry.mig_uuid!r})"
        )
        a = entry.allocation
        first = seen.setdefault((*device, a.tenant, a.job), i)
        if first != i:
            raise AllocationFileError(
                f"{label} duplicates allocations[{first}]: tenant {a.tenant!r}, job {a.job!r} "
                "twice on one device"
            )
        total[device] = total.get(device, 0) + a.milli
        if total[device] > WHOLE:
            raise AllocationFileError(
                f"{label}: the shares of this device sum to {total[device]} milli-GPU with the "
                f"entries before it (at most {WHOLE}; an entry without share_milli is the whole "
                "device)"
            )
        entries.append(entry)
    return entries


def _parse_entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise AllocationFileError(f"{where}: expected an object, got {type(raw).__name__}")
    label = f"{where} (gpu_uuid={raw.get('gpu_uuid')!r})"
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise AllocationFileError(f"{label}: unknown keys {unknown}; allowed {sorted(_ENTRY_KEYS)}")
    for key in ("gpu_uuid", "tenant", "job"):
        if not is_identifier(raw.get(key)):
            raise AllocationFileError(
                f"{label}: {key} must be a string of 1..128 printable characters, "
                f"got {raw.get(key)!r}"
            )
    mig = raw.get("mig_uuid")
    if mig is not None and not is_identifier(mig):
        raise AllocationFileError(f"{label}: mig_uuid must be null or a string, got {mig!r}")
    billing_class = raw.get("billing_class")
    if billing_class is not None and billing_class not in BILLING_CLASSES:
        raise AllocationFileError(
            f"{label}: billing_class {billing_class!r} is not one of "
            f"{sorted(BILLING_CLASSES)} or null"
        )
    since = raw.get("since")
    # bool is an int subclass; `true` as a timestamp is a bug, not the second 1.
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
        raise AllocationFileError(f"{label}: since must be epoch seconds or null, got {since!r}")
    share = raw.get("share_milli", WHOLE)
    if not is_share(share):
        raise AllocationFileError(
            f"{label}: share_milli must be an integer 1..{WHOLE} (milli-GPU), got {share!r}"
        )
    return Entry(
        gpu_uuid=raw["gpu_uuid"],
        mig_uuid=mig,
        allocation=Allocation(raw["tenant"], raw["job"], billing_class, share),
        since=since,
    )


def write_allocation_file(path: Path, allocations: Sequence[Mapping[str, Any]]) -> None:
    """Write the allocation file atomically (what a prolog does): tmp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "allocations": list(allocations)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: Run:ai's pod annotation for a fractional GPU: the fraction of one GPU, e.g. "0.5".
RUNAI_GPU_FRACTION = "gpu-fraction"
#: HAMi's resource (pod limits) for a share of each GPU's cores, in percent, e.g. "30".
HAMI_GPU_CORES = "nvidia.com/gpucores"


def share_milli_from_pod(
    annotations: Mapping[str, str], limits: Mapping[str, str] | None = None
) -> int | None:
    """The ``share_milli`` a pod's fractional-GPU request means, for a hook that writes the
    allocation file; None when the pod asks for no fraction (a whole GPU).

    - Run:ai: annotation ``gpu-fraction: "0.5"`` -> 500 (0 < fraction <= 1, rounded to the
      nearest milli-GPU, at least 1).
    - HAMi: limit ``nvidia.com/gpucores: 30`` (percent of each GPU's cores) -> 300; 0 or 100
      is a whole GPU (HAMi reads 0 as "no core limit").

    Raises :class:`AllocationFileError` for a value that is not a valid fraction or percent."""
    fraction = annotations.get(RUNAI_GPU_FRACTION)
    if fraction is not None:
        try:
            value = Decimal(fraction.strip())
        except InvalidOperation:
            raise AllocationFileError(f"{RUNAI_GPU_FRACTION}={fraction!r}: not a number") from None
        if not 0 < value <= 1:
            raise AllocationFileError(f"{RUNAI_GPU_FRACTION}={fraction!r}: expected 0 < f <= 1")
        return max(1, int((value * WHOLE).to_integral_value()))
    cores = (limits or {}).get(HAMI_GPU_CORES)
    if cores is not None:
        text = cores.strip()
        if not text.isdigit() or not 0 <= int(text) <= 100:
            raise AllocationFileError(f"{HAMI_GPU_CORES}={cores!r}: expected a percent 0..100")
        return None if int(text) in (0, 100) else int(text) * 10
    return None
