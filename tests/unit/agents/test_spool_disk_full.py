"""The spool on a full disk: an expected state, never a crash or a torn record.

A fault-injecting file layer (:class:`SmallDisk`) stands in for a small file system: it counts the
bytes of every file in the spool directory against a capacity, answers ``free_bytes`` from that,
and a write that does not fit writes what fits and then raises ``ENOSPC``, as a real file system
does. (The integration test ``test_agent_disk_full.py`` runs the agent on a real tmpfs.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agents.spool import Spool

HEADER = 36
MAGIC = 8


class SmallDisk:
    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self.enospc = 0

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def free_bytes(self, directory: Path) -> int:
        return max(0, self.capacity - self.used())

    def write(self, fd: int, data: bytes) -> int:
        room = self.capacity - self.used()
        if room >= len(data):
            return os.write(fd, data)
        if room > 0:
            os.write(fd, data[:room])  # a torn write: part of the record reached the disk
        self.enospc += 1
        raise OSError(errno.ENOSPC, "No space left on device")


class LyingDisk(SmallDisk):
    """Says there is room, then fails the write anyway (reserved blocks, quotas, metadata)."""

    def free_bytes(self, directory: Path) -> int:
        return 10**9


def payload(seq: int, size: int = 1000) -> bytes:
    head = f"batch-{seq:04d}|".encode()
    return head + b"x" * (size - len(head))


def append(spool: Spool, ts0: int = 1_000_000, size: int = 1000, n: int = 10) -> bool:
    """Append one batch covering 10 seconds after the previous one."""
    seq = spool.next_seq
    first = ts0 + seq * 10
    return spool.append(seq, payload(seq, size), n_samples=n, first_ts=first, last_ts=first + 9)


def scan_ok(directory: Path) -> list[int]:
    """Reopen the spool as after a crash: the seqs of every intact unacknowledged record."""
    s = Spool(directory, fsync=False, max_bytes=1024**2)
    try:
        return [e.seq for e, _ in s.pending()]
    finally:
        s.close()


def test_a_full_disk_drops_the_oldest_batches_counts_them_and_reports_their_seconds(
    tmp_path: Path,
) -> None:
    # given a 12 KiB disk, a spool allowed 1 MiB (the disk is the limit), the broker away
    disk = SmallDisk(tmp_path, 12 * 1024)
    spool = Spool(
        tmp_path, max_bytes=1024**2, segment_bytes=2048, fsync=False, reserve_bytes=1024, fs=disk
    )
    # when 30 batches of ~1 KiB arrive (about 30 KiB: more than twice the disk)
    stored = [append(spool) for _ in range(30)]
    # then every append succeeded: old segments went to make room, none crashed
    assert all(stored)
    assert spool.dropped_batches > 0
    kept = [e.seq for e, _ in spool.pending()]
    # the *oldest* went first: what is left is the newest, contiguous, ending with the last
    assert kept == list(range(30 - len(kept), 30))
    assert spool.dropped_batches == 30 - len(kept)
    assert spool.dropped_samples == 10 * spool.dropped_batches
    # and the dropped seconds are owed as one gap, exactly the seconds of the dropped batches
    assert spool.unreported_gaps == [(1_000_000, 1_000_000 + 10 * spool.dropped_batches)]
    assert disk.used() <= disk.capacity


def test_a_write_that_fails_midway_leaves_no_torn_record(tmp_path: Path) -> None:
    # given a disk that claims room but fails writes past 6 KiB (a torn write each time)
    disk = LyingDisk(tmp_path, 6 * 1024)
    spool = Spool(
        tmp_path, max_bytes=1024**2, segment_bytes=2048, fsync=False, reserve_bytes=0, fs=disk
    )
    for _ in range(20):
        append(spool)
    assert disk.enospc > 0
    kept = [e.seq for e, _ in spool.pending()]
    assert kept and kept[-1] == 19
    # then every segment ends on a record boundary (nothing to truncate on the next open)
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("seg-*.log")}
    spool.close()
    assert scan_ok(tmp_path) == kept
    assert {p.name: p.stat().st_size for p in tmp_path.glob("seg-*.log")} == sizes


def test_when_nothing_older_can_go_the_incoming_batch_is_dropped_and_reported(
    tmp_path: Path,
) -> None:
    # given a disk already full with someone else's file
    (tmp_path / "other.bin").write_bytes(b"\0" * 4000)
    disk = SmallDisk(tmp_path, 4096)
    spool = Spool(
        tmp_path, max_bytes=1024**2, segment_bytes=2048, fsync=False, reserve_bytes=0, fs=disk
    )
    # when a batch arrives
    assert append(spool) is False
    # then it is not stored, its seq is not used, it is counted and its seconds are owed
    assert spool.next_seq == 0 and spool.pending_count == 0
    assert (spool.dropped_batches, spool.dropped_samples) == (1, 10)
    assert spool.unreported_gaps == [(1_000_000, 1_000_010)]
    # and when space returns, the next batch is stored and carries the owed gap
    (tmp_path / "other.bin").unlink()
    seq = spool.next_seq
    assert spool.append(
        seq,
        payload(seq),
        n_samples=10,
        first_ts=1_000_010,
        last_ts=1_000_019,
        reports=list(spool.unreported_gaps),
    )
    assert spool.unreported_gaps == []
    # the carried gap is owed again if that batch is itself dropped before it is acknowledged
    disk.capacity = 0
    for _ in range(3):
        append(spool, ts0=1_000_000)
    assert any(s <= 1_000_000 and e >= 1_000_010 for s, e in spool.unreported_gaps)


def test_acknowledgement_settles_carried_gaps_and_counters_survive_a_restart(
    tmp_path: Path,
) -> None:
    (tmp_path / "other.bin").write_bytes(b"\0" * 4000)
    disk = SmallDisk(tmp_path, 4096)
    spool = Spool(
        tmp_path, max_bytes=1024**2, segment_bytes=2048, fsync=False, reserve_bytes=0, fs=disk
    )
    assert append(spool) is False
    (tmp_path / "other.bin").unlink()
    spool.close()
    # after a restart the owed gap is still owed
    again = Spool(
        tmp_path, max_bytes=1024**2, segment_bytes=2048, fsync=False, reserve_bytes=0, fs=disk
    )
    assert again.unreported_gaps == [(1_000_000, 1_000_010)]
    assert again.append(
        0,
        payload(0),
        n_samples=10,
        first_ts=1_000_010,
        last_ts=1_000_019,
        reports=list(again.unreported_gaps),
    )
    again.ack(0)
    again.close()
    third = Spool(tmp_path, max_bytes=1024**2, fsync=False)
    assert third.unreported_gaps == [] and (third.dropped_batches, third.dropped_samples) == (1, 10)


def test_a_spool_of_one_mib_on_a_full_disk_keeps_working(tmp_path: Path) -> None:
    # given --spool-max-mb 1 on a 2 MiB disk that other files fill up to 1.5 MiB
    (tmp_path / "other.bin").write_bytes(b"\0" * (1536 * 1024))
    disk = SmallDisk(tmp_path, 2 * 1024**2)
    spool = Spool(tmp_path, max_bytes=1024**2, fsync=False, fs=disk)
    assert spool.segment_bytes == 128 * 1024  # an eighth of the bound
    for _ in range(200):  # 200 batches of 10 KiB, broker away
        assert append(spool, size=10 * 1024)
    assert spool.dropped_batches > 0 and disk.used() <= disk.capacity
    assert [e.seq for e, _ in spool.pending()][-1] == 199


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_a_segment_torn_while_its_magic_was_written_is_recovered(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path, max_bytes=1024**2, fsync=False)
    append(spool)
    spool.close()
    (tmp_path / "seg-000000000001.log").write_bytes(b"GMSPOOL2"[:cut])
    again = Spool(tmp_path, max_bytes=1024**2, fsync=False)
    assert [e.seq for e, _ in again.pending()] == [0]
    assert append(again)
    again.close()
    assert scan_ok(tmp_path) == [0, 1]


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = Spool(tmp_path, fsync=False)
    code = (
        "import sys; from pathlib import Path; from agents.spool import Spool, SpoolError\n"
        "try:\n    Spool(Path(sys.argv[1]))\nexcept SpoolError as e:\n    print(e); sys.exit(3)\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stderr
    assert "in use by another agent process" in out.stdout
    spool.close()
