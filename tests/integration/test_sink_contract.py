"""The ledger sink's contract, run against the real ClickHouse sink (embedded engine) and the
in-memory fake the processor's unit tests use, so the fake cannot drift from the real thing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from schemas.frame import Frame, Share
from streams.aggregate import Conflict, FreshSpan, MinuteRow
from streams.clickhouse.sink import RAW_CAP_BYTES, LedgerSink
from streams.records import RejectedRecord
from tests.fakes.ledger import FakeLedger

MINUTE = 1_795_651_200  # 2026-11-20T00:00:00Z


def row(
    claimed: int,
    released: int = 0,
    *,
    energy: dict[int, int] | None = None,
    version: int = 1,
    share: int = 1000,
    tenant: str = "acme",
) -> MinuteRow:
    energy = energy if energy is not None else {s: 1000 for s in range(60) if claimed >> s & 1}
    return MinuteRow(
        MINUTE,
        tenant,
        "j1",
        "",
        "GPU-1",
        "",
        "H100",
        "n1",
        claimed_mask=claimed,
        released_mask=released,
        claimed_active=claimed,
        readings={s: (50.0, 10.0, e) for s, e in energy.items()},
        version=version,
        share_milli=share,
    )


def frame(start: int, n: int, shares: tuple[Share, ...] = (), mig: str | None = None) -> Frame:
    """A device over n seconds whose readings identify the second (energy = 1 J x index)."""
    return Frame(
        gpu_uuid="GPU-1",
        mig_uuid=mig,
        gpu_model="H100",
        start=start,
        allocations=shares,
        sm_util=[float(i % 3) for i in range(n)],
        mem_util=[5.0] * n,
        mem_used=list(range(n)),
        mem_total=2**30,
        power_w=[300.0] * n,
        energy_j=[float(i + 1) for i in range(n)],
        temp_c=[40.0 + i for i in range(n)] if mig is None else None,
        flags={1: ("throttled",)},
    )


def rejected(
    offset: int, raw: bytes, code: str = "invalid_sample", index: int = 0
) -> RejectedRecord:
    return RejectedRecord("gpu.usage.v1", 0, offset, index, code, "why", "n1", raw)


class SinkContract:
    """What the processor relies on, whatever the backend."""

    def sink(self) -> Any:
        raise NotImplementedError

    def test_writes_merge_by_union_in_any_order_and_repetition(self) -> None:
        # given three states of one row, as two workers and a replay would write them:
        # seconds 0-1, seconds 1-2 with second 0 released, and the first one again, stale
        sink = self.sink()
        sink.write_ledger([row(0b011, energy={0: 100, 1: 200}, version=5)])
        sink.write_ledger([row(0b110, 0b001, energy={1: 200, 2: 300}, version=1)])
        sink.write_ledger([row(0b011, energy={0: 100, 1: 200}, version=5)])
        # then the stored row is their union: seconds 1 and 2 counted, with their readings
        [loaded] = sink.load([("GPU-1", MINUTE)])
        assert (loaded.seconds_mask, loaded.released_mask, loaded.energy_mj) == (0b110, 0b1, 500)
        assert (loaded.gpu_seconds, loaded.active_seconds, loaded.sm_util_sum) == (2, 2, 100.0)
        assert self.totals(sink) == (2, 500)

    def test_load_returns_the_rows_of_a_physical_gpu_minute_and_its_slices(self) -> None:
        sink = self.sink()
        part = dataclasses.replace(row(0b10), mig_uuid="MIG-1")
        other = dataclasses.replace(row(0b1), gpu_uuid="GPU-2")
        sink.write_ledger([row(0b1), part, other])
        loaded = sink.load([("GPU-1", MINUTE)])
        assert sorted(r.mig_uuid for r in loaded) == ["", "MIG-1"]
        assert sink.load([("GPU-1", MINUTE + 60)]) == []

    def test_node_watermarks_are_the_end_of_each_nodes_newest_minute(self) -> None:
        sink = self.sink()
        recent = (int(time.time()) // 60 - 5) * 60
        early = dataclasses.replace(row(0b1), minute=recent - 120)
        late = dataclasses.replace(row(0b1), minute=recent)
        other = dataclasses.replace(row(0b1), minute=recent - 60, node_id="n2", gpu_uuid="G2")
        sink.write_ledger([early, late, other])
        assert sink.node_watermarks(["n1", "n2", "n3"]) == {"n1": recent + 59, "n2": recent - 1}

    def test_parked_samples_are_returned_until_marked_readmitted(self) -> None:
        sink = self.sink()
        parked = rejected(7, b'{"ts": 1}', code="future_timestamp", index=2)
        sink.write_rejected([parked, rejected(8, b"x")])
        [back] = sink.load_parked("gpu.usage.v1")
        assert (back.offset, back.sample_index, back.raw, back.node_id) == (
            7,
            2,
            b'{"ts": 1}',
            "n1",
        )
        sink.mark_readmitted([back])
        assert sink.load_parked("gpu.usage.v1") == []

    def test_rows_of_one_allocation_at_two_shares_are_two_rows_weighted_by_share(self) -> None:
        # given acme/j1 holding 600 milli-GPUs for seconds 0-1, 1000 for second 2, and zeta 300
        # and idle 100 beside it, each written twice
        sink = self.sink()
        rows = [
            row(0b011, share=600, energy={0: 1000, 1: 2001}),
            row(0b100, share=1000, energy={2: 3000}),
            row(0b011, share=300, tenant="zeta", energy={0: 1000, 1: 2001}),
            row(0b011, share=100, tenant="__idle__", energy={0: 1000, 1: 2001}),
        ]
        sink.write_ledger(rows)
        sink.write_ledger(rows)
        # then each share is its own row, reloaded with its share
        loaded = sorted(
            (r.tenant, r.share_milli, r.seconds_mask) for r in sink.load([("GPU-1", MINUTE)])
        )
        assert loaded == [
            ("__idle__", 100, 0b011),
            ("acme", 600, 0b011),
            ("acme", 1000, 0b100),
            ("zeta", 300, 0b011),
        ]
        # and milli-GPU-seconds are seconds x share: 2x600 + 1x1000 + 2x300 + 2x100
        # energy is each row's share of the device energy, rounded down: 3001 x 0.6 = 1800.6,
        # 3000, 3001 x 0.3 = 900.3, 3001 x 0.1 = 300.1
        assert self.milli_totals(sink) == (7, 1200 + 1000 + 600 + 200, 1800 + 3000 + 900 + 300)

    def test_the_raw_archive_holds_each_counted_second_once_with_its_readings(self) -> None:
        # given a frame of 70 s from 50 s before MINUTE + 60 (so it spans two minutes), shared,
        # archived as three spans: second 10..59 of MINUTE in two pieces, one not contiguous
        sink = self.sink()
        f = frame(MINUTE + 10, 70, (Share("acme", "j1", 600, "spot"), Share("zeta", "j", 300)))
        first = sum(1 << s for s in range(10, 60) if s % 2 == 0)
        second = sum(1 << s for s in range(10, 60) if s % 2 == 1)
        spans = [
            FreshSpan("n1", f, MINUTE, first),
            FreshSpan("n1", f, MINUTE, second),
            FreshSpan("n1", f, MINUTE + 60, (1 << 20) - 1),
        ]
        sink.write_raw(spans)
        sink.write_raw(spans[:1])  # a replay of a flush
        # then every second is there once, with the device readings of its own second
        got = self.raw_seconds(sink)
        assert sorted(got) == list(range(MINUTE + 10, MINUTE + 80))
        assert all(got[ts] == ts - MINUTE - 9 for ts in got)  # energy J = index + 1

    def test_conflicts_are_accepted_and_a_repeat_is_harmless(self) -> None:
        sink = self.sink()
        c = Conflict(
            "GPU-1",
            MINUTE + 1,
            "allocation",
            "",
            ("acme", "j1"),
            "",
            ("zeta", "j"),
            "n2",
            "spot",
            (50.0, 10.0, 300_000),
        )
        sink.write_conflicts([c, c])
        sink.write_conflicts([dataclasses.replace(c, loser_readings=None)])
        assert self.conflict_count(sink) == 1
        # the same tenant and job losing the same second at another share is another row
        shared = dataclasses.replace(c, loser_share_milli=250)
        sink.write_conflicts([shared])
        assert self.conflict_count(sink) == 2

    def conflict_count(self, sink: Any) -> int:
        raise NotImplementedError

    def totals(self, sink: Any) -> tuple[int, int]:
        """(GPU-seconds, energy mJ) over the whole ledger, as billing reads it."""
        raise NotImplementedError

    def milli_totals(self, sink: Any) -> tuple[int, int, int]:
        """(GPU-seconds, milli-GPU-seconds, energy mJ) over the whole ledger."""
        raise NotImplementedError

    def raw_seconds(self, sink: Any) -> dict[int, float]:
        """Archived seconds of GPU-1 (each once): ts -> the device energy in joules."""
        raise NotImplementedError


class TestFakeLedger(SinkContract):
    def sink(self) -> Any:
        return FakeLedger()

    def conflict_count(self, sink: Any) -> int:
        return len(sink.conflicts)

    def totals(self, sink: Any) -> tuple[int, int]:
        return (
            sum(r.gpu_seconds for r in sink.ledger.values()),
            sum(r.energy_mj for r in sink.ledger.values()),
        )

    def milli_totals(self, sink: Any) -> tuple[int, int, int]:
        rows = sink.ledger.values()
        return (
            sum(r.gpu_seconds for r in rows),
            sum(r.gpu_milli_seconds for r in rows),
            sum(r.energy_mj for r in rows),
        )

    def raw_seconds(self, sink: Any) -> dict[int, float]:
        return {ts: f.energy_j[ts - f.start] for (_g, _m, ts), (_n, f) in sink.raw.items()}


@pytest.mark.integration
class TestClickHouseSink(SinkContract):
    @pytest.fixture(autouse=True)
    def _client(self, clickhouse: Any) -> None:
        self.client = clickhouse
        for table in ("usage_minutely", "usage_frames", "usage_conflicts", "usage_rejected"):
            clickhouse.command(f"SYSTEM STOP MERGES {table}")  # exact before any merge

    def sink(self) -> Any:
        return LedgerSink(self.client)

    def conflict_count(self, sink: Any) -> int:
        return self.client.query("SELECT count() FROM usage_conflicts FINAL").result_rows[0][0]

    def totals(self, sink: Any) -> tuple[int, int]:
        [(seconds, energy)] = self.client.query(
            "SELECT sum(gpu_seconds), sum(energy_mj) FROM usage_minutely FINAL"
        ).result_rows
        return (int(seconds), int(energy))

    def milli_totals(self, sink: Any) -> tuple[int, int, int]:
        [(seconds, milli, energy)] = self.client.query(
            "SELECT sum(gpu_seconds), sum(gpu_milli_seconds), sum(energy_mj) "
            "FROM usage_minutely FINAL"
        ).result_rows
        return (int(seconds), int(milli), int(energy))

    def raw_seconds(self, sink: Any) -> dict[int, float]:
        rows = self.client.query(
            "SELECT toUnixTimestamp(ts), count(), any(energy_mj) FROM usage_raw_seconds "
            "WHERE gpu_uuid = 'GPU-1' GROUP BY ts"
        ).result_rows
        assert all(n == 1 for _, n, _ in rows), "a second archived twice"
        return {int(ts): e / 1000 for ts, _, e in rows}

    def test_rejected_bytes_are_stored_exactly_capped_with_size_and_hash(self) -> None:
        import hashlib

        # given a payload that is not UTF-8, and one over the cap
        bad = b"\xff\xfe{\x00 \xed\xa0\x80" * 10  # includes an encoded lone surrogate
        huge = b"a" * (RAW_CAP_BYTES + 10)
        self.sink().write_rejected([rejected(1, bad), rejected(2, huge)])
        rows = self.client.query(
            "SELECT offset, raw, raw_size, raw_sha256 FROM usage_rejected ORDER BY offset",
            column_formats={"raw": "bytes", "raw_sha256": "bytes"},
        ).result_rows
        got = {o: (r, n, h) for o, r, n, h in rows}
        # then the first is stored byte for byte, the second cut at the cap, both described
        assert got[1][0] == bad and got[1][1] == len(bad)
        assert len(got[2][0]) == RAW_CAP_BYTES and got[2][1] == len(huge)
        assert got[2][2] == hashlib.sha256(huge).digest()
