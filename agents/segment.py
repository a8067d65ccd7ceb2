"""The spool's on-disk format: segment files of CRC-checked records.

A segment starts with :data:`MAGIC`; each record is a header (payload length, seq, crc32,
sample count, first and last second) and the payload. The crc covers the header fields and
the payload, so a record torn by a crash is found and cut off when the spool is opened.
Segments of the older format (no magic, no first second, crc of the payload only) are still
read, never appended to.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GMSPOOL2"
_HEADER = struct.Struct("<IQIIqq")  # payload length, seq, crc32, n_samples, first_ts, last_ts
_HEADER_V1 = struct.Struct("<IQIIq")  # older segments: no magic, no first_ts, crc of payload
_CRC_FIELDS = struct.Struct("<IQIqq")  # what the v2 crc covers besides the payload
SEGMENT_PREFIX = "seg-"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    segment: Path
    offset: int
    length: int
    n_samples: int
    last_ts: int
    first_ts: int | None = None  # None: an older-format record

    @property
    def header_size(self) -> int:
        return _HEADER_V1.size if self.first_ts is None else _HEADER.size


def default_segment_bytes(max_bytes: int) -> int:
    """An eighth of the bound (so old segments can go long before it is reached), 4 KiB..8 MiB."""
    return max(4096, min(8 * 1024**2, max_bytes // 8))


def encode_record(seq: int, payload: bytes, n_samples: int, first_ts: int, last_ts: int) -> bytes:
    """One record: header (with a crc over the header fields and the payload), then payload."""
    body = _CRC_FIELDS.pack(len(payload), seq, n_samples, first_ts, last_ts)
    crc = zlib.crc32(payload, zlib.crc32(body))
    return _HEADER.pack(len(payload), seq, crc, n_samples, first_ts, last_ts) + payload


def scan_segment(path: Path) -> tuple[list[SpoolEntry], int]:
    """The intact records of one segment, and the offset where intact data ends (a torn tail
    from a crash or power loss starts there)."""
    entries: list[SpoolEntry] = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        v2 = head == MAGIC
        if not v2:
            if len(head) < len(MAGIC) and MAGIC.startswith(head):
                return [], 0  # a segment torn while its magic was written
            f.seek(0)
        header = _HEADER if v2 else _HEADER_V1
        good_end = f.tell()
        while True:
            offset = f.tell()
            raw = f.read(header.size)
            if len(raw) < header.size:
                break
            if v2:
                length, seq, crc, n, first, last_ts = header.unpack(raw)
            else:
                length, seq, crc, n, last_ts = header.unpack(raw)
                first = None
            if length > size - offset - header.size:
                break  # torn (or garbage): the length runs past the end of the file
            payload = f.read(length)
            expect = (
                zlib.crc32(payload, zlib.crc32(_CRC_FIELDS.pack(length, seq, n, first, last_ts)))
                if v2
                else zlib.crc32(payload)
            )
            if crc != expect:
                break  # torn tail: the crash happened while writing this record
            good_end = f.tell()
            entries.append(SpoolEntry(seq, path, offset, length, n, last_ts, first))
    return entries, good_end
