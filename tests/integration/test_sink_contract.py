"""The ledger sink's contract, run against the real ClickHouse sink (embedded engine) and the
in-memory fake the processor's unit tests use, so the fake cannot drift from the real thing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from schemas.usage import GpuSecond
from streams.aggregate import Conflict, MinuteRow
from streams.clickhouse.sink import RAW_CAP_BYTES, LedgerSink
from streams.records import RejectedRecord
from tests.fakes.ledger import FakeLedger

MINUTE = 1_795_651_200  # 2026-11-20T00:00:00Z


def row(
    claimed: int, released: int = 0, *, energy: dict[int, int] | None = None, version: int = 1
) -> MinuteRow:
    energy = energy if energy is not None else {s: 1000 for s in range(60) if claimed >> s & 1}
    return MinuteRow(
        MINUTE,
        "acme",
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
    )


def sample(ts: int, tenant: str | None = "acme", energy_j: float = 300.0) -> GpuSecond:
    return GpuSecond(
        gpu_uuid="GPU-1",
        gpu_model="H100",
        ts=ts,
        tenant=tenant,
        job="j1" if tenant else None,
        sm_util=10,
        mem_util=5,
        mem_used=1,
        mem_total=2,
        power_w=300,
        energy_j=energy_j,
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

    def conflict_count(self, sink: Any) -> int:
        raise NotImplementedError

    def totals(self, sink: Any) -> tuple[int, int]:
        """(GPU-seconds, energy mJ) over the whole ledger, as billing reads it."""
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


@pytest.mark.integration
class TestClickHouseSink(SinkContract):
    @pytest.fixture(autouse=True)
    def _client(self, clickhouse: Any) -> None:
        self.client = clickhouse
        for table in ("usage_minutely", "usage_seconds", "usage_conflicts", "usage_rejected"):
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
