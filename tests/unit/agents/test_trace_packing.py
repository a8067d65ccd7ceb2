"""Trace packing on synthetic instances: runs everywhere, with or without ../shared/data."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from agents.trace import TraceInstance, pack

intervals = st.lists(st.tuples(st.integers(0, 500), st.integers(1, 200)), min_size=1, max_size=60)


def instances(spans: list[tuple[int, int]]) -> list[TraceInstance]:
    return [
        TraceInstance(i, f"inst_{i}", f"app_{i % 5}", s, s + d) for i, (s, d) in enumerate(spans)
    ]


def peak_concurrency(items: list[TraceInstance]) -> int:
    events = sorted([(i.start, 1) for i in items] + [(i.end, -1) for i in items])
    level = peak = 0
    for _, delta in events:  # ends sort before starts at the same second: [start, end)
        level += delta
        peak = max(peak, level)
    return peak


@given(intervals, st.one_of(st.none(), st.integers(1, 10)))
@example([(0, 10), (10, 5), (15, 5)], None)  # back to back: one GPU serves all three
def test_no_gpu_holds_two_instances_at_once_and_the_cap_only_drops(spans, cap) -> None:
    items = instances(spans)
    per_gpu, dropped = pack(items, cap)
    placed = [i for gpu in per_gpu for i in gpu]
    # every instance is placed once or counted as dropped
    assert len(placed) + dropped == len(items)
    assert len({i.row for i in placed}) == len(placed)
    # a GPU never holds overlapping instances
    for gpu in per_gpu:
        ordered = sorted(gpu, key=lambda i: i.start)
        assert all(a.end <= b.start for a, b in zip(ordered, ordered[1:], strict=False))
    # uncapped, it uses exactly as many GPUs as the busiest moment needs and drops nothing
    if cap is None:
        assert dropped == 0 and len(per_gpu) == peak_concurrency(items)
    else:
        assert len(per_gpu) <= cap
    # deterministic
    assert pack(list(reversed(items)), cap) == (per_gpu, dropped)
