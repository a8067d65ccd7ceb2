"""The agent's durable on-disk spool: batches are appended before they are sent, kept until the
broker acknowledged them, and then retained a while longer so a broker that lost acknowledged
data can be refilled.

Layout of a spool directory::

    agent_id        the agent instance id (created once; survives restarts)
    lock            locked (lockf) by the one process that owns the spool
    acked           highest sequence number the broker acknowledged (rewritten atomically)
    dropped.json    counters of what was forced out, and the dropped seconds not yet reported
    resend          an operator's resend request (``gpumeter agent resend``), served by the owner
    seg-<seq>.log   append-only segments named after their first sequence number

A segment starts with the 8-byte magic ``GMSPOOL2``; a record is ``header | payload``, the header
holding length, seq, CRC32 (of header fields and payload), sample count and the first and last
second the batch covers. (Segments without the magic are the older format, read for upgrades.)
A record torn by a crash or a full disk fails its length or CRC check and is truncated away on
open; a write that fails (ENOSPC) is truncated back at once. Everything before it is intact.

Three kinds of data, oldest first: *retained* (acknowledged, kept for resend), *pending*
(unacknowledged) and the active segment. Bounds and policy:

- **Retention**: acknowledged batches stay on disk while their segment was written less than
  ``retain_s`` ago (default 1 h) and the retained segments total at most ``retain_bytes``
  (default a quarter of ``max_bytes``). Retained data is the first thing given up for space.
- **Size bound** ``max_bytes`` (all segments) and **free space** (the file system must keep
  ``reserve_bytes`` free after each write): when either is short, whole segments are dropped
  oldest first, retained ones before any pending one. Pending batches dropped this way are
  counted (``dropped.json``) and their seconds become *gaps* (reason ``spool_full``) that the
  agent reports in its next batch, so the ledger shows them as unmetered, not idle. If nothing
  older is left to drop and the disk is still full, the incoming batch itself is dropped,
  counted and reported the same way. Nothing is ever dropped silently.

Segments are sized relative to the bound (``max_bytes / 8`` by default, at most 8 MiB) so that
old segments can be dropped long before the bound is reached.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from agents.errors import AgentError
from agents.segment import (
    MAGIC,
    SEGMENT_PREFIX,
    SpoolEntry,
    default_segment_bytes,
    encode_record,
    scan_segment,
)
from agents.span import describe, merge, subtract

log = logging.getLogger(__name__)

_FULL = (errno.ENOSPC, errno.EDQUOT)

#: Free space kept on the spool's file system after every write: the small state files
#: (``acked``, ``dropped.json``) must still be writable when the spool itself is full.
DEFAULT_RESERVE_BYTES = 64 * 1024


class SpoolError(AgentError, RuntimeError):
    pass


class SpoolFS(Protocol):
    """The file-system calls that can fail for lack of space; a seam for fault injection."""

    def write(self, fd: int, data: bytes) -> int: ...

    def free_bytes(self, directory: Path) -> int: ...


class OsFS:
    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def free_bytes(self, directory: Path) -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize


class Spool:
    """A bounded, crash-safe FIFO of serialized batches. Not thread-safe: one owner thread, and
    one owner process (an exclusive lock on ``lock``)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 512 * 1024**2,
        segment_bytes: int | None = None,
        fsync: bool = True,
        retain_bytes: int | None = None,
        retain_s: float = 3600.0,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        fs: SpoolFS | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise SpoolError(f"the spool bound must be positive, got {max_bytes} bytes")
        segment_bytes = default_segment_bytes(max_bytes) if segment_bytes is None else segment_bytes
        if segment_bytes > max_bytes:
            raise SpoolError("segment_bytes must not exceed max_bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.retain_bytes = max_bytes // 4 if retain_bytes is None else retain_bytes
        self.retain_s = retain_s
        self.reserve_bytes = reserve_bytes
        self.fsync = fsync
        self.fs: SpoolFS = fs or OsFS()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = self._lock()
            self.agent_id = self._load_agent_id()
        except OSError as exc:
            raise SpoolError(
                f"cannot open the spool {self.directory}: {exc.strerror or exc}"
            ) from exc
        self.acked = self._read_int("acked", -1)
        dropped = self._read_json("dropped.json")
        self.dropped_batches = int(dropped.get("batches", 0))
        self.dropped_samples = int(dropped.get("samples", 0))
        #: Dropped seconds not yet reported to the broker, as merged [start, end) ranges.
        self.unreported_gaps: list[tuple[int, int]] = [
            (int(g[0]), int(g[1])) for g in dropped.get("gaps", [])
        ]
        #: Pending batches that carry dropped seconds (seq -> gaps): owed again if dropped.
        self._carriers: dict[int, list[tuple[int, int]]] = {
            int(k): [(int(g[0]), int(g[1])) for g in v]
            for k, v in dict(dropped.get("carriers", {})).items()
        }
        self._state_dirty = False  # a state file could not be written (disk full): retry later
        self._entries: deque[SpoolEntry] = deque()  # unacknowledged, in seq order
        self._retained: deque[SpoolEntry] = deque()  # acknowledged, still on disk, in seq order
        self._segments: list[Path] = []  # oldest first; the last one is appended to
        self._sizes: dict[Path, int] = {}  # bytes per segment, kept here: no stat per append
        self._written_at: dict[Path, float] = {}  # wall time of each segment's last write
        self.last_seq = -1
        self.last_ts: int | None = None
        self._recover()
        self._fd: int | None = None  # the active segment, opened on the first append
        self.full = False  # the last append found the disk (not the bound) full
        self._last_drop_log = -1e9

    # -- writing -------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return max(self.last_seq, self.acked) + 1

    def append(
        self,
        seq: int,
        payload: bytes,
        *,
        n_samples: int,
        last_ts: int,
        first_ts: int | None = None,
        reports: list[tuple[int, int]] | None = None,
    ) -> bool:
        """Append a batch durably. ``first_ts``..``last_ts``: the seconds it covers;
        ``reports``: the :attr:`unreported_gaps` it carries (they stay owed until the batch is
        acknowledged, and become unreported again if it is dropped).

        False if the disk was full even after dropping everything older: the batch was not
        stored (its seconds are added to :attr:`unreported_gaps`, its seq is not used)."""
        if seq != self.next_seq:
            raise SpoolError(f"expected seq {self.next_seq}, got {seq}")
        first = last_ts if first_ts is None else first_ts
        record = encode_record(seq, payload, n_samples, first, last_ts)
        for _attempt in range(8):
            if not self._make_room(len(record) + len(MAGIC)):
                break
            try:
                offset = self._write_record(seq, record)
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise SpoolError(
                        f"writing to the spool {self.directory} failed: {exc}"
                    ) from exc
                # The partial record was cut off. The file system has less room than it said
                # (reserved blocks, metadata, a quota): drop the oldest data and try again.
                self.full = True
                if not self._droppable():
                    break
                self._drop_oldest("disk full")
                continue
            self.full = False
            path = self._segments[-1]
            self._entries.append(
                SpoolEntry(seq, path, offset, len(payload), n_samples, last_ts, first)
            )
            if reports:
                self._carriers[seq] = list(reports)
                self.unreported_gaps = subtract(self.unreported_gaps, list(reports))
                self._state_dirty = True
            self.last_seq = seq
            self.last_ts = last_ts
            self._enforce_bound()
            self._trim_retained()
            if self._state_dirty:
                self._save_dropped()
            return True
        # No room at all: the batch is lost. Counted, and its seconds reported as a gap.
        self.full = True
        self._count_dropped(1, n_samples, [(first, last_ts + 1)])
        self._log_drop(
            f"the disk is full even with nothing older left; batch {seq} ({n_samples} samples) "
            "could not be stored"
        )
        return False

    # -- reading and acknowledging -------------------------------------------------------------
    def pending(self, after_seq: int = -1) -> Iterator[tuple[SpoolEntry, bytes]]:
        """Unacknowledged entries with seq > after_seq, in order, with their payloads."""
        return self._read([e for e in self._entries if e.seq > after_seq])

    def retained(self, since_ts: int | None = None) -> list[SpoolEntry]:
        """Acknowledged entries still on disk whose batch ends at or after ``since_ts``."""
        return [e for e in self._retained if since_ts is None or e.last_ts >= since_ts]

    def read(self, entries: list[SpoolEntry]) -> Iterator[tuple[SpoolEntry, bytes]]:
        """The payloads of ``entries`` that are still on disk, in the order given."""
        on_disk = set(self._segments)
        return self._read([e for e in entries if e.segment in on_disk])

    def _read(self, entries: list[SpoolEntry]) -> Iterator[tuple[SpoolEntry, bytes]]:
        handles: dict[Path, object] = {}
        try:
            for entry in entries:
                f = handles.get(entry.segment)
                if f is None:
                    f = handles[entry.segment] = open(entry.segment, "rb")  # noqa: SIM115
                f.seek(entry.offset + entry.header_size)  # type: ignore[attr-defined]
                yield entry, f.read(entry.length)  # type: ignore[attr-defined]
        finally:
            for f in handles.values():
                f.close()  # type: ignore[attr-defined]

    @property
    def pending_count(self) -> int:
        return len(self._entries)

    @property
    def pending_samples(self) -> int:
        return sum(e.n_samples for e in self._entries)

    @property
    def retained_count(self) -> int:
        return len(self._retained)

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def ack(self, seq: int) -> None:
        """The broker acknowledged everything up to and including ``seq``."""
        if seq <= self.acked:
            return
        while self._entries and self._entries[0].seq <= seq:
            self._retained.append(self._entries.popleft())
        self.acked = seq
        if any(c <= seq for c in self._carriers):
            self._carriers = {c: g for c, g in self._carriers.items() if c > seq}
            self._save_dropped()
        # Not fsynced: losing this write only means re-sending acknowledged batches, and
        # duplicates are harmless downstream (sample ids are deterministic). Loss is not.
        self._write_state("acked", str(seq))
        self._trim_retained()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- internals: writing ----------------------------------------------------------------------
    def _write_record(self, seq: int, record: bytes) -> int:
        """Write one record at the end of the active segment (rotating first if it is full);
        its offset. On any error the segment is cut back to where it was: no torn record."""
        if self._fd is None or self._sizes[self._segments[-1]] >= self.segment_bytes:
            self._rotate(seq)
        assert self._fd is not None
        path = self._segments[-1]
        offset = self._sizes[path]
        try:
            self._write_all(self._fd, record)
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, offset)  # frees the blocks, needs none
            os.lseek(self._fd, offset, os.SEEK_SET)
            raise
        self._sizes[path] = offset + len(record)
        self._written_at[path] = time.time()
        return offset

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.fs.write(fd, view.tobytes())
            view = view[n:]

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.directory / f"{SEGMENT_PREFIX}{first_seq:012d}.log"
        if self._segments and self._segments[-1] == path:  # an empty leftover of a crash
            self._segments.pop()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_all(fd, MAGIC)
        except OSError:
            os.close(fd)
            self._drop_file(path)
            raise
        self._segments.append(path)
        self._sizes[path] = len(MAGIC)
        self._written_at[path] = time.time()
        self._fd = fd

    def _make_room(self, size: int) -> bool:
        """Drop the oldest segments until ``size`` bytes fit with the reserve kept free. False if
        even an empty spool would not make them fit."""
        while True:
            try:
                free = self.fs.free_bytes(self.directory)
            except OSError as exc:
                raise SpoolError(f"cannot stat the spool's file system: {exc}") from exc
            if free - self.reserve_bytes >= size:
                return True
            if not self._droppable():
                return False
            self.full = True
            self._drop_oldest("disk full")

    def _droppable(self) -> bool:
        """Is there a segment that holds data (and so could be dropped to make room)?"""
        return len(self._segments) > 1 or (
            bool(self._segments) and self._sizes.get(self._segments[0], 0) > len(MAGIC)
        )

    def _enforce_bound(self) -> None:
        while self.size_bytes > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest("size bound")

    def _trim_retained(self) -> None:
        """Delete fully acknowledged segments beyond the retention window (never the active one).

        Acknowledgements are a prefix of the sequence and segments hold consecutive seqs, so
        those are exactly the segments before the one holding the oldest pending entry."""
        first_live = self._entries[0].segment if self._entries else None
        done = [p for p in self._segments[:-1]]
        if first_live is not None:
            done = done[: self._segments.index(first_live)]
        retained = sum(self._sizes[p] for p in done)
        now = time.time()
        for path in done:
            too_old = now - self._written_at.get(path, 0.0) > self.retain_s
            if retained <= self.retain_bytes and not too_old:
                break
            retained -= self._sizes[path]
            self._drop_oldest("retention")

    def _drop_oldest(self, why: str) -> None:
        """Delete the oldest segment; count its unacknowledged batches and record their seconds
        as unreported gaps."""
        path = self._segments.pop(0)
        while self._retained and self._retained[0].segment == path:
            self._retained.popleft()
        gone: list[SpoolEntry] = []
        while self._entries and self._entries[0].segment == path:  # a prefix, seq order
            gone.append(self._entries.popleft())
        if self._fd is not None and not self._segments:  # it was the active segment
            os.close(self._fd)
            self._fd = None
        self._drop_file(path)
        if gone:
            # The dropped seqs count as settled so delivery moves past them.
            self.acked = max(self.acked, gone[-1].seq)
            self._write_state("acked", str(self.acked))
            spans = [
                (e.first_ts if e.first_ts is not None else e.last_ts, e.last_ts + 1) for e in gone
            ]
            for e in gone:  # the gaps a dropped batch carried are owed again
                spans += self._carriers.pop(e.seq, [])
            self._count_dropped(len(gone), sum(e.n_samples for e in gone), spans)
            self._log_drop(why)

    def _log_drop(self, why: str) -> None:
        """Say it, at most every 10 s per spool (a full disk drops a batch per flush)."""
        now = time.monotonic()
        if now - self._last_drop_log < 10.0:
            return
        self._last_drop_log = now
        log.warning(
            "spool %s: %s; dropping the oldest unacknowledged batches (so far %d batches, %d "
            "samples); the seconds owed as spool_full gaps: %s",
            self.directory,
            why,
            self.dropped_batches,
            self.dropped_samples,
            describe(self.unreported_gaps),
        )

    def _drop_file(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sizes.pop(path, None)
        self._written_at.pop(path, None)

    def _count_dropped(self, batches: int, samples: int, spans: list[tuple[int, int]]) -> None:
        self.dropped_batches += batches
        self.dropped_samples += samples
        self.unreported_gaps = merge(self.unreported_gaps + spans)
        self._save_dropped()

    def _save_dropped(self) -> None:
        self._write_state(
            "dropped.json",
            json.dumps(
                {
                    "batches": self.dropped_batches,
                    "samples": self.dropped_samples,
                    "gaps": [list(g) for g in self.unreported_gaps],
                    "carriers": {str(k): [list(g) for g in v] for k, v in self._carriers.items()},
                }
            ),
        )

    # -- internals: opening ----------------------------------------------------------------------
    def _lock(self) -> int:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        # A POSIX record lock: it excludes other processes (a second agent, ``agent resend``)
        # and is released when the owner dies, kill -9 included.
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise SpoolError(
                f"the spool {self.directory} is in use by another agent process; one spool "
                "directory per running agent"
            ) from None
        return fd

    def _recover(self) -> None:
        self._segments = sorted(self.directory.glob(f"{SEGMENT_PREFIX}*.log"))
        for path in self._segments:
            good_end = self._scan(path)
            st = path.stat()
            if good_end < st.st_size:
                log.warning(
                    "spool %s: cut a torn record (%d bytes) from %s",
                    self.directory,
                    st.st_size - good_end,
                    path.name,
                )
                os.truncate(path, good_end)
            self._sizes[path] = good_end
            self._written_at[path] = st.st_mtime
        # The first append after opening starts a new segment (named after its first seq, so it
        # sorts last): never append to a segment of an older format or with an unknown tail.
        self._trim_retained()

    def _scan(self, path: Path) -> int:
        """Index the intact records of one segment; the offset where intact data ends."""
        entries, good_end = scan_segment(path)
        for entry in entries:
            self.last_seq = max(self.last_seq, entry.seq)
            self.last_ts = (
                entry.last_ts if self.last_ts is None else max(self.last_ts, entry.last_ts)
            )
            (self._entries if entry.seq > self.acked else self._retained).append(entry)
        return good_end

    def _load_agent_id(self) -> str:
        path = self.directory / "agent_id"
        if path.exists():
            return path.read_text().strip()
        agent_id = str(uuid.uuid4())
        tmp = self.directory / ".agent_id.tmp"
        tmp.write_text(agent_id)
        os.replace(tmp, path)
        return agent_id

    def _read_int(self, name: str, default: int) -> int:
        path = self.directory / name
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return default

    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.directory / name).read_text())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def _write_state(self, name: str, text: str) -> None:
        """Replace a small state file atomically. On a full disk the value stays in memory and
        is written with the next successful append (losing ``acked`` only means re-sending)."""
        tmp = self.directory / f".{name}.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise SpoolError(f"writing {self.directory / name} failed: {exc}") from exc
            tmp.unlink(missing_ok=True)
            self._state_dirty = True
            log.warning("spool %s: disk full; %s kept in memory for now", self.directory, name)
            return
        if name == "dropped.json":
            self._state_dirty = False
