"""Conflicting claims of one GPU-second: whatever the arrival order, chunking, redelivery or
restarts, the ledger holds the winner that the documented rule picks (a MIG slice beats its
parent, an allocation beats idle, the smaller (tenant, job) beats the larger), the winner's
readings, and every losing claim is recorded. Ground truth is computed here from the rule's
statement, without the aggregator."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.usage import GpuSecond
from streams.aggregate import MinuteRow
from tests.unit.streams.v1_samples import IDLE, M0, Aggregator, key_of, make_sample

# Parent GPU-A with slices MIG-1 and MIG-2; GPU-C has no slices.
DEVICES = [("GPU-A", None), ("GPU-A", "MIG-1"), ("GPU-A", "MIG-2"), ("GPU-C", None)]
CLAIMS: list[tuple[str, str] | None] = [("acme", "train"), ("acme", "eval"), ("zeta", "a"), None]

Identity = tuple[str, str, int]


def alloc_of(s: GpuSecond) -> tuple[str, str]:
    return (s.tenant, s.job) if s.tenant is not None else IDLE  # type: ignore[return-value]


def rule_rank(alloc: tuple[str, str]) -> tuple[int, str, str]:
    # Written from the documented rule: allocated before idle, then (tenant, job) ascending.
    return (1, "", "") if alloc == IDLE else (0, *alloc)


def expected(claims: list[GpuSecond]) -> tuple[dict[Any, dict[str, Any]], set[Any]]:
    """Rows (without peak memory) and the set of losing claims, by the rule."""
    by_identity: dict[Identity, list[GpuSecond]] = defaultdict(list)
    for s in claims:
        by_identity[(s.gpu_uuid, s.mig_uuid or "", s.ts)].append(s)
    sliced = {(gpu, ts) for gpu, mig, ts in by_identity if mig}
    winners: list[GpuSecond] = []
    losers = set()
    for (gpu, mig, ts), group in by_identity.items():
        if not mig and (gpu, ts) in sliced:
            losers |= {(gpu, mig, ts, alloc_of(s)) for s in group}
            continue
        best = min(group, key=lambda s: rule_rank(alloc_of(s)))
        winners.append(best)
        losers |= {(gpu, mig, ts, alloc_of(s)) for s in group if s is not best}
    rows: dict[Any, dict[str, Any]] = {}
    for s in winners:
        minute = s.ts - s.ts % 60
        r = rows.setdefault(
            (minute, s.gpu_uuid, s.mig_uuid or "", *alloc_of(s)),
            {"seconds": [], "sm": 0.0, "mem": 0.0, "energy": 0},
        )
        r["seconds"].append(s.ts - minute)
        r["sm"] += s.sm_util
        r["mem"] += s.mem_util
        r["energy"] += round(s.energy_j * 1000)
    for r in rows.values():
        r["seconds"].sort()
    return rows, losers


def observed(ledger: dict[Any, MinuteRow]) -> dict[Any, dict[str, Any]]:
    return {
        k: {
            "seconds": [i for i in range(60) if r.seconds_mask >> i & 1],
            "sm": r.sm_util_sum,
            "mem": r.mem_util_sum,
            "energy": r.energy_mj,
        }
        for k, r in ledger.items()
        # a row emptied by displacement stays in the ledger; it must then hold nothing at all
        if r.seconds_mask or r.sm_util_sum or r.mem_util_sum or r.energy_mj
    }


@st.composite
def claim_sets(draw: st.DrawFn) -> list[GpuSecond]:
    """Distinct claims: several per GPU-second, each (identity, allocation) once, readings in
    quarters so float sums are exact in any order."""
    keys = draw(
        st.sets(
            st.tuples(
                st.integers(0, len(DEVICES) - 1), st.integers(0, 3), st.integers(0, len(CLAIMS) - 1)
            ),
            min_size=1,
            max_size=40,
        )
    )
    out = []
    for di, off, ci in sorted(keys):
        gpu, mig = DEVICES[di]
        out.append(
            make_sample(
                gpu,
                mig,
                M0 + 58 + off,
                CLAIMS[ci],  # spans a minute boundary
                sm_util=draw(st.integers(0, 400)) / 4,
                mem_util=draw(st.integers(0, 400)) / 4,
                energy_j=draw(st.integers(0, 4000)) / 4,
            )
        )
    return out


def run(chunks: list[list[GpuSecond]], restarts: set[int]) -> tuple[dict[Any, MinuteRow], set[Any]]:
    """The processor's commit path in miniature, over a ledger and an archive in memory."""
    ledger: dict[Any, MinuteRow] = {}
    losers = set()
    agg = Aggregator()
    for i, chunk in enumerate(chunks):
        if i in restarts:
            agg = Aggregator()
        keys = agg.missing(chunk)
        agg.preload(
            keys,
            [
                dataclasses.replace(r, readings=dict(r.readings))
                for r in ledger.values()
                if (r.gpu_uuid, r.minute) in keys
            ],
        )
        agg.add("node-1", chunk)
        for row in agg.take_dirty():  # the ledger merges by union
            old = ledger.get(key_of(row))
            if old is None:
                ledger[key_of(row)] = dataclasses.replace(row, readings=dict(row.readings))
            else:
                old.merge(row)
        losers |= {(c.gpu_uuid, c.loser_mig_uuid, c.ts, c.loser) for c in agg.take_conflicts()}
    return ledger, losers


@settings(max_examples=300, deadline=None)
@given(data=st.data(), claims=claim_sets())
def test_any_order_chunking_replay_or_restart_gives_the_rules_winner(
    data: st.DataObject, claims: list[GpuSecond]
) -> None:
    # given distinct claims, some conflicting, delivered with duplicates in any order and cut
    # into chunks, with worker restarts (state reloaded from the ledger) between some chunks
    copies = [s for s in claims for _ in range(data.draw(st.integers(1, 3)))]
    shuffled = data.draw(st.permutations(copies))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(shuffled) - 1)), max_size=6)))
    bounds = [0, *[c for c in cuts if c < len(shuffled)], len(shuffled)]
    chunks = [shuffled[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    restarts = data.draw(st.sets(st.integers(1, max(1, len(chunks) - 1))))
    # when the chunks are counted
    ledger, losers = run(chunks, restarts)
    # then the ledger holds exactly the rule's winners with their readings
    rows, expected_losers = expected(claims)
    assert observed(ledger) == rows
    # and every losing claim was recorded as a conflict
    assert losers == expected_losers


def test_an_idle_sample_first_never_makes_a_tenants_second_unbillable() -> None:
    # given an idle claim counted and written, then the tenant's claim for the same second
    agg = Aggregator()
    agg.add("node-1", [make_sample("GPU-C", None, M0 + 5, None, energy_j=10.0)])
    agg.take_dirty()
    result = agg.add(
        "node-1", [make_sample("GPU-C", None, M0 + 5, ("acme", "train"), energy_j=20.0)]
    )
    # then the second moves to the tenant, with its own readings, and the idle row is emptied
    rows = {(r.tenant, r.job): r for r in agg.take_dirty()}
    assert result.conflicts == 1
    assert rows[("acme", "train")].seconds_mask == 1 << 5
    assert rows[("acme", "train")].energy_mj == 20_000
    assert rows[IDLE].seconds_mask == 0 and rows[IDLE].energy_mj == 0
    assert rows[IDLE].released_mask == 1 << 5  # written again: the ledger learns the release
    [conflict] = agg.take_conflicts()
    assert (conflict.kind, conflict.winner, conflict.loser) == ("idle", ("acme", "train"), IDLE)


def test_a_mig_slice_and_its_parent_never_both_count_a_second() -> None:
    # given a parent GPU's sample and its slice's sample for the same second, in both orders
    for order in (0, 1):
        parent = make_sample("GPU-A", None, M0 + 1, ("acme", "train"))
        part = make_sample("GPU-A", "MIG-1", M0 + 1, ("zeta", "a"))
        agg = Aggregator()
        for s in [parent, part] if order == 0 else [part, parent]:
            agg.add("node-1", [s])
        rows = [r for r in agg.take_dirty() if r.seconds_mask]
        # then the slice holds the second and the parent's claim is a recorded conflict
        assert [(r.mig_uuid, r.tenant) for r in rows] == [("MIG-1", "zeta")]
        assert [c.kind for c in agg.take_conflicts()] == ["mig_parent"]


def test_a_second_reloaded_from_the_ledger_is_released_by_a_winning_claim() -> None:
    # given zeta's claim counted by a worker that then restarted
    first = Aggregator()
    first.add("node-1", [make_sample("GPU-C", None, M0 + 7, ("zeta", "a"), energy_j=5.0)])
    stored = [dataclasses.replace(r, readings=dict(r.readings)) for r in first.take_dirty()]
    second = Aggregator()
    second.preload(second.missing([make_sample("GPU-C", None, M0, None)]), stored)
    # when acme's (winning) claim for that second arrives
    second.add("node-1", [make_sample("GPU-C", None, M0 + 7, ("acme", "train"), energy_j=9.0)])
    # then zeta's row releases the second (its readings no longer count) and acme holds it
    rows = {r.tenant: r for r in second.take_dirty()}
    assert (rows["zeta"].seconds_mask, rows["zeta"].energy_mj) == (0, 0)
    assert rows["zeta"].released_mask == 1 << 7
    assert (rows["acme"].seconds_mask, rows["acme"].energy_mj) == (1 << 7, 9000)
