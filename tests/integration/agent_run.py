"""Running a node agent as a subprocess and reading its topic back: the helpers of the agent
delivery tests (tests/integration/test_agent_delivery.py and the disk-full and broker-restart
tests that reuse them)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.simulator import SimulatedFleet

ROOT = Path(__file__).resolve().parents[2]

SEED = 7
NODES = 2
GPUS = 4
START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
HOUR = 3600
FLUSH_EVERY = 60  # the agent's default for simulated fleets: one record per node per minute
PARTITIONS = 2

#: Mirror of the spool's segment magic and record header (agents/spool.py ``_MAGIC``,
#: ``_HEADER``): length, seq, crc32, n_samples, first_ts, last_ts. Used only to *watch* a live
#: agent's spool read-only; opening a ``Spool`` on a directory another process owns is refused.
_SPOOL_MAGIC = b"GMSPOOL2"
_SPOOL_HEADER = struct.Struct("<IQIIqq")

Identity = tuple[str, str | None, int]


# -- running the agent ---------------------------------------------------------------------------
def agent_cmd(
    bootstrap: str, topic: str, spool: Path, *, duration: str = "1h", speed: str = "max"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gpumeter.cli",
        "agent",
        "--simulate",
        "--nodes",
        str(NODES),
        "--gpus",
        str(GPUS),
        "--seed",
        str(SEED),
        "--start",
        "2026-11-20",
        "--duration",
        duration,
        "--speed",
        speed,
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--spool-dir",
        str(spool),
        "--quiet",
        "--no-fsync",
    ]


@dataclass
class AgentProc:
    """An agent subprocess whose output goes to files (no pipe can fill up and stall it)."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(cls, cmd: list[str], workdir: Path, name: str) -> AgentProc:
        out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
        env = {**os.environ, "GPUMETER_DATA_DIR": str(workdir / "data")}
        env.pop("GPUMETER_KAFKA_BOOTSTRAP", None)
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL
            )
        return cls(proc, out, err)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the agent did not exit within {timeout} s\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return (
            f"--- stdout\n{self.out.read_text(errors='replace')}"
            f"--- stderr (tail)\n{self.err.read_text(errors='replace')[-3000:]}"
        )


def run_agent(cmd: list[str], workdir: Path, name: str, timeout: float = 90) -> AgentProc:
    agent = AgentProc.start(cmd, workdir, name)
    agent.wait(timeout)
    return agent


def acked_seq(node_dir: Path) -> int:
    try:
        return int((node_dir / "acked").read_text().strip())
    except (FileNotFoundError, ValueError):
        return -1


def spooled(node_dir: Path) -> tuple[int, int, int | None]:
    """(records, samples, last second) in a node's spool segments, read-only; a torn tail is
    simply not counted."""
    records = samples = 0
    last_ts: int | None = None
    for seg in sorted(node_dir.glob("seg-*.log")):
        try:
            data = seg.read_bytes()
        except FileNotFoundError:
            continue  # released or dropped (spool full) by the agent since the glob
        if not data.startswith(_SPOOL_MAGIC):
            continue  # a segment being created
        pos = len(_SPOOL_MAGIC)
        while pos + _SPOOL_HEADER.size <= len(data):
            length, _seq, _crc, n, _first, ts = _SPOOL_HEADER.unpack_from(data, pos)
            if pos + _SPOOL_HEADER.size + length > len(data):
                break
            pos += _SPOOL_HEADER.size + length
            records += 1
            samples += n
            last_ts = ts if last_ts is None else max(last_ts, ts)
    return records, samples, last_ts


def wait_until(
    cond: Callable[[], bool],
    timeout: float,
    agent: AgentProc,
    what: str,
    detail: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if agent.proc.poll() is not None:
            pytest.fail(
                f"the agent exited ({agent.proc.returncode}) before {what} "
                f"{detail()}\n{agent.output()}"
            )
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting until {what} {detail()}\n{agent.output()}")


def node_dirs(spool: Path) -> list[Path]:
    return [spool / f"sim-node-{n:02d}" for n in range(NODES)]


# -- reading the topic back ----------------------------------------------------------------------
@dataclass
class Readback:
    records: int = 0
    samples: int = 0  # every sample read, duplicates included
    #: per distinct second: its allocation set ((tenant, job, share), ...) and GPU model
    distinct: dict[Identity, tuple[tuple[tuple[str, str, int], ...], str]] = field(
        default_factory=dict
    )
    conflicts: list[str] = field(default_factory=list)  # one identity, two attributions
    rejections: list[str] = field(default_factory=list)
    seqs: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)  # (node, agent) -> seq
    bad_keys: list[str] = field(default_factory=list)
    gaps: list[tuple[str, int, int, str]] = field(default_factory=list)  # node, start, end, reason

    @property
    def duplicates(self) -> int:
        return self.samples - len(self.distinct)

    @property
    def duplicate_records(self) -> int:
        return sum(c - 1 for seqs in self.seqs.values() for c in seqs.values())


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> Readback:
    """Every record of ``topic`` from the beginning up to the end offsets seen at the start."""
    from kafka import KafkaConsumer, TopicPartition

    from schemas.validation import parse_record

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="agent-delivery-readback",
    )
    rb = Readback()
    # The window is in the past; never let the validator's clock reject it on a skewed host.
    now = max(time.time(), START + HOUR)
    try:
        deadline = time.monotonic() + timeout
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, (
                f"read back timed out: positions {[consumer.position(tp) for tp in tps]}, "
                f"end offsets {end}"
            )
            for recs in consumer.poll(timeout_ms=500).values():
                for rec in recs:
                    rb.records += 1
                    b = parse_record(rec.value, now=now)
                    rb.rejections += [f"{r.code}: {r.reason}" for r in b.rejections]
                    if b.node_id is None or b.agent_id is None or b.seq is None:
                        continue
                    if rec.key != b.node_id.encode():
                        rb.bad_keys.append(f"record key {rec.key!r} for node {b.node_id}")
                    rb.seqs.setdefault((b.node_id, b.agent_id), Counter())[b.seq] += 1
                    rb.gaps += [(b.node_id, g.start, g.end, g.reason) for g in b.gaps]
                    for f in b.frames:
                        held = tuple((a.tenant, a.job, a.milli) for a in f.allocations)
                        attr = (held, f.gpu_model)
                        for ts in range(f.start, f.end):
                            rb.samples += 1
                            ident = (f.gpu_uuid, f.mig_uuid, ts)
                            seen = rb.distinct.setdefault(ident, attr)
                            if seen != attr:
                                rb.conflicts.append(f"{ident}: {seen} then {attr}")
    finally:
        consumer.close()
    return rb


def assert_exact(
    rb: Readback, fleet: SimulatedFleet, start: int, end: int, *, allow_duplicates: bool
) -> None:
    """Distinct samples reproduce the ground truth exactly: every (GPU, second) of the window
    once, attributed as the schedule says; nothing missing, nothing invented."""
    dup = (
        f"{rb.duplicates} duplicate sample(s) in {rb.duplicate_records} re-sent record(s) "
        f"of {rb.records}"
    )
    assert not rb.rejections, f"records rejected by the validator: {rb.rejections[:5]}"
    assert not rb.bad_keys, rb.bad_keys[:5]
    assert not rb.conflicts, f"one sample identity with two attributions: {rb.conflicts[:5]}"

    # Coverage: every (gpu, second) of the window exactly once as a distinct sample.
    expected = {(g.uuid, None, ts) for g in fleet.gpus() for ts in range(start, end)}
    got = set(rb.distinct)
    missing, extra = expected - got, got - expected
    assert not missing, (
        f"{len(missing)} GPU-second(s) never arrived (of {len(expected)}; {dup}); "
        f"first: {sorted(missing, key=lambda i: i[2])[:5]}"
    )
    assert not extra, f"{len(extra)} sample(s) outside the fleet/window: {sorted(extra)[:5]}"

    truth = fleet.ground_truth(start, end)
    per_tenant: Counter[str] = Counter()
    per_job: Counter[tuple[str, str]] = Counter()
    per_hour: Counter[tuple[str, str, str, int]] = Counter()
    idle: Counter[str] = Counter()
    for (gpu, _mig, ts), (held, model) in rb.distinct.items():
        if sum(milli for _, _, milli in held) < 1000:
            idle[gpu] += 1  # a second with some idle share (the ledger's idle gpu_seconds)
        for tenant, job, _milli in held:
            per_tenant[tenant] += 1
            per_job[(tenant, job)] += 1
            per_hour[(tenant, job, model, ts - ts % 3600)] += 1
    assert per_tenant == truth.per_tenant(), dup
    assert per_job == truth.per_job(), dup
    assert per_hour == Counter({tuple(k): v for k, v in truth.allocated.items()}), dup
    assert sum(idle.values()) == truth.idle_seconds, dup
    assert idle == +truth.idle, dup
    if not any(len(held) > 1 for held, _ in rb.distinct.values()):  # whole GPUs only
        assert sum(per_tenant.values()) + sum(idle.values()) == len(expected)

    # Batches: per node one agent instance (the spool's id survives restarts) and a gapless
    # sequence of batches from 0 (the contract: "gapless and increasing").
    assert {node for node, _ in rb.seqs} == {f"sim-node-{n:02d}" for n in range(NODES)}, rb.seqs
    for (node, agent_id), seqs in rb.seqs.items():
        assert sorted(seqs) == list(range(max(seqs) + 1)), (
            f"{node} (agent {agent_id}): batch seqs not gapless: {sorted(seqs)}"
        )
    if not allow_duplicates:
        assert rb.duplicates == 0 and rb.duplicate_records == 0, dup
