"""Every contract-v2 record the agent writes is accepted by the worker's validator
(``schemas.validation.parse_record``), whatever NVML answers, and the framer keeps every
device second exactly once, in frames that are as long as the rules allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.agent import NodeAgent
from agents.attribution import Attributor, write_allocation_file
from agents.framer import Framer
from agents.nvml import NvmlSampler
from agents.sampler import DeviceSecond
from agents.spool import Spool
from schemas.frame import Share
from schemas.validation import parse_record
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.pynvml import FakeGpu, FakeNvml

TS = 1_718_000_000
FUNCTIONS = [
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetTemperature",
]
failure = st.sampled_from([None, fake_pynvml.NVMLError_Unknown, fake_pynvml.NVMLError_NotSupported])


class NoDelivery:
    def pump(self) -> None: ...

    def flush(self, timeout: float, should_stop: object = None) -> bool:
        return True

    def drained(self) -> bool:
        return True


@st.composite
def scripted(draw: st.DrawFn) -> tuple[list[FakeGpu], list[dict[str, Any]]]:
    gpus = []
    for i in range(draw(st.integers(1, 3))):
        total = draw(st.integers(0, 200 * 1024**3))
        g = FakeGpu(
            uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
            sm_util=draw(st.one_of(st.none(), st.integers(0, 100))),
            mem_total=total,
            mem_used=draw(st.integers(0, total)),
            power_mw=draw(st.one_of(st.none(), st.integers(0, 3_000_000))),
            temp_c=draw(st.one_of(st.none(), st.integers(-50, 200))),
            lost=draw(st.booleans()),
        )
        g.failures = {fn: f for fn in FUNCTIONS if (f := draw(failure)) is not None}
        gpus.append(g)
    shares = draw(st.lists(st.sampled_from([100, 250, 500, 1000]), max_size=3))
    entries, used = [], 0
    for j, milli in enumerate(shares):
        if used + milli <= 1000:
            used += milli
            entries.append(
                {"gpu_uuid": gpus[0].uuid, "tenant": f"t{j}", "job": f"j{j}", "share_milli": milli}
            )
    return gpus, entries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripted(), seconds=st.integers(1, 25), flush=st.integers(1, 10))
def test_nvml_frames_are_accepted_by_the_worker(
    tmp_path_factory: Any,
    script: tuple[list[FakeGpu], list[dict[str, Any]]],
    seconds: int,
    flush: int,
) -> None:
    tmp: Path = tmp_path_factory.mktemp("frames")
    gpus, entries = script
    alloc = tmp / "alloc.json"
    write_allocation_file(alloc, entries)
    fake = FakeNvml(gpus)
    sampler = NvmlSampler("node-1", Attributor(alloc, proc_root=tmp / "proc"), nvml=fake)
    spool = Spool(tmp / "spool", fsync=False)
    agent = NodeAgent(sampler, spool, NoDelivery(), flush_every_s=flush)  # type: ignore[arg-type]
    for t in range(seconds):
        agent.record_second(TS + t)
        fake.advance(1)
    agent.seal(last_ts=TS + seconds - 1)
    carried = 0
    for entry, raw in spool.pending():
        parsed = parse_record(raw, now=TS + 10**6)
        assert parsed.rejections == [], parsed.rejections
        assert parsed.schema_version == 2 and parsed.seq == entry.seq
        carried += parsed.seconds
        assert entry.n_samples == parsed.seconds
    spool.close()
    assert carried == seconds * len(sampler.gpus())  # a GPU lost at start has no identity


allocation_sets = st.sampled_from(
    [(), (Share("a", "1", 1000),), (Share("a", "1", 500), Share("b", "2", 250))]
)


@given(
    steps=st.lists(
        st.tuples(st.booleans(), allocation_sets, st.booleans()), min_size=1, max_size=60
    )
)
def test_the_framer_keeps_every_second_once_in_maximal_frames(
    steps: list[tuple[bool, tuple[Share, ...], bool]],
) -> None:
    # each step: is the second present, its allocation set, and is a record sealed after it
    framer, records, given_seconds = Framer(), [], []
    for t, (present, shares, seal) in enumerate(steps):
        if present:
            d = DeviceSecond("GPU-0", None, "H100", TS + t, shares, 1.0, 1.0, 0, 0, 1.0, 1.0)
            framer.add([d])
            given_seconds.append((TS + t, shares))
        if seal:
            records.append(framer.take())
    records.append(framer.take())
    got = [(f.start + i, f.allocations) for r in records for f in r for i in range(f.n)]
    assert got == given_seconds
    for frames in records:
        for a, b in zip(frames, frames[1:], strict=False):
            # within one record, two frames of a device touch only across a change
            assert b.start >= a.end
            assert b.start > a.end or b.allocations != a.allocations
