"""Attribution: which allocation (tenant, job, billing class) a GPU-second belongs to, or idle.

Billing is for *allocated* GPU-seconds, so the question is "who was this GPU reserved for",
not "who ran a kernel". Two sources answer it, in this order of precedence:

1. **The allocation file**, written by the scheduler's prolog/epilog. The scheduler is
   authoritative: it knows about a reserved GPU even while the job's processes are still
   starting or are between kernels. Format (UTF-8 JSON)::

       {
         "version": 1,                                  # optional
         "allocations": [
           {"gpu_uuid": "GPU-5e2f...", "mig_uuid": null,
            "tenant": "acme", "job": "train-42",
            "billing_class": "on_demand",              # "on_demand" | "reserved" | "spot" | null
            "since": 1718000000}                       # epoch seconds | null (optional)
         ]
       }

   - ``gpu_uuid`` is required. ``mig_uuid`` (optional, default null) names one MIG slice of
     that GPU; an entry with ``mig_uuid: null`` allocates the whole GPU, every slice included.
   - ``tenant`` and ``job`` are required, 1..128 characters, no control characters.
   - ``since`` (optional): the entry applies from that second on; an entry dated in the future
     is ignored until then (lets a prolog write ahead of the job's start).
   - At most one entry per ``(gpu_uuid, mig_uuid)``; unknown keys are errors (they are
     usually typos such as ``tenat``, which would otherwise silently bill nobody).
   - The prolog/epilog must write atomically: write ``<file>.tmp`` then ``rename()`` it over
     the file, so the agent never reads half a file. A missing file means "no allocations".

   The file is re-read when its stat identity (mtime, size, inode) changes. A malformed file
   logs one error naming the bad entry and the agent keeps the last good content: a broken
   prolog must not turn every allocated second into idle, nor stop the sampler.

2. **The processes on the GPU** (pids from NVML): their ``/proc/<pid>/environ``. A process
   declares its allocation with ``GPUMETER_TENANT`` + ``GPUMETER_JOB`` (and optionally
   ``GPUMETER_BILLING_CLASS``), or Slurm's ``SLURM_JOB_ACCOUNT`` (tenant) + ``SLURM_JOB_ID``
   (job). The agent needs the host's pid namespace to read them (``hostPID: true`` in k8s).
   Unreadable (permission) or vanished processes are skipped.

Nothing known: ``None``, i.e. idle. An idle second is recorded, never dropped: it is the
denominator of utilization and the capacity that can still be sold.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from agents.errors import AgentError
from schemas.usage import BillingClass

log = logging.getLogger(__name__)

#: Default location of the allocation file on a node (the prolog/epilog write it).
DEFAULT_ALLOCATION_FILE = Path("/run/gpumeter/allocations.json")

_BILLING_CLASSES: frozenset[str] = frozenset(get_args(BillingClass))
# Mirrors schemas.usage.Identifier: a value that would fail GpuSecond validation must be
# rejected here, or one bad environment variable would make every sample of the GPU invalid.
_IDENTIFIER = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_ENTRY_KEYS = frozenset({"gpu_uuid", "mig_uuid", "tenant", "job", "billing_class", "since"})


@dataclass(frozen=True, slots=True)
class Allocation:
    """Who a GPU-second belongs to. ``billing_class`` None: the tenant's contract default."""

    tenant: str
    job: str
    billing_class: BillingClass | None = None


class AllocationFileError(AgentError, ValueError):
    """The allocation file cannot be used; the message names the file and the bad entry."""


@dataclass(frozen=True, slots=True)
class _Entry:
    gpu_uuid: str
    mig_uuid: str | None
    allocation: Allocation
    since: int | None


def parse_allocation_file(text: str, source: str = "<allocation file>") -> list[_Entry]:
    """Parse and validate the whole file; raise on the first bad entry, naming it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AllocationFileError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("allocations"), list):
        raise AllocationFileError(f'{source}: expected an object {{"allocations": [...]}}')
    entries: list[_Entry] = []
    seen: dict[tuple[str, str | None], int] = {}
    for i, raw in enumerate(doc["allocations"]):
        entry = _parse_entry(raw, f"{source}: allocations[{i}]")
        key = (entry.gpu_uuid, entry.mig_uuid)
        if key in seen:
            # Two tenants on one GPU is a scheduler bug; billing either would be a guess.
            raise AllocationFileError(
                f"{source}: allocations[{i}] (gpu_uuid={entry.gpu_uuid!r}, "
                f"mig_uuid={entry.mig_uuid!r}) duplicates allocations[{seen[key]}]"
            )
        seen[key] = i
        entries.append(entry)
    return entries


def _parse_entry(raw: Any, where: str) -> _Entry:
    if not isinstance(raw, dict):
        raise AllocationFileError(f"{where}: expected an object, got {type(raw).__name__}")
    label = f"{where} (gpu_uuid={raw.get('gpu_uuid')!r})"
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise AllocationFileError(f"{label}: unknown keys {unknown}; allowed {sorted(_ENTRY_KEYS)}")
    for key in ("gpu_uuid", "tenant", "job"):
        if not _is_identifier(raw.get(key)):
            raise AllocationFileError(
                f"{label}: {key} must be a string of 1..128 printable characters, "
                f"got {raw.get(key)!r}"
            )
    mig = raw.get("mig_uuid")
    if mig is not None and not _is_identifier(mig):
        raise AllocationFileError(f"{label}: mig_uuid must be null or a string, got {mig!r}")
    billing_class = raw.get("billing_class")
    if billing_class is not None and billing_class not in _BILLING_CLASSES:
        raise AllocationFileError(
            f"{label}: billing_class {billing_class!r} is not one of "
            f"{sorted(_BILLING_CLASSES)} or null"
        )
    since = raw.get("since")
    # bool is an int subclass; `true` as a timestamp is a bug, not the second 1.
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
        raise AllocationFileError(f"{label}: since must be epoch seconds or null, got {since!r}")
    return _Entry(
        gpu_uuid=raw["gpu_uuid"],
        mig_uuid=mig,
        allocation=Allocation(raw["tenant"], raw["job"], billing_class),
        since=since,
    )


def _is_identifier(value: object) -> bool:
    return isinstance(value, str) and _IDENTIFIER.match(value) is not None


def allocation_from_environ(env: Mapping[str, str]) -> Allocation | None:
    """A process's declared allocation: GPUMETER_* first (explicit), then Slurm's variables."""
    tenant, job = env.get("GPUMETER_TENANT"), env.get("GPUMETER_JOB")
    if _is_identifier(tenant) and _is_identifier(job):
        billing_class = env.get("GPUMETER_BILLING_CLASS") or None
        if billing_class is not None and billing_class not in _BILLING_CLASSES:
            log.warning(
                "ignoring GPUMETER_BILLING_CLASS=%r (not one of %s); using the contract default",
                billing_class,
                sorted(_BILLING_CLASSES),
            )
            billing_class = None
        return Allocation(tenant, job, billing_class)  # type: ignore[arg-type]
    tenant, job = env.get("SLURM_JOB_ACCOUNT"), env.get("SLURM_JOB_ID")
    if _is_identifier(tenant) and _is_identifier(job):
        return Allocation(tenant, job)  # type: ignore[arg-type]
    return None


def read_environ(proc_root: Path, pid: int) -> dict[str, str] | None:
    """``/proc/<pid>/environ`` as a dict; None when the process is gone or not readable."""
    try:
        data = (proc_root / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # vanished between NVML's list and now, or another user's process
    except OSError as exc:
        log.debug("cannot read environ of pid %d: %s", pid, exc)
        return None
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


class Attributor:
    """Answers "whose is this GPU-second?" from the allocation file, then from process env.

    ``allocation_file`` None disables the file source; ``proc_root`` is injectable so tests
    can use a fake ``/proc`` tree.
    """

    def __init__(
        self,
        allocation_file: Path | str | None = DEFAULT_ALLOCATION_FILE,
        *,
        proc_root: Path | str = Path("/proc"),
    ) -> None:
        self._path = Path(allocation_file) if allocation_file is not None else None
        self._proc_root = Path(proc_root)
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        # (mtime_ns, size, inode): an atomic rename changes the inode even when two writes
        # land within the filesystem's mtime granularity, so no update is missed.
        self._stat_key: tuple[int, int, int] | None = None
        self._warned_conflicts: set[tuple[str, str | None, tuple[Allocation, ...]]] = set()

    def allocation_for(
        self,
        gpu_uuid: str,
        mig_uuid: str | None,
        pids: Sequence[int],
        *,
        at: int | None = None,
    ) -> Allocation | None:
        """The allocation of one GPU (or MIG slice) now (or at second ``at``); None = idle."""
        self.refresh()
        entry = self._entries.get((gpu_uuid, mig_uuid))
        if entry is None and mig_uuid is not None:
            entry = self._entries.get((gpu_uuid, None))  # the whole GPU covers its slices
        if entry is not None and (at is None or entry.since is None or entry.since <= at):
            return entry.allocation
        return self._from_processes(gpu_uuid, mig_uuid, pids)

    def refresh(self) -> None:
        """Re-read the allocation file if it changed; keep the last good content on error."""
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except FileNotFoundError:
            if self._stat_key != (0, 0, 0):
                log.info("allocation file %s absent: no scheduler allocations", self._path)
            self._entries, self._stat_key = {}, (0, 0, 0)
            return
        except OSError as exc:
            log.error(
                "cannot stat allocation file %s: %s; keeping last good content", self._path, exc
            )
            return
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._stat_key:
            return
        # Remember the key even when parsing fails, so a bad file is reported once, not
        # every second; the next rewrite changes the key and is read again.
        self._stat_key = key
        try:
            entries = parse_allocation_file(self._path.read_text("utf-8"), str(self._path))
        except (AllocationFileError, OSError, UnicodeDecodeError) as exc:
            log.error(
                "allocation file rejected, keeping the last good content (%d allocations): %s",
                len(self._entries),
                exc,
            )
            return
        self._entries = {(e.gpu_uuid, e.mig_uuid): e for e in entries}
        log.info("allocation file %s loaded: %d allocations", self._path, len(entries))

    def _from_processes(
        self, gpu_uuid: str, mig_uuid: str | None, pids: Sequence[int]
    ) -> Allocation | None:
        found: list[tuple[int, Allocation]] = []
        for pid in sorted(set(pids)):
            env = read_environ(self._proc_root, pid)
            if env is None:
                continue
            allocation = allocation_from_environ(env)
            if allocation is not None:
                found.append((pid, allocation))
        if not found:
            return None
        # Processes of different jobs on one GPU: the lowest pid (usually the earliest
        # started) wins. Deterministic, so a replayed or re-sampled second attributes the
        # same way; warned once per conflict so the operator can fix the scheduler.
        distinct = tuple(dict.fromkeys(a for _, a in found))
        if len(distinct) > 1:
            conflict = (gpu_uuid, mig_uuid, distinct)
            if conflict not in self._warned_conflicts:
                self._warned_conflicts.add(conflict)
                log.warning(
                    "processes on %s%s disagree on the allocation %s; attributing to pid %d's %s",
                    gpu_uuid,
                    f"/{mig_uuid}" if mig_uuid else "",
                    [f"{p}:{a.tenant}/{a.job}" for p, a in found],
                    found[0][0],
                    found[0][1],
                )
        return found[0][1]


def write_allocation_file(path: Path, allocations: Sequence[Mapping[str, Any]]) -> None:
    """Write the allocation file atomically (what a prolog does): tmp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "allocations": list(allocations)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
