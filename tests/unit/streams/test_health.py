"""Liveness, log-rewind detection, bounded derived messages and the metrics text: no services."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
import pytest

from streams.app import rejection_message
from streams.health import STARTUP_ALLOWANCE_S, Health
from streams.metrics import Sources, render, status
from streams.records import RejectedRecord
from streams.rewind import LogGuard


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def health(stall: float = 10.0) -> tuple[Health, Clock]:
    clock = Clock()
    h = Health(stall_after_s=stall, clock=clock)
    h.loop_tick()
    return h, clock


def test_an_idle_worker_is_live_however_long_it_waits() -> None:
    h, clock = health()
    for _ in range(100):
        clock.t += 5
        h.observe_lag({("usage", 0): 0})
    assert h.stalled() is None and h.progress_age() == 0


def test_records_waiting_without_a_completed_chunk_is_a_stall() -> None:
    # given a worker that completed a chunk, then saw 500 records waiting
    h, clock = health()
    h.chunk_begins()
    h.chunk_done()
    # when the loop keeps ticking and the lag stays, but no chunk completes for 11 s
    for _ in range(11):
        clock.t += 1
        h.observe_lag({("usage", 0): 500})
    # then it is stalled, with the reason
    assert "500 records were waiting" in (h.stalled() or "")
    # and one completed chunk makes it live again
    h.chunk_begins()
    h.chunk_done()
    assert h.stalled() is None


def test_a_chunk_stuck_in_the_processor_is_a_stall_even_with_no_lag_known() -> None:
    h, clock = health()
    h.chunk_begins()
    clock.t += 9
    assert h.stalled() is None  # a long chunk is fine up to the limit
    clock.t += 2
    assert "in the processor for 11 s" in (h.stalled() or "")


def test_a_blocked_event_loop_is_a_stall_but_start_up_gets_an_allowance() -> None:
    clock = Clock()
    h = Health(stall_after_s=10, clock=clock)
    clock.t += 10 + STARTUP_ALLOWANCE_S - 1
    assert h.stalled() is None  # still starting (joining the group)
    clock.t += 2
    assert "not started" in (h.stalled() or "")
    h.loop_tick()
    clock.t += 11
    assert "event loop has not ticked" in (h.stalled() or "")


def test_the_log_guard_rewinds_only_when_the_log_is_behind_twice_in_a_row() -> None:
    guard = LogGuard()
    tp = ("usage", 0)
    # normal reading: position never beyond the fetch high watermark
    for pos, end in [(0, 50), (50, 120), (120, 120)]:
        assert guard.observe(tp, pos, end) is None
    # one odd observation is not enough; two in a row are
    assert guard.observe(tp, 120, 0) is None
    rewind = guard.observe(tp, 120, 0)
    assert rewind is not None and "beyond the log end 0" in rewind.reason
    guard.rewound(tp)
    # after the rewind, reading the new log from 0 is normal
    assert guard.observe(tp, 0, 40) is None and guard.observe(tp, 40, 40) is None


def test_the_log_guard_sees_a_log_end_that_went_backwards() -> None:
    guard = LogGuard()
    tp = ("usage", 1)
    assert guard.observe(tp, 10, 300) is None
    assert guard.observe(tp, 10, 20) is None
    rewind = guard.observe(tp, 10, 20)
    assert rewind is not None and "went back from 300 to 20" in rewind.reason


def test_a_transient_oddity_resets_the_confirmation() -> None:
    guard = LogGuard()
    tp = ("usage", 0)
    guard.observe(tp, 5, 10)
    assert guard.observe(tp, 20, 10) is None
    assert guard.observe(tp, 20, 30) is None  # the log caught up: not a loss
    assert guard.observe(tp, 40, 30) is None  # first oddity again, not confirmed


@pytest.mark.parametrize("size", [10, 600_000, 5_000_000])
def test_a_rejection_message_is_bounded_whatever_the_record(size: int) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    rec = RejectedRecord(
        "gpu.usage.v1",
        3,
        77,
        -1,
        "invalid_envelope",
        "why " * 10_000,
        "node-\ud800-" + "n" * 100_000,
        raw[:size],
    )
    key, value = rejection_message(rec)
    msg = orjson.loads(value)
    assert len(value) < 4096 and len(key) <= 4 * 128
    assert len(msg["reason"]) <= 300 and msg["raw_bytes"] == size
    assert msg["raw_sha256"] == hashlib.sha256(raw[:size]).hexdigest()
    assert (msg["topic"], msg["partition"], msg["offset"], msg["sample_index"]) == (
        "gpu.usage.v1",
        3,
        77,
        -1,
    )
    assert msg["raw_truncated"] == (size > 512)
    assert "\\ud800" in msg["node_id"]  # a lone surrogate cannot break the send


@dataclass
class Stats:
    records: int = 7
    samples: int = 70
    new_seconds: int = 60
    duplicates: int = 10


def test_metrics_text_names_every_counter_and_reads_missing_fields_as_zero() -> None:
    h, _clock = health()
    h.observe_lag({("gpu.usage.v1", 0): 3, ("gpu.usage.v1", 1): 0})
    h.log_rewinds = 1
    text = render(Sources(h, lambda: Stats(), lambda: (2, 1)))
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["gpumeter_worker_records_total"] == "7"
    assert values["gpumeter_worker_seconds_counted_total"] == "60"
    assert values["gpumeter_worker_duplicate_samples_total"] == "10"
    assert values["gpumeter_worker_conflicts_total"] == "0"  # field not there yet
    assert values["gpumeter_worker_lag_records"] == "3"
    assert (
        values['gpumeter_worker_partition_lag_records{topic="gpu.usage.v1",partition="0"}'] == "3"
    )
    assert values["gpumeter_worker_log_rewinds_total"] == "1"
    assert values["gpumeter_worker_live"] == "1"
    assert values["gpumeter_worker_work_units_accepted_total"] == "2"
    assert "# TYPE gpumeter_worker_records_total counter" in text
    assert status(Sources(h, lambda: Stats()))["live"] is True


def test_the_watchdog_exits_on_the_second_stalled_check_so_healthz_says_why_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.health as health_module
    from streams.health import Watchdog

    exits: list[int] = []
    monkeypatch.setattr(health_module, "fatal", lambda code, message, **kw: exits.append(code))

    class Stuck:
        stop_requested = None

        def stalled(self) -> str:
            return "a chunk has been in the processor for 9 s (limit 4 s)"

    dog = Watchdog(Stuck(), stall_exit=True, stop_timeout_s=10)  # type: ignore[arg-type]
    dog.check()
    assert exits == []  # first sighting: reported on /healthz, not yet fatal
    dog.check()
    assert exits == [75]
