"""Exact per-minute aggregation: any delivery history of a set of samples gives the minute rows of
that set, computed here independently; minutes close on event time; late samples correct their
own minute; state reloaded from the ledger after a restart merges exactly.

The aggregator counts frames (contract v2); these tests feed it v1 samples through the worker's
own translation (``frames_from_samples``: a tenant's sample is a whole-GPU share, an idle one
an idle device), so every chunk is a mix of one-second and multi-second frames. Shared GPUs
are tested in ``test_shared_gpus.py``."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.usage import GpuSecond
from streams.aggregate import MinuteRow
from tests.unit.streams.v1_samples import (
    ALLOCATIONS,
    GPUS,
    IDLE,
    M0,
    Aggregator,
    RowKey,
    key_of,
    make_sample,
)


def truth(samples: list[GpuSecond]) -> dict[RowKey, dict[str, Any]]:
    """The minute rows of a set of samples, counted directly: one entry per distinct
    (gpu, mig, ts), grouped by (minute, gpu, mig, tenant, job). Written without the aggregator's
    masks so the two can disagree."""
    distinct: dict[tuple[str, str, int], GpuSecond] = {}
    for s in samples:
        distinct.setdefault((s.gpu_uuid, s.mig_uuid or "", s.ts), s)
    groups: dict[RowKey, list[GpuSecond]] = defaultdict(list)
    for (gpu, mig, ts), s in distinct.items():
        tenant, job = (s.tenant, s.job) if s.tenant is not None else IDLE
        groups[(ts // 60 * 60, gpu, mig, tenant, job)].append(s)  # type: ignore[index]
    out = {}
    for key, group in groups.items():
        secs = sorted(s.ts - key[0] for s in group)
        out[key] = {
            "seconds": secs,
            "active": sorted(s.ts - key[0] for s in group if s.sm_util > 0),
            "gpu_seconds": len(group),
            "sm_util_sum": sum(s.sm_util for s in group),
            "mem_util_sum": sum(s.mem_util for s in group),
            "energy_mj": sum(round(s.energy_j * 1000) for s in group),
            "peak_mem_used": max(s.mem_used for s in group),
            "billing_class": group[0].billing_class or "",
        }
    return out


def view(row: MinuteRow) -> dict[str, Any]:
    """A row in the same terms as :func:`truth` (decoding the masks bit by bit)."""
    return {
        "seconds": [i for i in range(60) if row.seconds_mask >> i & 1],
        "active": [i for i in range(60) if row.active_mask >> i & 1],
        "gpu_seconds": row.gpu_seconds,
        "sm_util_sum": row.sm_util_sum,
        "mem_util_sum": row.mem_util_sum,
        "energy_mj": row.energy_mj,
        "peak_mem_used": row.peak_mem_used,
        "billing_class": row.billing_class,
    }


def collect(rows: list[MinuteRow], into: dict[RowKey, dict[str, Any]]) -> None:
    """Keep the last state emitted per key, snapshotting (rows are live objects)."""
    for r in rows:
        assert r.seconds_mask >> 60 == 0 and r.active_mask & ~r.seconds_mask == 0
        into[key_of(r)] = view(r)


# Values that add exactly in floating point in any order (multiples of 1/4 below 2**40), so the
# sums may be compared for equality whatever the delivery order.
quarters = st.integers(0, 400).map(lambda q: q / 4)


@st.composite
def sample_sets(draw: st.DrawFn) -> list[GpuSecond]:
    """Distinct samples over 3 GPUs/slices and 4 minutes, with allocations changing second by
    second (including idle) and zero and non-zero utilization."""
    idents = draw(
        st.sets(
            st.tuples(st.integers(0, len(GPUS) - 1), st.integers(0, 4 * 60 - 1)),
            min_size=1,
            max_size=80,
        )
    )
    out = []
    for gi, off in sorted(idents):
        gpu, mig = GPUS[gi]
        alloc = draw(st.sampled_from(ALLOCATIONS))
        out.append(
            make_sample(
                gpu,
                mig,
                M0 + off,
                alloc,
                sm_util=draw(quarters.filter(lambda x: x <= 100) | st.just(0.0)),
                mem_util=draw(quarters.filter(lambda x: x <= 100)),
                energy_j=draw(st.floats(0, 2000, allow_nan=False).map(lambda e: round(e, 4))),
                mem_used=draw(st.integers(0, 10**6)),
            )
        )
    return out


@st.composite
def deliveries(draw: st.DrawFn, samples: list[GpuSecond]) -> list[list[GpuSecond]]:
    """Every sample at least once, some many times, shuffled, cut into chunks."""
    copies = [s for s in samples for _ in range(draw(st.integers(1, 4)))]
    shuffled = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(shuffled) - 1)), max_size=8)))
    bounds = [0, *[c for c in cuts if c < len(shuffled)], len(shuffled)]
    return [shuffled[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def aggregate(chunks: list[list[GpuSecond]]) -> dict[RowKey, dict[str, Any]]:
    agg = Aggregator(grace_s=120)
    rows: dict[RowKey, dict[str, Any]] = {}
    for chunk in chunks:
        agg.add("node-1", chunk)
        collect(agg.take_dirty(), rows)
    return rows


@settings(max_examples=200, deadline=None)
@given(data=st.data(), samples=sample_sets())
def test_any_delivery_history_gives_the_rows_of_the_distinct_samples(
    data: st.DataObject, samples: list[GpuSecond]
) -> None:
    # given a set of distinct samples, and a delivery of it with duplicates, reordering, chunks
    chunks = data.draw(deliveries(samples))
    # when one aggregator counts the delivery, and another counts the distinct set once
    delivered = aggregate(chunks)
    once = aggregate([samples])
    # then both give the same rows, equal to the rows counted directly from the set
    expected = truth(samples)
    assert delivered == once == expected
    assert sum(r["gpu_seconds"] for r in delivered.values()) == len(samples)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), samples=sample_sets())
def test_add_reports_new_and_duplicate_seconds_exactly(
    data: st.DataObject, samples: list[GpuSecond]
) -> None:
    chunks = data.draw(deliveries(samples))
    agg = Aggregator()
    new = dup = 0
    for chunk in chunks:
        result = agg.add("node-1", chunk)
        new += result.new_seconds
        dup += result.duplicates
        assert sum(span.mask.bit_count() for span in result.fresh) == result.new_seconds
    assert new == len(samples)
    assert dup == sum(len(c) for c in chunks) - len(samples)


def test_idle_seconds_go_to_the_idle_tenant() -> None:
    # given a GPU idle for 3 seconds and allocated for 2 in one minute
    samples = [make_sample("GPU-A", None, M0 + i, None, sm_util=0.0) for i in range(3)]
    samples += [make_sample("GPU-A", None, M0 + i, ("acme", "train")) for i in (3, 4)]
    agg = Aggregator()
    agg.add("node-1", samples)
    rows = {(r.tenant, r.job): r for r in agg.take_dirty()}
    # then the idle seconds are a row of their own, never dropped
    assert set(rows) == {("__idle__", ""), ("acme", "train")}
    assert rows[("__idle__", "")].seconds_mask == 0b00111
    assert rows[("__idle__", "")].billing_class == ""
    assert rows[("acme", "train")].seconds_mask == 0b11000
    assert rows[("acme", "train")].billing_class == "on_demand"


def test_mig_none_and_empty_are_the_same_gpu_second() -> None:
    agg = Aggregator()
    r1 = agg.add("node-1", [make_sample("GPU-A", None, M0, ("acme", "train"))])
    r2 = agg.add("node-1", [make_sample("GPU-A", "", M0, ("acme", "train"))])
    assert (r1.new_seconds, r2.new_seconds, r2.duplicates) == (1, 0, 1)


# -- closing windows -----------------------------------------------------------------------------


def test_a_minute_closes_only_after_the_watermark_passes_its_end_plus_grace() -> None:
    # given minute M0 fully sampled on node-1, grace 120 s
    agg = Aggregator(grace_s=120)
    agg.add("node-1", [make_sample("GPU-A", None, M0 + i, ("acme", "train")) for i in range(60)])
    agg.take_dirty()
    assert agg.close_ready() == []
    # when node-1 reaches M0+179 (one second short of minute end + grace)
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 179, ("acme", "train"))])
    # then nothing closes
    assert agg.close_ready() == []
    # and progress on another node does not close node-1's minute
    agg.add("node-2", [make_sample("GPU-Z", None, M0 + 10_000, None)])
    assert [r.minute for r in agg.close_ready() if r.node_id == "node-1"] == []
    # when node-1 reaches M0+180
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 180, ("acme", "train"))])
    # then minute M0 is emitted closed, once, with its 60 seconds
    closed = [r for r in agg.close_ready() if r.node_id == "node-1"]
    assert [(r.minute, r.gpu_seconds) for r in closed] == [(M0, 60)]
    assert [r for r in agg.close_ready() if r.node_id == "node-1"] == []


def test_a_late_sample_is_counted_in_its_own_minute_and_re_emitted_as_a_correction() -> None:
    # given minute M0 closed with seconds 0..29 for acme/train (second 30 never arrived)
    agg = Aggregator(grace_s=120)
    agg.add("node-1", [make_sample("GPU-A", None, M0 + i, ("acme", "train")) for i in range(30)])
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 300, None)])
    agg.take_dirty()
    [first] = [r for r in agg.close_ready() if r.minute == M0]
    first_version, first_energy = first.version, first.energy_mj
    assert first_version == 1  # written once
    # when second 30 of minute M0 arrives late
    result = agg.add(
        "node-1", [make_sample("GPU-A", None, M0 + 30, ("acme", "train"), energy_j=1.5)]
    )
    # then it is counted (as late) in minute M0, not in the current minute
    assert (result.new_seconds, result.late) == (1, 1)
    [dirty] = agg.take_dirty()
    assert (dirty.minute, dirty.gpu_seconds) == (M0, 31)
    # and minute M0 is emitted again with a higher version and the full state
    [correction] = agg.close_ready()
    assert (correction.minute, correction.tenant, correction.job) == (M0, "acme", "train")
    assert correction.version == 2 > first_version
    assert correction.seconds_mask == (1 << 31) - 1
    assert correction.energy_mj == first_energy + 1500
    # and only once
    assert agg.close_ready() == []


def test_a_duplicate_of_a_closed_minute_adds_nothing_and_emits_nothing() -> None:
    agg = Aggregator(grace_s=120)
    samples = [make_sample("GPU-A", None, M0 + i, ("acme", "train")) for i in range(60)]
    agg.add("node-1", samples)
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 240, None)])
    agg.take_dirty()
    assert any(r.minute == M0 for r in agg.close_ready())
    # when a replay redelivers the closed minute's samples
    result = agg.add("node-1", samples[10:20])
    # then nothing is counted, nothing is dirty, nothing is re-emitted
    assert (result.new_seconds, result.duplicates, result.late) == (0, 10, 0)
    assert agg.take_dirty() == []
    assert agg.close_ready() == []


# -- restart: state from the ledger --------------------------------------------------------------


def stored(rows: list[MinuteRow]) -> list[MinuteRow]:
    """Rows as a store gives them back: fresh objects, not the aggregator's own."""
    return [dataclasses.replace(r, readings=dict(r.readings)) for r in rows]


def test_preloaded_state_makes_replays_add_nothing_and_merges_new_seconds_exactly() -> None:
    # given a first worker that counted seconds 0..29 of minute M0 (acme/train, idle mixed in)
    rng = random.Random(7)

    def alloc(i: int) -> tuple[str, str] | None:
        return None if i % 7 == 3 else ("acme", "train") if i < 45 else ("zeta", "train")

    samples = [
        make_sample(
            "GPU-A",
            None,
            M0 + i,
            alloc(i),
            sm_util=float(rng.choice([0, 25, 50])),
            energy_j=round(rng.uniform(100, 700), 3),
            mem_used=rng.randint(0, 10**6),
        )
        for i in range(60)
    ]
    first = Aggregator()
    first.add("node-1", samples[:30])
    ledger = stored(first.take_dirty())
    # when a restarted worker loads the ledger for the minutes it is about to touch
    second = Aggregator()
    replay_and_new = samples[:30] + samples[30:]
    rng.shuffle(replay_and_new)
    keys = second.missing(replay_and_new)
    assert keys == {("GPU-A", M0)}
    second.preload(keys, [r for r in ledger if (r.gpu_uuid, r.minute) in keys])
    # and counts a redelivery of seconds 0..29 together with the new seconds 30..59
    result = second.add("node-1", replay_and_new)
    # then the replayed seconds add nothing, the new ones are counted once
    assert (result.new_seconds, result.duplicates) == (30, 30)
    # and the rows it emits are the exact rows of all 60 seconds (masks and sums)
    rows: dict[RowKey, dict[str, Any]] = {}
    collect(stored(ledger), rows)
    collect(second.take_dirty(), rows)
    assert rows == truth(samples)


def test_preloading_a_minute_the_ledger_never_saw_counts_from_zero() -> None:
    agg = Aggregator()
    agg.preload([("GPU-A", M0)], [])
    result = agg.add("node-1", [make_sample("GPU-A", None, M0 + 5, ("acme", "train"))])
    assert result.new_seconds == 1
    [row] = agg.take_dirty()
    assert row.seconds_mask == 1 << 5


def test_evict_closed_drops_only_closed_minutes_far_behind_the_watermark() -> None:
    # given minutes M0 and M0+60 on node-1 (grace 120), and node-1 at M0+660
    agg = Aggregator(grace_s=120)
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 1, None)])
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 61, None)])
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 660, None)])
    agg.take_dirty()
    agg.close_ready()  # M0 and M0+60 close (660 >= 60+120 and 120+120)
    assert len(agg) == 3
    # when eviction keeps 600 s behind close: M0 is evictable from M0+780, M0+60 from M0+840
    assert agg.evict_closed(keep_s=600) == 0
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 780, None)])
    agg.take_dirty()
    agg.close_ready()
    # then only M0 is dropped; the open minutes and M0+60 stay
    assert agg.evict_closed(keep_s=600) == 1
    assert agg.missing([make_sample("GPU-A", None, M0 + 2, None)]) == {("GPU-A", M0)}
    assert agg.missing([make_sample("GPU-A", None, M0 + 62, None)]) == set()
    assert agg.missing([make_sample("GPU-A", None, M0 + 661, None)]) == set()
    assert len(agg) == 3  # M0+60, M0+660's minute, M0+780's minute


def test_an_open_minute_is_never_evicted_however_far_the_watermark() -> None:
    # given a minute that never closed because close_ready was not called
    agg = Aggregator(grace_s=0)
    agg.add("node-1", [make_sample("GPU-A", None, M0, None)])
    agg.add("node-1", [make_sample("GPU-A", None, M0 + 100_000, None)])
    agg.take_dirty()
    assert agg.evict_closed(keep_s=0) == 0
    assert len(agg) == 2
