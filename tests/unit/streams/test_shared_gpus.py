"""Shared GPUs through the real processor (v2 records -> validation -> aggregator -> sink):
milli-GPU-seconds per tenant, job and minute equal a truth computed here second by second,
without the aggregator's masks, whatever the delivery: conflicting allocation sets, MIG slices
against their parent, redelivery, and a restart that reloads state from the ledger."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.frame import Frame, Share, frame_wire
from streams.processor import UsageProcessor
from streams.records import SourceRecord
from tests.fakes.ledger import FakeLedger

TOPIC = "gpu.usage.v1"
M0 = int(time.time()) // 60 * 60 - 3600  # a recent minute: nothing is "in the future"
IDLE = "__idle__"
Alloc = tuple[tuple[str, str, int], ...]  # an allocation set: (tenant, job, share_milli)
Cell = tuple[int, str, str]  # (minute, tenant, job)


def frame(start: int, n: int, alloc: Alloc, *, gpu: str = "GPU-A", mig: str | None = None) -> Frame:
    return Frame(
        gpu_uuid=gpu,
        mig_uuid=mig,
        gpu_model="H100",
        start=start,
        allocations=tuple(Share(t, j, m) for t, j, m in alloc),
        sm_util=[50.0] * n,
        mem_util=[10.0] * n,
        mem_used=[100] * n,
        mem_total=1000,
        power_w=[300.0] * n,
        # second k after M0: 300 + k % 300 J (what a 300 W device can draw in a second)
        energy_j=[300.0 + (start + i - M0) % 300 for i in range(n)],
    )


def record(offset: int, frames: Sequence[Frame], node: str = "node-1") -> SourceRecord:
    doc = {
        "schema_version": 2,
        "node_id": node,
        "agent_id": f"agent-{node}",
        "seq": offset,
        "frames": [frame_wire(f) for f in frames],
        "gaps": [],
    }
    return SourceRecord(orjson.dumps(doc), TOPIC, 0, offset)


def truth(frames: Sequence[Frame]) -> tuple[Counter[Cell], Counter[Cell]]:
    """(milli-GPU-seconds, energy in mJ) per (minute, tenant, job), second by second: for each
    physical GPU-second, the claims of its slices if any slice claims it, else the parent's;
    per device-second, the smallest claim by the rule (allocations before idle, then the
    sorted (tenant, job, share) tuple); its allocations and idle remainder hold their shares,
    and each its share of the second's energy."""
    claims: dict[tuple[str, str, int], set[Alloc]] = {}
    energy: dict[int, int] = {}
    for f in frames:
        alloc = tuple(sorted((s.tenant, s.job, s.milli) for s in f.allocations))
        for i in range(f.n):
            claims.setdefault((f.gpu_uuid, f.mig_uuid or "", f.start + i), set()).add(alloc)
            energy[f.start + i] = round(f.energy_j[i] * 1000)
    sliced = {(g, ts) for (g, m, ts) in claims if m}
    milli: Counter[Cell] = Counter()
    joules: Counter[Cell] = Counter()
    for (gpu, mig, ts), options in claims.items():
        if not mig and (gpu, ts) in sliced:
            continue  # a GPU in MIG mode is metered through its slices
        winner = min(options, key=lambda a: (0 if a else 1, a))
        rows = [*winner]
        idle = 1000 - sum(m for _, _, m in winner)
        if idle:
            rows.append((IDLE, "", idle))
        minute = ts - ts % 60
        for tenant, job, share in rows:
            milli[(minute, tenant, job)] += share
            joules[(minute, tenant, job)] += energy[ts] * share
    return milli, joules


def ledger(store: FakeLedger) -> tuple[Counter[Cell], Counter[Cell]]:
    milli: Counter[Cell] = Counter()
    mj: Counter[Cell] = Counter()
    for r in store.ledger.values():
        if r.gpu_seconds:
            milli[(r.minute, r.tenant, r.job)] += r.gpu_milli_seconds
            # the row's energy unrounded (x 1000): the ledger rounds each row down to a mJ
            mj[(r.minute, r.tenant, r.job)] += r.device_energy_mj * r.share_milli
    return +milli, +mj


SPLIT: Alloc = (("acme", "train", 600), ("zeta", "infer", 300))


def test_two_tenants_share_a_gpu_and_the_remainder_is_idle() -> None:
    # given one GPU shared 600 + 300 for 90 seconds across a minute boundary (30 + 60)
    store = FakeLedger()
    proc = UsageProcessor(store)
    proc.process([record(0, [frame(M0 + 30, 90, SPLIT)])])
    # then each tenant holds its share of every second, and idle the remaining 100
    milli, _ = ledger(store)
    assert milli == Counter(
        {
            (M0, "acme", "train"): 30 * 600,
            (M0, "zeta", "infer"): 30 * 300,
            (M0, IDLE, ""): 30 * 100,
            (M0 + 60, "acme", "train"): 60 * 600,
            (M0 + 60, "zeta", "infer"): 60 * 300,
            (M0 + 60, IDLE, ""): 60 * 100,
        }
    )
    # and allocated + idle = 1000 x observed seconds; energy is split by share
    assert sum(milli.values()) == 90 * 1000
    acme = [r for r in store.ledger.values() if r.tenant == "acme" and r.minute == M0][0]
    device_mj = sum(1000 * (300 + k) for k in range(30, 60))
    assert acme.energy_mj == device_mj * 600 // 1000
    assert proc.stats.new_seconds == 90 and len(store.raw) == 90


def test_conflicting_sets_give_the_rules_winner_in_either_order() -> None:
    # given three claims on seconds 0..19: the split, acme alone at 600 (+ idle 400), and idle
    alone: Alloc = (("acme", "train", 600),)
    claims = [frame(M0, 20, SPLIT), frame(M0, 20, alone), frame(M0, 20, ())]
    results = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]):
        store = FakeLedger()
        proc = UsageProcessor(store)
        for k, i in enumerate(order):
            proc.process([record(k, [claims[i]])])
        results.append(ledger(store))
        # then every losing row of every second is recorded (the shared acme row never loses)
        losers = Counter((c.loser, c.loser_share_milli) for c in store.conflicts.values())
        assert losers == Counter(
            {
                (("zeta", "infer"), 300): 20,
                ((IDLE, ""), 100): 20,
                ((IDLE, ""), 1000): 20,
            }
        )
    # and the ledger is the same in every order: acme 600 and idle 400 won (the smaller set)
    assert all(r == results[0] for r in results)
    assert results[0] == truth(claims)
    assert results[0][0] == Counter({(M0, "acme", "train"): 20 * 600, (M0, IDLE, ""): 20 * 400})


def test_a_mig_slice_beats_its_parent_whatever_the_shares() -> None:
    # given the parent GPU shared for seconds 0..29 and a slice claimed for seconds 10..19
    parent = frame(M0, 30, SPLIT)
    part = frame(M0 + 10, 10, (("kilo", "x", 250),), mig="MIG-1")
    for order in ([parent, part], [part, parent]):
        store = FakeLedger()
        proc = UsageProcessor(store)
        for k, f in enumerate(order):
            proc.process([record(k, [f])])
        # then seconds 10..19 are metered through the slice only
        assert ledger(store) == truth([parent, part])
        milli, _ = ledger(store)
        assert milli[(M0, "acme", "train")] == 20 * 600
        assert milli[(M0, "kilo", "x")] == 10 * 250 and milli[(M0, IDLE, "")] == 20 * 100 + 10 * 750


@st.composite
def histories(draw: st.DrawFn) -> list[Frame]:
    """Frames over one GPU, one of its slices and another GPU within 3 minutes, each with a
    random allocation set (shares summing to at most 1000, some idle), overlapping freely."""
    sets: list[Alloc] = [
        (),
        (("acme", "train", 1000),),
        SPLIT,
        (("acme", "train", 600),),
        (("acme", "train", 500), ("beta", "b", 500)),
        (("zeta", "infer", 300),),
    ]
    devices = [("GPU-A", None), ("GPU-A", "MIG-1"), ("GPU-B", None)]
    out = []
    for _ in range(draw(st.integers(1, 8))):
        gpu, mig = draw(st.sampled_from(devices))
        start = M0 + draw(st.integers(0, 170))
        n = draw(st.integers(1, 70))
        out.append(frame(start, n, draw(st.sampled_from(sets)), gpu=gpu, mig=mig))
    return out


@settings(max_examples=60, deadline=None)
@given(frames=histories(), data=st.data())
def test_any_delivery_redelivery_and_restart_gives_the_truth(
    frames: list[Frame], data: st.DataObject
) -> None:
    # given every frame delivered at least once, in any order, in records of a few frames,
    # the worker restarted (state reloaded from the ledger) at random points
    copies = [f for f in frames for _ in range(data.draw(st.integers(1, 2)))]
    order = data.draw(st.permutations(copies))
    store = FakeLedger()
    proc = UsageProcessor(store, grace_s=30, keep_closed_s=0)
    offset = 0
    while order:
        k = data.draw(st.integers(1, 3))
        proc.process([record(offset, order[:k])])
        order = order[k:]
        offset += 1
        if data.draw(st.booleans()):
            proc = UsageProcessor(store, grace_s=30, keep_closed_s=0)
    # then the ledger holds exactly the truth, per tenant, job and minute
    assert ledger(store) == truth(frames)


def test_the_future_part_of_a_shared_frame_is_parked_then_counted(monkeypatch: Any) -> None:
    # given a node ahead of the worker's clock sending one shared frame of 20 s whose last 9
    # seconds are beyond the 300 s allowance (now + 301 .. now + 309)
    now = float(M0 + 3600)
    monkeypatch.setattr("streams.processor.time.time", lambda: now)
    store = FakeLedger()
    proc = UsageProcessor(store, max_future_skew_s=300)
    sent = [frame(int(now) + 290, 20, SPLIT)]
    out = proc.process([record(0, sent)])
    # then the past part is counted and the future part parked (one rejection), not lost
    assert [r.code for r in out.rejected] == ["future_timestamp"]
    assert proc.stats.parked == 1
    assert sum(ledger(store)[0].values()) == 11 * 1000
    # when its time comes and data keeps flowing, it is counted once, with its shares
    for offset in (1, 2):
        now += 400 if offset == 1 else 60
        sent.append(frame(int(now) - 100, 1, ()))
        proc.process([record(offset, sent[-1:])])
    assert proc.stats.readmitted == 1
    assert ledger(store) == truth(sent)
    milli, _ = ledger(store)
    held = Counter()
    for (_minute, tenant, job), v in milli.items():
        held[(tenant, job)] += v
    assert held[("acme", "train")] == 20 * 600 and held[("zeta", "infer")] == 20 * 300
