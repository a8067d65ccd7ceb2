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

This module is the queue and its policy (what is pending, retained, dropped and why). The
segment files are :mod:`agents.spool_segments` (record format: :mod:`agents.segment`), the lock
and small state files :mod:`agents.spool_disk`, the drop counters and owed gaps
:mod:`agents.spool_drops`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from agents.segment import MAGIC, SpoolEntry, default_segment_bytes, encode_record
from agents.span import describe
from agents.spool_disk import (
    DEFAULT_RESERVE_BYTES,
    DISK_FULL,
    OsFS,
    SpoolError,
    SpoolFS,
    load_agent_id,
    lock_directory,
    read_int,
    read_json,
    write_state,
)
from agents.spool_drops import DropAccount, Span
from agents.spool_segments import Segments

__all__ = ["DEFAULT_RESERVE_BYTES", "OsFS", "Spool", "SpoolError", "SpoolFS"]

log = logging.getLogger(__name__)


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
        self.retain_bytes = max_bytes // 4 if retain_bytes is None else retain_bytes
        self.retain_s = retain_s
        self.reserve_bytes = reserve_bytes
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = lock_directory(self.directory)
            self.agent_id = load_agent_id(self.directory)
        except OSError as exc:
            raise SpoolError(
                f"cannot open the spool {self.directory}: {exc.strerror or exc}"
            ) from exc
        self.acked = read_int(self.directory, "acked", -1)
        self.drops = DropAccount(read_json(self.directory, "dropped.json"))
        self._state_dirty = False  # a state file could not be written (disk full): retry later
        self._entries: deque[SpoolEntry] = deque()  # unacknowledged, in seq order
        self._retained: deque[SpoolEntry] = deque()  # acknowledged, still on disk, in seq order
        self.fs: SpoolFS = fs or OsFS()
        self.segments = Segments(self.directory, segment_bytes, self.fs, fsync)
        self.last_seq = -1
        self.last_ts: int | None = None
        self._recover()
        self.full = False  # the last append found the disk (not the bound) full
        self._last_drop_log = -1e9

    # -- what was dropped ------------------------------------------------------------------------
    @property
    def dropped_batches(self) -> int:
        return self.drops.batches

    @property
    def dropped_samples(self) -> int:
        return self.drops.samples

    @property
    def unreported_gaps(self) -> list[Span]:
        """Dropped seconds not yet reported to the broker, as merged [start, end) ranges."""
        return self.drops.unreported_gaps

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
        reports: list[Span] | None = None,
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
                path, offset = self.segments.append(seq, record)
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise SpoolError(
                        f"writing to the spool {self.directory} failed: {exc}"
                    ) from exc
                # The partial record was cut off. The file system has less room than it said
                # (reserved blocks, metadata, a quota): drop the oldest data and try again.
                self.full = True
                if not self.segments.droppable():
                    break
                self._drop_oldest("disk full")
                continue
            self.full = False
            self._entries.append(
                SpoolEntry(seq, path, offset, len(payload), n_samples, last_ts, first)
            )
            if reports:
                self.drops.carry(seq, reports)
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
        self.drops.count(1, n_samples, [(first, last_ts + 1)])
        self._save_dropped()
        self._log_drop(
            f"the disk is full even with nothing older left; batch {seq} ({n_samples} samples) "
            "could not be stored"
        )
        return False

    # -- reading and acknowledging -------------------------------------------------------------
    def pending(self, after_seq: int = -1) -> Iterator[tuple[SpoolEntry, bytes]]:
        """Unacknowledged entries with seq > after_seq, in order, with their payloads."""
        return self.segments.read([e for e in self._entries if e.seq > after_seq])

    def retained(self, since_ts: int | None = None) -> list[SpoolEntry]:
        """Acknowledged entries still on disk whose batch ends at or after ``since_ts``."""
        return [e for e in self._retained if since_ts is None or e.last_ts >= since_ts]

    def read(self, entries: list[SpoolEntry]) -> Iterator[tuple[SpoolEntry, bytes]]:
        """The payloads of ``entries`` that are still on disk, in the order given."""
        on_disk = set(self.segments.paths)
        return self.segments.read([e for e in entries if e.segment in on_disk])

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
    def segment_bytes(self) -> int:
        return self.segments.segment_bytes

    @property
    def size_bytes(self) -> int:
        return self.segments.size_bytes

    def ack(self, seq: int) -> None:
        """The broker acknowledged everything up to and including ``seq``."""
        if seq <= self.acked:
            return
        while self._entries and self._entries[0].seq <= seq:
            self._retained.append(self._entries.popleft())
        self.acked = seq
        if self.drops.settle(seq):
            self._save_dropped()
        # Not fsynced: losing this write only means re-sending acknowledged batches, and
        # duplicates are harmless downstream (sample ids are deterministic). Loss is not.
        self._write_state("acked", str(seq))
        self._trim_retained()

    def close(self) -> None:
        self.segments.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- internals: writing ----------------------------------------------------------------------
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
            if not self.segments.droppable():
                return False
            self.full = True
            self._drop_oldest("disk full")

    def _enforce_bound(self) -> None:
        while self.size_bytes > self.max_bytes and len(self.segments.paths) > 1:
            self._drop_oldest("size bound")

    def _trim_retained(self) -> None:
        """Delete fully acknowledged segments beyond the retention window (never the active one).

        Acknowledgements are a prefix of the sequence and segments hold consecutive seqs, so
        those are exactly the segments before the one holding the oldest pending entry."""
        paths, sizes = self.segments.paths, self.segments.sizes
        first_live = self._entries[0].segment if self._entries else None
        done = paths[:-1]
        if first_live is not None:
            done = done[: paths.index(first_live)]
        retained = sum(sizes[p] for p in done)
        now = time.time()
        for path in done:
            too_old = now - self.segments.written_at.get(path, 0.0) > self.retain_s
            if retained <= self.retain_bytes and not too_old:
                break
            retained -= sizes[path]
            self._drop_oldest("retention")

    def _drop_oldest(self, why: str) -> None:
        """Delete the oldest segment; count its unacknowledged batches and record their seconds
        as unreported gaps."""
        path = self.segments.drop_oldest()
        while self._retained and self._retained[0].segment == path:
            self._retained.popleft()
        gone: list[SpoolEntry] = []
        while self._entries and self._entries[0].segment == path:  # a prefix, seq order
            gone.append(self._entries.popleft())
        if gone:
            # The dropped seqs count as settled so delivery moves past them.
            self.acked = max(self.acked, gone[-1].seq)
            self._write_state("acked", str(self.acked))
            self.drops.lose(gone)  # their seconds, and the gaps they carried, are owed again
            self._save_dropped()
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
            self.drops.batches,
            self.drops.samples,
            describe(self.drops.unreported_gaps),
        )

    def _save_dropped(self) -> None:
        self._write_state("dropped.json", self.drops.to_json())

    # -- internals: opening ----------------------------------------------------------------------
    def _recover(self) -> None:
        """Index the intact records on disk: pending above ``acked``, retained up to it."""
        for entry in self.segments.recover():
            self.last_seq = max(self.last_seq, entry.seq)
            self.last_ts = (
                entry.last_ts if self.last_ts is None else max(self.last_ts, entry.last_ts)
            )
            (self._entries if entry.seq > self.acked else self._retained).append(entry)
        self._trim_retained()

    def _write_state(self, name: str, text: str) -> None:
        """Replace a small state file. On a full disk the value stays in memory and is written
        with the next successful append (losing ``acked`` only means re-sending)."""
        if not write_state(self.directory, name, text):
            self._state_dirty = True
            log.warning("spool %s: disk full; %s kept in memory for now", self.directory, name)
            return
        if name == "dropped.json":
            self._state_dirty = False
