"""The agent's durable on-disk spool: batches are appended before they are sent and released only
after the broker acknowledged them.

Layout of a spool directory::

    agent_id        the agent instance id (created once; survives restarts)
    acked           highest sequence number the broker acknowledged (rewritten atomically)
    dropped.json    counters of what the size bound forced out (persisted)
    seg-<seq>.log   append-only segments named after their first sequence number

A record is ``header | payload``; the header holds length, seq, CRC32, sample count and the last
second the batch covers. A record torn by a crash (kill -9, power loss) fails its length or CRC
check and is truncated away on open: everything before it is intact.

Bound policy: when unacknowledged data exceeds ``max_bytes``, the *oldest* whole segments are
dropped (the newest usage is kept, the broker has been away longest for the oldest), and the
dropped batches and samples are counted in ``dropped.json`` and in :attr:`Spool.dropped_samples`.
Nothing is ever dropped silently.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct("<IQIIq")  # payload length, seq, crc32, n_samples, last_ts
_SEG_PREFIX = "seg-"


class SpoolError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    segment: Path
    offset: int
    length: int
    n_samples: int
    last_ts: int


class Spool:
    """A bounded, crash-safe FIFO of serialized batches. Not thread-safe: one owner thread."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 512 * 1024**2,
        segment_bytes: int = 8 * 1024**2,
        fsync: bool = True,
    ) -> None:
        if segment_bytes > max_bytes:
            raise SpoolError("segment_bytes must not exceed max_bytes")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.agent_id = self._load_agent_id()
        self.acked = self._read_int("acked", -1)
        dropped = self._read_json("dropped.json", {"batches": 0, "samples": 0})
        self.dropped_batches = int(dropped["batches"])
        self.dropped_samples = int(dropped["samples"])
        self._entries: deque[SpoolEntry] = deque()  # unacknowledged, in seq order
        self._segments: list[Path] = []  # oldest first; the last one is appended to
        self._sizes: dict[Path, int] = {}  # bytes per segment, kept here: no stat per append
        self.last_seq = -1
        self.last_ts: int | None = None
        self._recover()
        self._active = open(self._segments[-1], "ab") if self._segments else None  # noqa: SIM115

    # -- writing -------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return max(self.last_seq, self.acked) + 1

    def append(self, seq: int, payload: bytes, *, n_samples: int, last_ts: int) -> None:
        if seq != self.next_seq:
            raise SpoolError(f"expected seq {self.next_seq}, got {seq}")
        if self._active is None or self._active.tell() >= self.segment_bytes:
            self._rotate(seq)
        assert self._active is not None
        offset = self._active.tell()
        header = _HEADER.pack(len(payload), seq, zlib.crc32(payload), n_samples, last_ts)
        self._active.write(header + payload)
        self._sizes[self._segments[-1]] += len(header) + len(payload)
        self._active.flush()
        if self.fsync:
            os.fsync(self._active.fileno())
        self._entries.append(
            SpoolEntry(seq, self._segments[-1], offset, len(payload), n_samples, last_ts)
        )
        self.last_seq = seq
        self.last_ts = last_ts
        self._enforce_bound()

    # -- reading and acknowledging -------------------------------------------------------------
    def pending(self, after_seq: int = -1) -> Iterator[tuple[SpoolEntry, bytes]]:
        """Unacknowledged entries with seq > after_seq, in order, with their payloads."""
        handles: dict[Path, object] = {}
        try:
            for entry in list(self._entries):
                if entry.seq <= after_seq:
                    continue
                f = handles.get(entry.segment)
                if f is None:
                    f = handles[entry.segment] = open(entry.segment, "rb")  # noqa: SIM115
                f.seek(entry.offset + _HEADER.size)  # type: ignore[attr-defined]
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

    def ack(self, seq: int) -> None:
        """The broker acknowledged everything up to and including ``seq``."""
        if seq <= self.acked:
            return
        while self._entries and self._entries[0].seq <= seq:
            self._entries.popleft()
        self.acked = seq
        # Not fsynced: losing this write only means re-sending acknowledged batches, and
        # duplicates are harmless downstream (sample ids are deterministic). Loss is not.
        self._write_atomic("acked", str(seq))
        self._release_segments()

    def close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None

    # -- internals -----------------------------------------------------------------------------
    def _rotate(self, first_seq: int) -> None:
        if self._active is not None:
            self._active.close()
        path = self.directory / f"{_SEG_PREFIX}{first_seq:012d}.log"
        self._segments.append(path)
        self._sizes[path] = 0
        self._active = open(path, "ab")  # noqa: SIM115

    def _recover(self) -> None:
        self._segments = sorted(self.directory.glob(f"{_SEG_PREFIX}*.log"))
        for path in self._segments:
            good_end = 0
            with open(path, "rb") as f:
                while True:
                    offset = f.tell()
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, seq, crc, n, last_ts = _HEADER.unpack(header)
                    payload = f.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        break  # torn tail: the crash happened while writing this record
                    good_end = f.tell()
                    self.last_seq = max(self.last_seq, seq)
                    self.last_ts = last_ts if self.last_ts is None else max(self.last_ts, last_ts)
                    if seq > self.acked:
                        self._entries.append(SpoolEntry(seq, path, offset, length, n, last_ts))
            if good_end < path.stat().st_size:
                os.truncate(path, good_end)
            self._sizes[path] = good_end
        self._release_segments()

    def _release_segments(self) -> None:
        """Delete segments whose every record is acknowledged (never the active one).

        Acknowledgements are a prefix of the sequence and segments hold consecutive seqs, so
        those are exactly the segments before the one holding the oldest pending entry."""
        first_live = self._entries[0].segment if self._entries else None
        while len(self._segments) > 1 and self._segments[0] != first_live:
            self._drop_segment(self._segments.pop(0))

    def _drop_segment(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sizes.pop(path, None)

    def _enforce_bound(self) -> None:
        while sum(self._sizes.values()) > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            gone = []
            while self._entries and self._entries[0].segment == oldest:  # a prefix, seq order
                gone.append(self._entries.popleft())
            self.dropped_batches += len(gone)
            self.dropped_samples += sum(e.n_samples for e in gone)
            self._drop_segment(oldest)
            if gone:
                # The dropped seqs count as settled so delivery moves past them.
                self.acked = max(self.acked, gone[-1].seq)
                self._write_atomic("acked", str(self.acked))
            self._write_atomic(
                "dropped.json",
                json.dumps({"batches": self.dropped_batches, "samples": self.dropped_samples}),
            )

    def _load_agent_id(self) -> str:
        path = self.directory / "agent_id"
        if path.exists():
            return path.read_text().strip()
        agent_id = str(uuid.uuid4())
        self._write_atomic("agent_id", agent_id)
        return agent_id

    def _read_int(self, name: str, default: int) -> int:
        path = self.directory / name
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return default

    def _read_json(self, name: str, default: dict[str, int]) -> dict[str, int]:
        try:
            return dict(json.loads((self.directory / name).read_text()))
        except (FileNotFoundError, ValueError):
            return default

    def _write_atomic(self, name: str, text: str) -> None:
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.directory / name)
