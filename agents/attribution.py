"""Attribution: who holds a GPU-second, at what share (tenant, job, billing class, milli-GPU),
or idle.

Billing is for *allocated* GPU-seconds, so the question is "who was this GPU reserved for",
not "who ran a kernel". Two sources answer it, in this order of precedence:

1. **The allocation file** (:mod:`agents.allocation_file`, format there), written by the
   scheduler's prolog/epilog or a Kubernetes hook. The scheduler is authoritative: it knows
   about a reserved GPU even while the job's processes are still starting or are between
   kernels. Several entries on one device are shares (sum at most 1000 milli-GPU). The file
   is re-read when its stat identity (mtime, size, inode) changes. A malformed file (a bad
   entry, shares above 1000, one (tenant, job) twice on a device) logs one error naming the
   bad entry and the agent keeps the last good content: a broken prolog must not turn every
   allocated second into idle, nor stop the sampler. A missing file means "no allocations".

2. **The processes on the GPU** (pids from NVML): their ``/proc/<pid>/environ``. A process
   declares its allocation with ``GPUMETER_TENANT`` + ``GPUMETER_JOB`` (and optionally
   ``GPUMETER_BILLING_CLASS`` and ``GPUMETER_SHARE_MILLI``, 1..1000), or Slurm's
   ``SLURM_JOB_ACCOUNT`` (tenant) + ``SLURM_JOB_ID`` (job). Without ``GPUMETER_SHARE_MILLI``,
   HAMi-core's ``CUDA_DEVICE_SM_LIMIT`` (the percent of the GPU's SMs the container may use,
   set by HAMi's device plugin from ``nvidia.com/gpucores``) gives the share (x 10); else the
   whole GPU. Processes of several jobs whose shares fit in 1000 share the GPU; if they do not
   fit, the lowest pid's job holds it (warned once). The agent needs the host's pid namespace
   to read them (``hostPID: true`` in k8s). Unreadable or vanished processes are skipped.

Nothing known: no allocation, i.e. idle. An idle second is recorded, never dropped: it is the
denominator of utilization and the capacity that can still be sold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from agents.allocation_file import BILLING_CLASSES as _BILLING_CLASSES
from agents.allocation_file import Allocation as Allocation
from agents.allocation_file import AllocationFileError as AllocationFileError
from agents.allocation_file import Entry, is_share
from agents.allocation_file import is_identifier as _is_identifier
from agents.allocation_file import parse_allocation_file as parse_allocation_file
from agents.allocation_file import write_allocation_file as write_allocation_file
from schemas.frame import WHOLE

log = logging.getLogger(__name__)

#: Default location of the allocation file on a node (the prolog/epilog write it).
DEFAULT_ALLOCATION_FILE = Path("/run/gpumeter/allocations.json")


def allocation_from_environ(env: Mapping[str, str]) -> Allocation | None:
    """A process's declared allocation: GPUMETER_* first (explicit), then Slurm's variables;
    its share from ``GPUMETER_SHARE_MILLI``, else HAMi-core's ``CUDA_DEVICE_SM_LIMIT``."""
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
        return Allocation(tenant, job, billing_class, share_from_environ(env))  # type: ignore[arg-type]
    tenant, job = env.get("SLURM_JOB_ACCOUNT"), env.get("SLURM_JOB_ID")
    if _is_identifier(tenant) and _is_identifier(job):
        return Allocation(tenant, job, None, share_from_environ(env))  # type: ignore[arg-type]
    return None


def share_from_environ(env: Mapping[str, str]) -> int:
    """milli-GPU: ``GPUMETER_SHARE_MILLI`` (1..1000), else ``CUDA_DEVICE_SM_LIMIT`` (HAMi-core,
    percent 1..99: x 10; 0 and 100 mean no limit), else the whole GPU. A value out of range
    is warned about and read as the whole GPU."""
    text = env.get("GPUMETER_SHARE_MILLI")
    if text is not None:
        value = int(text) if text.strip().isdigit() else None
        if value is not None and is_share(value):
            return value
        log.warning("ignoring GPUMETER_SHARE_MILLI=%r (expected 1..%d); whole GPU", text, WHOLE)
        return WHOLE
    text = env.get("CUDA_DEVICE_SM_LIMIT")
    if text is not None:
        if text.strip().isdigit() and 0 <= int(text) <= 100:
            return int(text) * 10 if 0 < int(text) < 100 else WHOLE
        log.warning("ignoring CUDA_DEVICE_SM_LIMIT=%r (expected a percent 0..100)", text)
    return WHOLE


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
    """Answers "who holds this GPU-second, at what share?" from the allocation file, then from
    process environments.

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
        self._entries: dict[tuple[str, str | None], list[Entry]] = {}
        # (mtime_ns, size, inode): an atomic rename changes the inode even when two writes
        # land within the filesystem's mtime granularity, so no update is missed.
        self._stat_key: tuple[int, int, int] | None = None
        self._warned: set[object] = set()

    def shares_for(
        self,
        gpu_uuid: str,
        mig_uuid: str | None,
        pids: Sequence[int],
        *,
        at: int | None = None,
    ) -> tuple[Allocation, ...]:
        """Who holds one GPU (or MIG slice) now (or at second ``at``), each at its share;
        empty: idle. File entries of the slice, else of the whole GPU, else the processes."""
        self.refresh()
        entries = self._entries.get((gpu_uuid, mig_uuid))
        if not entries and mig_uuid is not None:
            entries = self._entries.get((gpu_uuid, None))  # the whole GPU covers its slices
        active = tuple(
            e.allocation for e in entries or () if at is None or e.since is None or e.since <= at
        )
        if active:
            return active
        return self._from_processes(gpu_uuid, mig_uuid, pids)

    def allocation_for(
        self,
        gpu_uuid: str,
        mig_uuid: str | None,
        pids: Sequence[int],
        *,
        at: int | None = None,
    ) -> Allocation | None:
        """The one allocation of a device (None = idle), for callers that need a single
        owner (contract v1, an inference endpoint's tokens). A shared device answers its
        largest share (first listed on a tie), warned once per device and share set."""
        shares = self.shares_for(gpu_uuid, mig_uuid, pids, at=at)
        if len(shares) > 1:
            self._warn_once(
                ("shared", gpu_uuid, mig_uuid, shares),
                "%s%s is shared by %s; a single owner was asked for: answering the largest share",
                gpu_uuid,
                f"/{mig_uuid}" if mig_uuid else "",
                [f"{a.tenant}/{a.job}={a.milli}" for a in shares],
            )
            return max(shares, key=lambda a: a.milli)
        return shares[0] if shares else None

    def owners(self, pids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """(tenant, job) of each process that declares one in its environment."""
        out: dict[int, tuple[str, str]] = {}
        for pid in set(pids):
            env = read_environ(self._proc_root, pid)
            allocation = allocation_from_environ(env) if env is not None else None
            if allocation is not None:
                out[pid] = (allocation.tenant, allocation.job)
        return out

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
                sum(len(v) for v in self._entries.values()),
                exc,
            )
            return
        by_device: dict[tuple[str, str | None], list[Entry]] = {}
        for e in entries:
            by_device.setdefault((e.gpu_uuid, e.mig_uuid), []).append(e)
        self._entries = by_device
        log.info("allocation file %s loaded: %d allocations", self._path, len(entries))

    def _from_processes(
        self, gpu_uuid: str, mig_uuid: str | None, pids: Sequence[int]
    ) -> tuple[Allocation, ...]:
        found: list[tuple[int, Allocation]] = []
        for pid in sorted(set(pids)):
            env = read_environ(self._proc_root, pid)
            if env is None:
                continue
            allocation = allocation_from_environ(env)
            if allocation is not None:
                found.append((pid, allocation))
        if not found:
            return ()
        # One allocation per (tenant, job), from its lowest pid (usually the earliest started).
        jobs: dict[tuple[str, str], Allocation] = {}
        for _, a in found:
            jobs.setdefault((a.tenant, a.job), a)
        shares = tuple(jobs.values())
        if len(shares) == 1 or sum(a.milli for a in shares) <= WHOLE:
            return shares
        # Jobs whose shares do not fit in one GPU: the lowest pid's job holds it.
        # Deterministic, so a replayed or re-sampled second attributes the same way; warned
        # once per conflict so the operator can fix the scheduler.
        self._warn_once(
            (gpu_uuid, mig_uuid, shares),
            "processes on %s%s disagree on the allocation %s (shares sum above %d); "
            "attributing to pid %d's %s",
            gpu_uuid,
            f"/{mig_uuid}" if mig_uuid else "",
            [f"{p}:{a.tenant}/{a.job}={a.milli}" for p, a in found],
            WHOLE,
            found[0][0],
            found[0][1],
        )
        return (found[0][1],)

    def _warn_once(self, key: object, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
