"""The simulator's tokens: inference tenants' jobs report work units whose sums equal the
ground truth counted from the schedule, in windows with stable, distinct identities."""

from __future__ import annotations

from collections import Counter, defaultdict

from agents.simulator import (
    DEFAULT_TOKEN_RATES,
    SimulatedFleet,
    job_token_rate,
    simulated_work,
    token_truth,
)

RATES = {"acme": 2_400, "globex": 900}


def fleet(seed: int = 3) -> SimulatedFleet:
    return SimulatedFleet(seed=seed, nodes=3, gpus_per_node=4, duration_s=6 * 3600)


def test_work_units_add_up_to_the_token_ground_truth_per_job() -> None:
    f = fleet()
    reports = simulated_work(f, RATES)
    measured: Counter[tuple[str, str]] = Counter()
    for r in reports:
        measured[(r.tenant, r.job)] += r.quantity
    truth = token_truth(f, RATES)
    assert truth and dict(measured) == truth
    assert {t for t, _ in truth} == set(RATES)  # only inference tenants report tokens


def test_tokens_are_the_job_rate_times_its_allocated_gpu_seconds() -> None:
    # the token truth and the GPU-second truth are one schedule seen twice
    f = fleet()
    gpu_seconds = f.ground_truth().per_job()
    for (tenant, job), tokens in token_truth(f, RATES).items():
        rate = job_token_rate(RATES[tenant], job)
        assert RATES[tenant] * 75 // 100 <= rate <= RATES[tenant] * 125 // 100
        assert tokens == rate * gpu_seconds[(tenant, job)]


def test_windows_are_disjoint_and_identities_stable() -> None:
    reports = simulated_work(fleet(), RATES, window_s=300)
    assert len({r.event_id for r in reports}) == len(reports)
    spans: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for r in reports:
        assert 0 < r.window_end - r.window_start <= 300
        assert r.window_start // 300 == (r.window_end - 1) // 300  # inside one aligned window
        spans[(r.tenant, r.job, r.source)].append((r.window_start, r.window_end))
    for windows in spans.values():
        windows.sort()
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))
    # the same seed gives the same records, byte for byte: a re-run replaces, never adds
    assert [r.to_json() for r in simulated_work(fleet(), RATES, window_s=300)] == [
        r.to_json() for r in reports
    ]


def test_a_sub_range_matches_the_truth_of_that_range() -> None:
    f = fleet()
    start, end = f.start + 3600 + 17, f.start + 2 * 3600 + 45
    measured: Counter[tuple[str, str]] = Counter()
    for r in simulated_work(f, DEFAULT_TOKEN_RATES, start=start, end=end):
        assert start <= r.window_start < r.window_end <= end
        measured[(r.tenant, r.job)] += r.quantity
    assert dict(measured) == token_truth(f, DEFAULT_TOKEN_RATES, start, end)
