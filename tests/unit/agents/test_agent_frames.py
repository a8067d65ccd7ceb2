"""The agent's contract-v2 records: each device's seconds grouped into frames, a new frame when
the allocation set changes, a second is missing or the record is sealed; decoded here from the
wire JSON by hand (not by the code under test) and compared second by second with what the
sampler said."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.agent import NodeAgent
from agents.errors import AgentError
from agents.sampler import DeviceSecond, GpuInfo, SharesNeedV2Error, v1_sample
from agents.spool import Spool
from schemas.frame import Share

T0 = 1_700_000_000
NODE = "node-7"
A = Share("acme", "infer-1", 500)
B = Share("globex", "infer-2", 250, "spot")
WHOLE = Share("initech", "train-9", 1000)


def allocations_at(ts: int) -> tuple[Share, ...]:
    """GPU-0's allocation set: A alone, then A + B from T0 + 4, then idle from T0 + 7."""
    if ts < T0 + 4:
        return (A,)
    if ts < T0 + 7:
        return (A, B)
    return ()


@dataclass
class SharedSampler:
    """GPU-0 shared (allocations_at, per-share utilization measured), GPU-1 whole; ``skip``
    seconds are missing for GPU-1 (a device the sampler could not read that second)."""

    node_id: str = NODE
    skip: set[int] = field(default_factory=set)

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo("GPU-0", "H100", 0), GpuInfo("GPU-1", "H100", 1)]

    def seconds(self, ts: int) -> list[DeviceSecond]:
        shares = allocations_at(ts)
        util = tuple(float(10 * (i + 1) + ts % 3) for i in range(len(shares)))
        out = [
            DeviceSecond(
                "GPU-0", None, "H100", ts, shares, sum(util), 5.0, 1024, 4096,
                200.0 + ts % 7, 200.0, None, ("energy_estimated",) if ts == T0 + 2 else (),
                util,
            )
        ]  # fmt: skip
        if ts not in self.skip:
            out.append(
                DeviceSecond(
                    "GPU-1", None, "H100", ts, (WHOLE,), 90.0, 50.0, 2048, 4096, 600.0, 600.0, 60.0
                )
            )
        return out

    def sample(self, ts: int) -> list[Any]:
        return [v1_sample(d) for d in self.seconds(ts)]

    def close(self) -> None:
        pass


class NoDelivery:
    def pump(self) -> None: ...

    def flush(self, timeout: float, should_stop: object = None) -> bool:
        return True

    def drained(self) -> bool:
        return True


def make_agent(directory: Path, sampler: SharedSampler, flush_every_s: int = 5) -> NodeAgent:
    spool = Spool(directory, fsync=False)
    return NodeAgent(sampler, spool, NoDelivery(), flush_every_s=flush_every_s, schema_version=2)  # type: ignore[arg-type]


def records(directory: Path) -> list[tuple[int, dict[str, Any]]]:
    spool = Spool(directory, fsync=False)
    out = [(e.n_samples, orjson.loads(data)) for e, data in spool.pending()]
    spool.close()
    return out


def per_second(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """One frame back to its seconds, checking the wire rules on the way."""
    n = len(frame["sm_util"])
    assert n >= 1
    for key in ("mem_util", "mem_used", "power_w", "energy_j"):
        assert len(frame[key]) == n, key
    if "temp_c" in frame:
        assert len(frame["temp_c"]) == n
    allocs = frame["allocations"]
    assert sum(a["share_milli"] for a in allocs) <= 1000
    assert len({(a["tenant"], a["job"]) for a in allocs}) == len(allocs)
    flags = {f["index"]: tuple(f["flags"]) for f in frame.get("flags", [])}
    out = []
    for i in range(n):
        shares = tuple(
            Share(a["tenant"], a["job"], a["share_milli"], a.get("billing_class")) for a in allocs
        )
        out.append(
            {
                "gpu": frame["gpu_uuid"],
                "ts": frame["start"] + i,
                "shares": shares,
                "share_util": tuple(a["sm_util"][i] for a in allocs if "sm_util" in a),
                "sm_util": frame["sm_util"][i],
                "power_w": frame["power_w"][i],
                "flags": flags.get(i, ()),
            }
        )
    return out


def test_frames_carry_every_second_once_with_its_shares(tmp_path: Path) -> None:
    # given an agent emitting v2, sealing every 5 s; GPU-1 misses second T0 + 2
    sampler = SharedSampler(skip={T0 + 2})
    agent = make_agent(tmp_path, sampler)
    # when it records 12 seconds and seals
    for ts in range(T0, T0 + 12):
        agent.record_second(ts)
    agent.seal(last_ts=T0 + 11)
    recs = records(tmp_path)
    # then 3 records, seq 0..2, version 2, their spool counts = device seconds carried
    assert [r["seq"] for _, r in recs] == [0, 1, 2]
    assert all(r["schema_version"] == 2 and r["node_id"] == NODE for _, r in recs)
    decoded = [s for _, r in recs for f in r["frames"] for s in per_second(f)]
    assert [n for n, _ in recs] == [sum(len(f["sm_util"]) for f in r["frames"]) for _, r in recs]
    # and every second the sampler gave is there exactly once, as the sampler said it
    expected = [d for ts in range(T0, T0 + 12) for d in sampler.seconds(ts)]
    got = {(s["gpu"], s["ts"]): s for s in decoded}
    assert len(got) == len(decoded) == len(expected)
    for d in expected:
        s = got[(d.gpu_uuid, d.ts)]
        assert s["shares"] == d.allocations
        assert s["sm_util"] == d.sm_util and s["power_w"] == d.power_w
        assert s["share_util"] == (d.share_util or ())
        assert s["flags"] == d.flags
    assert (agent.stats.batches, agent.stats.samples) == (3, 23)


def test_a_frame_breaks_at_an_allocation_change_a_missing_second_and_a_seal(
    tmp_path: Path,
) -> None:
    sampler = SharedSampler(skip={T0 + 2})
    agent = make_agent(tmp_path, sampler, flush_every_s=10)
    for ts in range(T0, T0 + 10):
        agent.record_second(ts)
    [(_, rec)] = records(tmp_path)
    spans = sorted(
        (f["gpu_uuid"], f["start"], f["start"] + len(f["sm_util"])) for f in rec["frames"]
    )
    # GPU-0: A (T0..T0+4), A+B (..T0+7), idle (..T0+10); GPU-1: split by its missing second
    assert spans == [
        ("GPU-0", T0, T0 + 4),
        ("GPU-0", T0 + 4, T0 + 7),
        ("GPU-0", T0 + 7, T0 + 10),
        ("GPU-1", T0, T0 + 2),
        ("GPU-1", T0 + 3, T0 + 10),
    ]


def test_v1_agent_refuses_a_shared_second_rather_than_bill_one_tenant(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    agent = NodeAgent(SharedSampler(), spool, NoDelivery(), schema_version=1)  # type: ignore[arg-type]
    with pytest.raises(SharesNeedV2Error, match="--schema-version 2"):
        agent.record_second(T0)  # GPU-0 holds one share of 500: not a v1 whole GPU


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="schema_version 3"):
        NodeAgent(SharedSampler(), Spool(tmp_path, fsync=False), NoDelivery(), schema_version=3)  # type: ignore[arg-type]
