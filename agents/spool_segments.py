"""The spool's segment files, oldest first: the last one is appended to, the oldest is the one
dropped. This module does the file work (open and cut torn tails, append without ever leaving a
torn record, rotate, delete, read back); *which* segment goes and why is the spool's policy
(:mod:`agents.spool`). The record format is :mod:`agents.segment`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from agents.segment import MAGIC, SEGMENT_PREFIX, SpoolEntry, scan_segment
from agents.spool_disk import SpoolFS, write_all

log = logging.getLogger(__name__)


class Segments:
    """The segment files of one spool directory. Sizes are kept here (no stat per append)."""

    def __init__(self, directory: Path, segment_bytes: int, fs: SpoolFS, fsync: bool) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fs = fs
        self.fsync = fsync
        self.paths: list[Path] = []  # oldest first; the last one is appended to
        self.sizes: dict[Path, int] = {}  # bytes per segment
        self.written_at: dict[Path, float] = {}  # wall time of each segment's last write
        self._fd: int | None = None  # the active segment, opened on the first append

    # -- opening -------------------------------------------------------------------------------
    def recover(self) -> Iterator[SpoolEntry]:
        """Open the segments on disk: the intact records of each, in order; a torn tail (a crash,
        a full disk) is cut off. The first append afterwards starts a new segment (named after
        its first seq, so it sorts last): never one of an older format or with an unknown tail.
        """
        self.paths = sorted(self.directory.glob(f"{SEGMENT_PREFIX}*.log"))
        for path in self.paths:
            entries, good_end = scan_segment(path)
            yield from entries
            st = path.stat()
            if good_end < st.st_size:
                log.warning(
                    "spool %s: cut a torn record (%d bytes) from %s",
                    self.directory,
                    st.st_size - good_end,
                    path.name,
                )
                os.truncate(path, good_end)
            self.sizes[path] = good_end
            self.written_at[path] = st.st_mtime

    # -- state ---------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return sum(self.sizes.values())

    def droppable(self) -> bool:
        """Is there a segment that holds data (and so could be dropped to make room)?"""
        return len(self.paths) > 1 or (
            bool(self.paths) and self.sizes.get(self.paths[0], 0) > len(MAGIC)
        )

    # -- writing -------------------------------------------------------------------------------
    def append(self, seq: int, record: bytes) -> tuple[Path, int]:
        """Write one record at the end of the active segment (rotating first if it is full);
        its segment and offset. On any error the segment is cut back to where it was: no torn
        record."""
        if self._fd is None or self.sizes[self.paths[-1]] >= self.segment_bytes:
            self._rotate(seq)
        assert self._fd is not None
        path = self.paths[-1]
        offset = self.sizes[path]
        try:
            write_all(self.fs, self._fd, record)
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, offset)  # frees the blocks, needs none
            os.lseek(self._fd, offset, os.SEEK_SET)
            raise
        self.sizes[path] = offset + len(record)
        self.written_at[path] = time.time()
        return path, offset

    def _rotate(self, first_seq: int) -> None:
        self._close_active()
        path = self.directory / f"{SEGMENT_PREFIX}{first_seq:012d}.log"
        if self.paths and self.paths[-1] == path:  # an empty leftover of a crash
            self.paths.pop()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(self.fs, fd, MAGIC)
        except OSError:
            os.close(fd)
            self._delete(path)
            raise
        self.paths.append(path)
        self.sizes[path] = len(MAGIC)
        self.written_at[path] = time.time()
        self._fd = fd

    def drop_oldest(self) -> Path:
        """Delete the oldest segment (closing it first if it is the active one); its path."""
        path = self.paths.pop(0)
        if not self.paths:  # it was the active segment
            self._close_active()
        self._delete(path)
        return path

    def _delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.sizes.pop(path, None)
        self.written_at.pop(path, None)

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_active()

    # -- reading -------------------------------------------------------------------------------
    def read(self, entries: list[SpoolEntry]) -> Iterator[tuple[SpoolEntry, bytes]]:
        """The payloads of ``entries``, in the order given (each segment opened once)."""
        handles: dict[Path, BinaryIO] = {}
        try:
            for entry in entries:
                f = handles.get(entry.segment)
                if f is None:
                    f = handles[entry.segment] = open(entry.segment, "rb")  # noqa: SIM115
                f.seek(entry.offset + entry.header_size)
                yield entry, f.read(entry.length)
        finally:
            for f in handles.values():
                f.close()
