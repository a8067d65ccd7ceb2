"""The node agent's loop: batches sealed on sample time, stalls reported as gaps (never invented
samples), and restarts that resume after the last spooled second."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import agents.agent as agent_module
from agents.agent import STOP_GRACE_S, NodeAgent, run_accelerated, run_realtime
from agents.sampler import GpuInfo
from agents.spool import Spool
from schemas.usage import Gap, GpuSecond
from schemas.validation import parse_batch

T0 = 1_700_000_000
NODE = "node-7"


@dataclass
class FakeSampler:
    """Two GPUs: GPU-0 allocated to acme/train, GPU-1 idle. Records which seconds were asked."""

    node_id: str = NODE
    asked: list[int] = field(default_factory=list)

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo("GPU-0", "H100", 0), GpuInfo("GPU-1", "H100", 1)]

    def sample(self, ts: int) -> list[GpuSecond]:
        self.asked.append(ts)
        return [
            GpuSecond.unchecked(
                {
                    "gpu_uuid": gpu,
                    "mig_uuid": None,
                    "gpu_model": "H100",
                    "ts": ts,
                    "tenant": tenant,
                    "job": job,
                    "billing_class": None,
                    "sm_util": 50.0 if tenant else 0.0,
                    "mem_util": 10.0,
                    "mem_used": 1024,
                    "mem_total": 4096,
                    "power_w": 300.0,
                    "energy_j": 300.0,
                    "temp_c": 50.0,
                    "flags": (),
                }
            )
            for gpu, tenant, job in (("GPU-0", "acme", "train"), ("GPU-1", None, None))
        ]

    def close(self) -> None:
        pass


@dataclass
class FakeDelivery:
    """Stands in for the Kafka delivery: counts calls; ``flush`` reports everything delivered."""

    pumps: int = 0
    flushes: list[float] = field(default_factory=list)

    def pump(self) -> None:
        self.pumps += 1

    def flush(self, timeout: float, should_stop: object = None) -> bool:
        self.flushes.append(timeout)
        return True

    def drained(self) -> bool:
        return True


def make_agent(directory: Path, *, flush_every_s: int = 5) -> NodeAgent:
    # The loop (sealing on sample time, gaps, restarts) is the same for both contract versions;
    # it is observed here through v1 records (one sample per GPU-second). Framing into v2
    # records is tested in test_agent_frames.py.
    spool = Spool(directory, fsync=False)
    return NodeAgent(
        FakeSampler(), spool, FakeDelivery(), flush_every_s=flush_every_s, schema_version=1
    )  # type: ignore[arg-type]


def spooled(directory: Path) -> list[Any]:
    """Every batch in the spool directory, parsed as the worker would (asserting validity)."""
    spool = Spool(directory, fsync=False)
    out = []
    for entry, data in spool.pending():
        parsed = parse_batch(data, now=T0 + 10**6)
        assert parsed.rejections == [], parsed.rejections
        assert parsed.batch is not None and parsed.batch.seq == entry.seq
        assert entry.n_samples == len(parsed.samples)
        out.append(parsed.batch)
    spool.close()
    return out


def seconds_of(batches: list[Any], gpu: str = "GPU-0") -> list[int]:
    return [s.ts for b in batches for s in b.samples if s.gpu_uuid == gpu]


# -- batching ------------------------------------------------------------------------------------


def test_batches_are_sealed_every_flush_interval_of_sample_time(tmp_path: Path) -> None:
    # given an agent that flushes every 5 sample-seconds
    agent = make_agent(tmp_path, flush_every_s=5)
    # when it records 12 consecutive seconds
    for ts in range(T0, T0 + 12):
        agent.record_second(ts)
    # then two full batches are spooled (seq 0, 1), the last 2 seconds are still open
    batches = spooled(tmp_path)
    assert [b.seq for b in batches] == [0, 1]
    assert [sorted({s.ts for s in b.samples}) for b in batches] == [
        list(range(T0, T0 + 5)),
        list(range(T0 + 5, T0 + 10)),
    ]
    assert all(len(b.samples) == 10 for b in batches)  # 2 GPUs x 5 s
    assert all(b.node_id == NODE and b.agent_id == agent.spool.agent_id for b in batches)
    # when the agent seals on shutdown
    agent.seal(last_ts=T0 + 11)
    # then the open seconds form seq 2, and every second was spooled exactly once per GPU
    batches = spooled(tmp_path)
    assert [b.seq for b in batches] == [0, 1, 2]
    assert seconds_of(batches, "GPU-0") == list(range(T0, T0 + 12))
    assert seconds_of(batches, "GPU-1") == list(range(T0, T0 + 12))
    assert (agent.stats.batches, agent.stats.samples) == (3, 24)
    assert agent.spool.last_ts == T0 + 11


def test_sealing_with_nothing_open_writes_no_batch(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent.seal(last_ts=T0)
    assert agent.spool.next_seq == 0 and spooled(tmp_path) == []


def test_the_batch_payload_round_trips_the_sampler_output(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, flush_every_s=1)
    agent.record_second(T0)
    [batch] = spooled(tmp_path)
    assert list(batch.samples) == FakeSampler().sample(T0)


# -- real time: stalls and restarts --------------------------------------------------------------


class FakeClock:
    """Replaces the ``time`` module inside agents.agent. ``sleep`` ignores the requested
    duration and wakes at the next scripted instant, which is how a stall looks from inside the
    process; the script ending means stop."""

    def __init__(self, start: float, wakes: list[float]) -> None:
        self.now = start
        self.wakes = list(wakes)
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now = self.wakes.pop(0)

    def done(self) -> bool:
        return not self.wakes


def run_with_clock(monkeypatch: pytest.MonkeyPatch, agent: NodeAgent, clock: FakeClock) -> None:
    monkeypatch.setattr(agent_module, "time", clock)
    run_realtime(agent, should_stop=clock.done)
    agent.spool.close()


def test_a_stall_is_reported_as_a_gap_and_its_seconds_are_never_invented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an agent started at T0+0.5 whose process wakes at T0+1, +2, +3 and then, after a
    # stall, only at T0+8 (so the seconds T0+3 .. T0+6 were never sampled)
    agent = make_agent(tmp_path, flush_every_s=60)
    clock = FakeClock(T0 + 0.5, [T0 + 1.0, T0 + 2.0, T0 + 3.0, T0 + 8.0])
    # when it runs in real time until the script ends
    run_with_clock(monkeypatch, agent, clock)
    # then samples exist for T0..T0+2 and T0+7 only, for every GPU
    batches = spooled(tmp_path)
    expected = [T0, T0 + 1, T0 + 2, T0 + 7]
    assert seconds_of(batches, "GPU-0") == expected
    assert seconds_of(batches, "GPU-1") == expected
    assert agent.sampler.asked == expected  # type: ignore[attr-defined]
    # and the missed seconds are one gap [T0+3, T0+7) with the reason
    gaps = [g for b in batches for g in b.gaps]
    assert gaps == [Gap(start=T0 + 3, end=T0 + 7, reason="agent_stalled")]
    assert agent.stats.gap_seconds == 4
    # and the agent slept to the next second boundary each time, and flushed on the way out
    assert clock.slept[0] == pytest.approx(0.5)
    assert agent.delivery.flushes == [STOP_GRACE_S]  # type: ignore[attr-defined]


def test_a_clock_going_backwards_never_samples_a_second_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a host clock stepped back by two seconds after T0+2 was sampled
    agent = make_agent(tmp_path, flush_every_s=60)
    clock = FakeClock(
        T0 + 0.5, [T0 + 1.0, T0 + 2.0, T0 + 3.0, T0 + 1.0, T0 + 2.0, T0 + 3.0, T0 + 4.0]
    )
    run_with_clock(monkeypatch, agent, clock)
    # then each second was sampled once, and nothing was reported missing
    batches = spooled(tmp_path)
    assert seconds_of(batches) == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert [g for b in batches for g in b.gaps] == []


@pytest.mark.parametrize("down_s", [1, 2, 5], ids=["1s", "2s", "5s"])
def test_a_realtime_restart_reports_the_downtime_as_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, down_s: int
) -> None:
    # given a spool whose last second is T0-1-down_s, and a process starting during second T0,
    # so the seconds T0-down_s .. T0-1 were never sampled (the agent was down)
    previous = make_agent(tmp_path, flush_every_s=1)
    previous.record_second(T0 - 1 - down_s)
    previous.spool.close()
    agent = make_agent(tmp_path, flush_every_s=60)
    clock = FakeClock(T0 + 0.5, [T0 + 1.0, T0 + 2.0])
    # when it runs
    run_with_clock(monkeypatch, agent, clock)
    # then it samples from T0 on, and every second in between is in exactly one restart gap
    batches = spooled(tmp_path)
    assert seconds_of(batches) == [T0 - 1 - down_s, T0, T0 + 1]
    gaps = [g for b in batches for g in b.gaps]
    assert gaps == [Gap(start=T0 - down_s, end=T0, reason="agent_restarted")]
    covered = Counter(seconds_of(batches)) + Counter(t for g in gaps for t in range(g.start, g.end))
    assert covered == Counter(range(T0 - 1 - down_s, T0 + 2))


def test_a_realtime_restart_within_the_same_second_reports_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = make_agent(tmp_path, flush_every_s=1)
    previous.record_second(T0 - 1)
    previous.spool.close()
    agent = make_agent(tmp_path, flush_every_s=60)
    run_with_clock(monkeypatch, agent, FakeClock(T0 + 0.5, [T0 + 1.0]))
    batches = spooled(tmp_path)
    assert seconds_of(batches) == [T0 - 1, T0]
    assert [g for b in batches for g in b.gaps] == []


# -- accelerated time: resume after restart ------------------------------------------------------


def test_run_accelerated_resumes_after_the_last_spooled_second(tmp_path: Path) -> None:
    # given a first run over [T0, T0+25) that spooled everything
    first = make_agent(tmp_path, flush_every_s=10)
    assert run_accelerated([first], T0, T0 + 25) is True
    first.spool.close()
    assert first.sampler.asked == list(range(T0, T0 + 25))  # type: ignore[attr-defined]
    # when a restarted agent runs over [T0, T0+40) on the same spool
    second = make_agent(tmp_path, flush_every_s=10)
    assert second.resume_after() == T0 + 24
    assert run_accelerated([second], T0, T0 + 40) is True
    second.spool.close()
    # then it samples only the seconds not spooled before, and the spool holds every second once
    assert second.sampler.asked == list(range(T0 + 25, T0 + 40))  # type: ignore[attr-defined]
    batches = spooled(tmp_path)
    assert seconds_of(batches, "GPU-0") == list(range(T0, T0 + 40))
    assert seconds_of(batches, "GPU-1") == list(range(T0, T0 + 40))
    assert [b.seq for b in batches] == list(range(len(batches)))
    assert second.delivery.flushes  # type: ignore[attr-defined]


def test_run_accelerated_stopped_early_resumes_where_it_stopped(tmp_path: Path) -> None:
    # given a run over [T0, T0+30) asked to stop after 12 seconds (operator pressed Ctrl-C)
    first = make_agent(tmp_path, flush_every_s=10)
    calls = iter(range(10**6))
    run_accelerated([first], T0, T0 + 30, should_stop=lambda: next(calls) >= 12)
    first.spool.close()
    assert first.sampler.asked == list(range(T0, T0 + 12))  # type: ignore[attr-defined]
    # when restarted over the same window
    second = make_agent(tmp_path, flush_every_s=10)
    run_accelerated([second], T0, T0 + 30)
    second.spool.close()
    # then the seconds the first run never sampled are sampled now: none is lost
    assert seconds_of(spooled(tmp_path)) == list(range(T0, T0 + 30))
