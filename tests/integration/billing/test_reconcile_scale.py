"""Conservation read in time chunks (billing.conservation) gives exactly what the ledger's rows
say, whatever the chunk size: checked against a balance computed here in Python from the rows
inserted (versions merged by OR, then per GPU-minute the OR of the masks)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.conservation import LEDGER, chunks, conservation
from billing.period import Period
from billing.store import BillingStore
from tests.ledger_rows import LedgerRow, insert_ledger

pytestmark = pytest.mark.integration

JAN = Period(2026, 1)
IDLE = "__idle__"


def random_ledger(seed: int) -> list[LedgerRow]:
    """Rows over three days of January: whole and shared GPUs, a MIG slice, several rows per
    GPU-minute (some overlapping: seconds counted twice), and keys written twice (versions)."""
    rnd = random.Random(seed)
    rows = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(300):
        minute = start + timedelta(minutes=rnd.choice([0, 1, 59, 60, 61, 1439, 1440, 2999, 4319]))
        gpu, mig = rnd.choice([("g0", ""), ("g1", ""), ("g1", "m1"), ("g2", "")])
        tenant, job = rnd.choice([("a", "j1"), ("b", "j2"), (IDLE, "")])
        share = rnd.choice([1000, 1000, 600, 400])
        mask = rnd.getrandbits(60) or 1
        rows.append(
            LedgerRow(minute, tenant, job, gpu, "H100", mask, mig_uuid=mig, share_milli=share)
        )
    return rows


def expected(rows: list[LedgerRow]) -> dict[str, tuple[int, int, int]]:
    """Per GPU (gpu or gpu/mig): billed and idle milli-GPU-seconds, distinct seconds."""
    keys: dict[tuple[Any, ...], int] = {}
    for r in rows:  # the ledger's identity: a second write of a key ORs its mask in
        k = (r.minute, r.gpu_uuid, r.mig_uuid, r.tenant, r.job, r.share_milli)
        keys[k] = keys.get(k, 0) | r.seconds_mask
    out: dict[str, list[int]] = {}
    minutes: dict[tuple[Any, ...], int] = {}
    for (minute, gpu, mig, tenant, _, share), mask in keys.items():
        name = f"{gpu}/{mig}" if mig else gpu
        acc = out.setdefault(name, [0, 0, 0])
        acc[1 if tenant == IDLE else 0] += bin(mask).count("1") * share
        minutes[(minute, name)] = minutes.get((minute, name), 0) | mask
    for (_, name), mask in minutes.items():
        out[name][2] += bin(mask).count("1")
    return {g: (b, i, n) for g, (b, i, n) in out.items()}


@pytest.mark.parametrize("chunk_rows", [1, 7, 10_000_000])
def test_chunked_conservation_equals_the_rows_balance(clickhouse: Any, chunk_rows: int) -> None:
    # given a ledger with overlapping and shared rows, written in several inserts
    rows = random_ledger(seed=chunk_rows)
    for i in range(0, len(rows), 50):
        insert_ledger(clickhouse, rows[i : i + 50])
    # when conservation is read in chunks of at most chunk_rows rows
    got = conservation(BillingStore(clickhouse), JAN, chunk_rows=chunk_rows)
    # then every GPU's balance is the one the rows give, from the ledger's masks
    assert {g.gpu: (g.billed, g.idle, g.observed) for g in got} == expected(rows)
    assert [g.gpu for g in got] == sorted(g.gpu for g in got)
    assert {g.source for g in got} == {LEDGER}
    # and a second counted twice shows as a GPU out of balance (the random rows overlap)
    want = expected(rows)
    assert any(not g.ok for g in got)
    assert {g.gpu for g in got if not g.ok} == {
        g for g, (b, i, n) in want.items() if b + i != 1000 * n
    }


class HourCounts:
    """A store whose ledger holds ``counts`` rows per hour of January (no query runs)."""

    def __init__(self, counts: dict[int, int]) -> None:
        self.counts = counts

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        assert "toStartOfHour" in sql
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        return [(t0 + timedelta(hours=h), n) for h, n in self.counts.items()]


@pytest.mark.parametrize(
    ("counts", "chunk_rows"),
    [
        ({}, 100),
        ({0: 10, 5: 10, 743: 10}, 15),
        ({h: 40 for h in range(744)}, 100),
        ({3: 1000, 4: 5, 700: 250}, 100),
        ({h: 7 for h in range(0, 744, 3)}, 1),
    ],
)
def test_chunks_tile_the_period_and_bound_the_rows(counts: dict[int, int], chunk_rows: int) -> None:
    got = chunks(HourCounts(counts), JAN, chunk_rows)  # type: ignore[arg-type]
    # the chunks tile the period: consecutive, whole minutes, nothing left out
    assert got[0][0] == JAN.start and got[-1][1] == JAN.end
    assert all(a[1] == b[0] for a, b in zip(got, got[1:], strict=False))
    assert all(s < e and s.second == 0 and e.second == 0 for s, e in got)
    # each chunk of whole hours holds at most chunk_rows rows (or is one hour); a run of minutes
    # cut from a larger hour holds at most chunk_rows of its rows spread evenly, or one minute
    for s, e in got:
        first, last = hour_of(s), hour_of(e - timedelta(minutes=1))
        rows = sum(counts.get(h, 0) for h in range(first, last + 1))
        minutes = (e - s) / timedelta(minutes=1)
        if minutes % 60 == 0 and s.minute == 0:
            assert rows <= chunk_rows or first == last
        else:
            assert first == last and rows > chunk_rows
            assert rows * minutes <= max(60 * chunk_rows, rows)


def hour_of(t: datetime) -> int:
    return int((t - JAN.start) / timedelta(hours=1))
