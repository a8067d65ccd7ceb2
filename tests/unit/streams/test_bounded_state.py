"""The aggregator's state is masks, not readings: once the ledger holds a row, its per-second
readings leave memory (``Aggregator.forget_written``), and nothing that leaves the processor
changes. Proved against the same processor that keeps every reading (the behaviour before the
readings were dropped): the same ledger, byte for byte the same closed-minute messages, the
same conflict rows, with readings varied per frame (non-integer, so that a sum taken in a
different order would show), conflicting claims, MIG slices, redelivery and restarts."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.frame import Frame, Share, frame_wire
from streams.app import minutely_message
from streams.processor import UsageProcessor
from streams.records import SourceRecord
from tests.fakes.ledger import FakeLedger
from tests.unit.streams import test_many_writers as many_writers

TOPIC = "gpu.usage.v1"
M0 = int(time.time()) // 60 * 60 - 3600  # a recent minute: nothing is "in the future"
Alloc = tuple[tuple[str, str, int], ...]
SETS: list[Alloc] = [
    (),
    (("acme", "train", 1000),),
    (("acme", "train", 600), ("zeta", "infer", 300)),
    (("acme", "train", 600),),
    (("acme", "train", 500), ("beta", "b", 500)),
    (("zeta", "infer", 300),),
]
DEVICES = [("GPU-A", None), ("GPU-A", "MIG-1"), ("GPU-B", None)]


def frame(start: int, n: int, alloc: Alloc, salt: int, gpu: str, mig: str | None) -> Frame:
    """Readings that differ per frame and per second, with fractions (0.1 is inexact)."""
    return Frame(
        gpu_uuid=gpu,
        mig_uuid=mig,
        gpu_model="H100",
        start=start,
        allocations=tuple(Share(t, j, m) for t, j, m in alloc),
        sm_util=[((start + i) * 7 + salt) % 1000 / 10 for i in range(n)],
        mem_util=[((start + i) * 3 + salt) % 997 / 10 for i in range(n)],
        mem_used=[100 + (i + salt) % 50 for i in range(n)],
        mem_total=1000,
        power_w=[300.0] * n,
        energy_j=[300.1 + (start + i + salt) % 300 for i in range(n)],
    )


def record(offset: int, frames: Sequence[Frame]) -> SourceRecord:
    doc = {
        "schema_version": 2,
        "node_id": "node-1",
        "agent_id": "agent-node-1",
        "seq": offset,
        "frames": [frame_wire(f) for f in frames],
        "gaps": [],
    }
    return SourceRecord(orjson.dumps(doc), TOPIC, 0, offset)


@st.composite
def histories(draw: st.DrawFn) -> list[Frame]:
    out = []
    for salt in range(draw(st.integers(1, 10))):
        gpu, mig = draw(st.sampled_from(DEVICES))
        start = M0 + draw(st.integers(0, 400))
        n = draw(st.integers(1, 70))
        out.append(frame(start, n, draw(st.sampled_from(SETS)), salt, gpu, mig))
    return out


def keeping(store: FakeLedger, grace_s: int) -> UsageProcessor:
    """The processor as it was: every reading stays in memory."""
    proc = UsageProcessor(store, grace_s=grace_s, keep_closed_s=0)
    proc.aggregator.forget_written = lambda: 0  # type: ignore[method-assign]
    return proc


def ledger_state(store: FakeLedger) -> dict[Any, Any]:
    return {
        k: (
            r.claimed_mask,
            r.released_mask,
            r.claimed_active,
            r.readings,
            r.peak_mem_used,
            r.version,
            r.billing_class,
            r.gpu_model,
            r.node_id,
        )
        for k, r in store.ledger.items()
    }


def readings_held(proc: UsageProcessor) -> int:
    return sum(
        len(row.readings)
        for group in proc.aggregator._groups.values()
        for gm in group.values()
        for row in gm.rows.values()
    )


@settings(max_examples=300, deadline=None)
@given(frames=histories(), data=st.data())
def test_dropping_written_readings_changes_no_output(
    frames: list[Frame], data: st.DataObject
) -> None:
    # given every frame delivered at least once, in any order, in records of a few frames,
    # with restarts at random points, to a processor that drops written readings and to one
    # that keeps them
    copies = [f for f in frames for _ in range(data.draw(st.integers(1, 2)))]
    order = data.draw(st.permutations(copies))
    grace = data.draw(st.sampled_from([0, 30, 120]))
    a_store, b_store = FakeLedger(), FakeLedger()
    dropping = UsageProcessor(a_store, grace_s=grace, keep_closed_s=0)
    kept = keeping(b_store, grace)
    offset = 0
    while order:
        k = data.draw(st.integers(1, 3))
        chunk = [record(offset, order[:k])]
        # when each processes the same chunk
        out_a, out_b = dropping.process(chunk), kept.process(chunk)
        # then the closed minutes' messages are the same bytes
        assert [minutely_message(r) for r in out_a.closed] == [
            minutely_message(r) for r in out_b.closed
        ]
        # and the dropping processor holds no reading the ledger already has
        assert readings_held(dropping) == 0
        order = order[k:]
        offset += 1
        if data.draw(st.booleans()):
            dropping = UsageProcessor(a_store, grace_s=grace, keep_closed_s=0)
            kept = keeping(b_store, grace)
    # and the ledgers, the conflicts and the counts are the same
    assert ledger_state(a_store) == ledger_state(b_store)
    assert a_store.conflicts == b_store.conflicts
    assert a_store.raw == b_store.raw
    assert dataclasses.astuple(dropping.stats)[:-1] == dataclasses.astuple(kept.stats)[:-1]


def test_a_released_second_whose_reading_left_memory_is_restored_from_the_ledger() -> None:
    # given zeta's claim counted and written (its readings then leave memory)
    store = FakeLedger()
    proc = UsageProcessor(store)
    zeta = frame(M0, 10, (("zeta", "infer", 1000),), 1, "GPU-A", None)
    proc.process([record(0, [zeta])])
    [row] = [r for gm in proc.aggregator._groups[("GPU-A", M0)].values() for r in gm.rows.values()]
    assert row.readings == {} and row.dropped_mask == (1 << 10) - 1
    # when acme's claim (the smaller allocation) arrives for seconds 3..4
    acme = frame(M0 + 3, 2, (("acme", "train", 1000),), 2, "GPU-A", None)
    proc.process([record(1, [acme])])
    # then zeta's conflict rows carry zeta's own readings, read back from the ledger
    conflicts = sorted(store.conflicts.values(), key=lambda c: c.ts)
    assert [c.loser for c in conflicts] == [("zeta", "infer")] * 2
    assert [c.loser_readings for c in conflicts] == [
        (zeta.sm_util[i], zeta.mem_util[i], round(zeta.energy_j[i] * 1000)) for i in (3, 4)
    ]
    # and zeta's sums are those of its 8 remaining seconds
    zeta_row = store.ledger[(M0, "GPU-A", "", "zeta", "infer", 1000)]
    held = [i for i in range(10) if i not in (3, 4)]
    assert zeta_row.energy_mj == sum(round(zeta.energy_j[i] * 1000) for i in held)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 31), schedule=st.lists(many_writers.ops, max_size=40))
def test_many_writers_dropping_readings_keep_every_reading_in_the_ledger(
    seed: int, schedule: list[many_writers.Op]
) -> None:
    # given the many-writers simulation (rebalances, writes landing late, crashes, redelivery),
    # whose workers drop each row's readings once written
    store = FakeLedger()
    seconds, _truth = many_writers.run(store, seed, schedule)
    # then every held second's reading is in the ledger: 300 J each, whatever the schedule
    energy: Counter[tuple[str, str, str, int]] = Counter()
    for r in store.ledger.values():
        if r.gpu_seconds:
            energy[(r.tenant, r.job, r.gpu_uuid, r.minute)] += r.energy_mj
    assert energy == Counter({cell: n * 300_000 for cell, n in seconds.items()})


def test_a_shared_rows_replaced_reading_survives_the_drop() -> None:
    # given acme's row held by claim A (acme 600 + zeta 300), then by the better claim B
    # (acme 600 alone) whose frame has another reading for the second; each written, so
    # their readings leave memory (the ledger merges the two readings, max by second)
    store = FakeLedger()
    proc = UsageProcessor(store)
    a = frame(M0 + 5, 1, (("acme", "train", 600), ("zeta", "infer", 300)), 5, "GPU-A", None)
    b = frame(M0 + 5, 1, (("acme", "train", 600),), 1, "GPU-A", None)
    c = frame(M0 + 5, 1, (("aaa", "x", 1000),), 9, "GPU-A", None)
    assert a.sm_util[0] > b.sm_util[0]
    proc.process([record(0, [a])])
    proc.process([record(1, [b])])
    # when the best claim C (aaa alone) takes the second from acme's row
    proc.process([record(2, [c])])
    # then acme's conflict row carries B's reading, the one acme's row held, not the max
    lost = store.conflicts[("GPU-A", M0 + 5, "", "acme", "train", 600)]
    assert lost.loser_readings == (b.sm_util[0], b.mem_util[0], round(b.energy_j[0] * 1000))
