"""The agent's on-disk spool: FIFO order, acknowledgement, survival across restarts and crashes,
and the size bound that drops the oldest data, never silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.spool import Spool, SpoolError

HEADER = (
    36  # bytes per record header: u32 length, u64 seq, u32 crc, u32 samples, i64 first_ts, last_ts
)
MAGIC = 8  # bytes at the start of each segment


def payload(seq: int, size: int = 100) -> bytes:
    """A recognisable payload of exactly ``size`` bytes for ``seq``."""
    head = f"batch-{seq:04d}|".encode()
    return head + b"x" * (size - len(head))


def open_spool(directory: Path, **overrides: object) -> Spool:
    kwargs: dict[str, object] = {"max_bytes": 1024**2, "segment_bytes": 64 * 1024, "fsync": False}
    kwargs.update(overrides)
    return Spool(directory, **kwargs)  # type: ignore[arg-type]


def fill(spool: Spool, count: int, *, size: int = 100) -> None:
    """Append batches seq next..next+count-1; batch ``seq`` holds seq+1 samples, last_ts 1000+seq."""
    for _ in range(count):
        seq = spool.next_seq
        spool.append(seq, payload(seq, size), n_samples=seq + 1, last_ts=1000 + seq)


def pending(spool: Spool, after_seq: int = -1) -> list[tuple[int, bytes]]:
    return [(e.seq, data) for e, data in spool.pending(after_seq)]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("seg-*.log"))


def test_a_new_spool_is_empty_and_starts_at_seq_zero(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    assert spool.next_seq == 0
    assert spool.pending_count == 0 and spool.last_ts is None
    assert pending(spool) == []
    assert spool.agent_id  # an instance id exists from the start


def test_pending_returns_appended_batches_in_order(tmp_path: Path) -> None:
    # given five batches appended (small segments, so they span several files)
    spool = open_spool(tmp_path, segment_bytes=256)
    fill(spool, 5)
    # then they come back in seq order with their exact payloads
    assert pending(spool) == [(s, payload(s)) for s in range(5)]
    assert spool.pending_count == 5
    assert spool.pending_samples == 1 + 2 + 3 + 4 + 5
    assert spool.last_ts == 1004
    # and after_seq skips what was already handed out
    assert [s for s, _ in pending(spool, after_seq=2)] == [3, 4]


def test_append_with_the_wrong_seq_raises(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolError, match="expected seq 0"):
        spool.append(1, b"p", n_samples=1, last_ts=1)
    spool.append(0, b"p", n_samples=1, last_ts=1)
    with pytest.raises(SpoolError, match="expected seq 1, got 0"):
        spool.append(0, b"p", n_samples=1, last_ts=1)  # a repeat
    with pytest.raises(SpoolError):
        spool.append(5, b"p", n_samples=1, last_ts=1)  # a hole
    assert [s for s, _ in pending(spool)] == [0]


def test_ack_releases_entries_and_deletes_fully_acknowledged_segments(tmp_path: Path) -> None:
    # given one record per segment (136-byte records, 100-byte segments), no retention
    spool = open_spool(tmp_path, segment_bytes=100, retain_bytes=0)
    fill(spool, 4)
    assert segments(tmp_path) == [f"seg-{s:012d}.log" for s in range(4)]
    # when the broker acknowledged up to seq 1
    spool.ack(1)
    # then seq 0 and 1 are no longer pending and their segments are gone
    assert pending(spool) == [(2, payload(2)), (3, payload(3))]
    assert spool.pending_samples == 3 + 4
    assert segments(tmp_path) == [f"seg-{s:012d}.log" for s in (2, 3)]
    # and an ack that is older than the last one changes nothing
    spool.ack(0)
    assert spool.acked == 1 and spool.pending_count == 2
    # when everything is acknowledged, the active segment stays (it holds the seq watermark)
    spool.ack(3)
    assert pending(spool) == [] and segments(tmp_path) == ["seg-000000000003.log"]


def test_a_segment_with_an_unacknowledged_record_is_kept(tmp_path: Path) -> None:
    # given two records per segment (rotation once a segment reaches 256 bytes)
    spool = open_spool(tmp_path, segment_bytes=256)
    fill(spool, 4)
    assert segments(tmp_path) == ["seg-000000000000.log", "seg-000000000002.log"]
    # when only the first record of the first segment is acknowledged
    spool.ack(0)
    # then the segment stays, because seq 1 in it is still pending
    assert segments(tmp_path) == ["seg-000000000000.log", "seg-000000000002.log"]
    assert [s for s, _ in pending(spool)] == [1, 2, 3]


def test_a_restart_keeps_agent_id_seq_pending_batches_and_last_ts(tmp_path: Path) -> None:
    # given a spool with five batches of which two are acknowledged, closed as on shutdown
    spool = open_spool(tmp_path, segment_bytes=256)
    fill(spool, 5)
    spool.ack(1)
    agent_id = spool.agent_id
    spool.close()
    # when a new agent process opens the same directory
    again = open_spool(tmp_path, segment_bytes=256)
    # then it is the same agent instance, continues the sequence, and still owes seq 2..4
    assert again.agent_id == agent_id
    assert again.acked == 1
    assert again.next_seq == 5
    assert again.last_ts == 1004
    assert pending(again) == [(s, payload(s)) for s in (2, 3, 4)]
    assert again.pending_samples == 3 + 4 + 5
    # and appending continues the same log
    fill(again, 1)
    again.close()
    assert [s for s, _ in pending(open_spool(tmp_path, segment_bytes=256))] == [2, 3, 4, 5]


def test_a_restart_after_everything_was_acknowledged_continues_the_sequence(tmp_path: Path) -> None:
    # given every batch acknowledged (their segments deleted but the newest)
    spool = open_spool(tmp_path, segment_bytes=100)
    fill(spool, 3)
    spool.ack(2)
    spool.close()
    # when restarted
    again = open_spool(tmp_path, segment_bytes=100)
    # then nothing is pending, but seqs are not reused and the last second is known
    assert again.pending_count == 0
    assert again.next_seq == 3
    assert again.last_ts == 1002


def test_different_directories_are_different_agent_instances(tmp_path: Path) -> None:
    assert open_spool(tmp_path / "a").agent_id != open_spool(tmp_path / "b").agent_id


@pytest.mark.parametrize("cut", [1, 5, 35, 36, 37, 135])
def test_a_torn_last_record_is_cut_on_open_and_earlier_records_survive(
    tmp_path: Path, cut: int
) -> None:
    # given three 128-byte records in one segment, the last one torn by a crash mid-write
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool.close()
    [seg] = tmp_path.glob("seg-*.log")
    assert seg.stat().st_size == MAGIC + 3 * (HEADER + 100)
    with open(seg, "r+b") as f:
        f.truncate(MAGIC + 3 * (HEADER + 100) - cut)
    # when the spool is opened again
    again = open_spool(tmp_path)
    # then the torn record is gone from the file and the first two are intact
    assert seg.stat().st_size == MAGIC + 2 * (HEADER + 100)
    assert pending(again) == [(0, payload(0)), (1, payload(1))]
    assert again.next_seq == 2
    assert again.last_ts == 1001
    # and new records appended after recovery read back cleanly after another restart
    fill(again, 2)
    again.close()
    assert pending(open_spool(tmp_path)) == [(s, payload(s)) for s in range(4)]


@pytest.mark.parametrize(
    "garbage",
    [b"\x00", b"\xff" * 40, b"\x10\x00\x00\x00" + b"\x00" * 24 + b"0123456789abcdef"],
    ids=["one-byte", "huge-length", "bad-crc"],
)
def test_garbage_after_the_last_record_is_cut_on_open(tmp_path: Path, garbage: bytes) -> None:
    # given two good records followed by garbage (a header with a wrong crc, or noise)
    spool = open_spool(tmp_path)
    fill(spool, 2)
    spool.close()
    [seg] = tmp_path.glob("seg-*.log")
    with open(seg, "ab") as f:
        f.write(garbage)
    # when reopened
    again = open_spool(tmp_path)
    # then the garbage is truncated away and both records survive
    assert seg.stat().st_size == MAGIC + 2 * (HEADER + 100)
    assert pending(again) == [(0, payload(0)), (1, payload(1))]
    fill(again, 1)
    again.close()
    assert [s for s, _ in pending(open_spool(tmp_path))] == [0, 1, 2]


def test_the_size_bound_drops_the_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    # given 128-byte records, two per 256-byte segment, and a 600-byte bound
    spool = open_spool(tmp_path, segment_bytes=256, max_bytes=600)
    # when four records are appended (512 bytes): nothing is dropped yet
    fill(spool, 4)
    assert spool.dropped_batches == 0 and spool.dropped_samples == 0
    # and a fifth opens a third segment (640 bytes > 600)
    fill(spool, 1)
    # then the oldest segment (seq 0 and 1, 1 + 2 samples) is dropped, the newest data kept
    assert [s for s, _ in pending(spool)] == [2, 3, 4]
    assert (spool.dropped_batches, spool.dropped_samples) == (2, 1 + 2)
    assert segments(tmp_path) == ["seg-000000000002.log", "seg-000000000004.log"]
    # and delivery moves past the dropped seqs
    assert spool.acked == 1
    assert spool.next_seq == 5
    # when two more arrive (seq 5 fills segment 4, seq 6 opens a new one and pushes seq 2, 3 out)
    fill(spool, 2)
    assert [s for s, _ in pending(spool)] == [4, 5, 6]
    assert (spool.dropped_batches, spool.dropped_samples) == (4, 1 + 2 + 3 + 4)
    assert spool.acked == 3
    # and the spool never holds more than the bound
    assert sum(p.stat().st_size for p in tmp_path.glob("seg-*.log")) <= 600


def test_dropped_counters_and_the_advanced_ack_survive_a_restart(tmp_path: Path) -> None:
    # given a spool that had to drop its two oldest batches
    spool = open_spool(tmp_path, segment_bytes=256, max_bytes=600)
    fill(spool, 5)
    spool.close()
    # when restarted
    again = open_spool(tmp_path, segment_bytes=256, max_bytes=600)
    # then the counters, the ack watermark and what is still owed are as before
    assert (again.dropped_batches, again.dropped_samples) == (2, 3)
    assert json.loads((tmp_path / "dropped.json").read_text()) == {
        "batches": 2,
        "samples": 3,
        "gaps": [[1000, 1002]],  # the dropped seconds, owed to the ledger as spool_full gaps
        "carriers": {},
    }
    assert again.acked == 1
    assert [s for s, _ in pending(again)] == [2, 3, 4]
    assert again.next_seq == 5
    # and later drops add to the persisted counts
    fill(again, 2)
    assert (again.dropped_batches, again.dropped_samples) == (4, 3 + 3 + 4)


def test_dropping_acknowledged_segments_counts_nothing(tmp_path: Path) -> None:
    # given everything acknowledged as it was written (the broker is up)
    spool = open_spool(tmp_path, segment_bytes=256, max_bytes=600)
    for _ in range(12):
        fill(spool, 1)
        spool.ack(spool.next_seq - 1)
    # then nothing was lost, so nothing is counted as dropped
    assert (spool.dropped_batches, spool.dropped_samples) == (0, 0)
    assert spool.pending_count == 0


def test_segment_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="segment_bytes"):
        open_spool(tmp_path, segment_bytes=2048, max_bytes=1024)


# -- retention of acknowledged batches (refill of a broker that lost them) ------------------------
def test_acknowledged_batches_are_retained_for_resend_within_the_size_window(
    tmp_path: Path,
) -> None:
    # given 136-byte records, two per segment, and room to retain two segments (560 bytes)
    spool = open_spool(tmp_path, segment_bytes=256, retain_bytes=2 * (MAGIC + 2 * (HEADER + 100)))
    fill(spool, 8)
    # when everything up to seq 5 is acknowledged
    spool.ack(5)
    # then acknowledged batches are still readable for a resend, the oldest beyond the window gone
    assert [e.seq for e in spool.retained()] == [2, 3, 4, 5]
    assert [e.seq for e, _ in spool.read(spool.retained(since_ts=1004))] == [4, 5]
    assert dict((e.seq, p) for e, p in spool.read(spool.retained())) == {
        s: payload(s) for s in (2, 3, 4, 5)
    }
    # and only the unacknowledged ones are pending
    assert [s for s, _ in pending(spool)] == [6, 7]
    # and after a restart the retained ones are known again
    spool.close()
    again = open_spool(tmp_path, segment_bytes=256, retain_bytes=560)
    assert [e.seq for e in again.retained()] == [2, 3, 4, 5]


def test_retained_batches_older_than_the_age_window_are_deleted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=256, retain_s=3600)
    fill(spool, 6)
    old = tmp_path / "seg-000000000000.log"
    spool.segments.written_at[old] -= 7200  # written two hours ago
    spool.ack(3)
    assert [e.seq for e in spool.retained()] == [2, 3]
    assert not old.exists()


def test_retained_batches_are_the_first_to_go_under_the_size_bound(tmp_path: Path) -> None:
    # given a spool whose retention would allow everything, but a 700-byte bound
    spool = open_spool(tmp_path, segment_bytes=256, max_bytes=700, retain_bytes=10_000)
    fill(spool, 4)
    spool.ack(1)  # seq 0, 1 (one segment) retained
    # when a new segment is needed
    fill(spool, 1)
    # then the retained segment went, nothing unacknowledged was dropped or counted
    assert spool.retained() == [] and [s for s, _ in pending(spool)] == [2, 3, 4]
    assert (spool.dropped_batches, spool.dropped_samples) == (0, 0)


def test_a_spool_written_by_the_previous_format_is_read_and_never_appended_to(
    tmp_path: Path,
) -> None:
    import struct
    import zlib

    # given a segment in the older format (no magic, header without first_ts, crc of payload)
    v1 = struct.Struct("<IQIIq")
    seg = tmp_path / "seg-000000000000.log"
    seg.write_bytes(
        b"".join(
            v1.pack(100, s, zlib.crc32(payload(s)), s + 1, 1000 + s) + payload(s) for s in range(3)
        )
    )
    (tmp_path / "acked").write_text("0")
    # when the new spool opens it
    spool = open_spool(tmp_path)
    # then its records are pending / retained as before, and new ones go to a new segment
    assert pending(spool) == [(1, payload(1)), (2, payload(2))]
    assert [e.seq for e in spool.retained()] == [0]
    fill(spool, 1)
    assert segments(tmp_path) == ["seg-000000000000.log", "seg-000000000003.log"]
    spool.close()
    assert [s for s, _ in pending(open_spool(tmp_path))] == [1, 2, 3]
