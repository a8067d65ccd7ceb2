"""Many workers, one ledger: whatever the partition assignment, the rebalances, the crashes
between a write and its commit, the redelivery and the late data, the ledger converges to the
ground truth, because its rows merge by union (streams/README.md, "Many writers").

The simulation runs several real :class:`UsageProcessor` instances of a consumer group over
one store. Each worker's writes go through an outbox that the schedule delivers when it likes,
so a write can land *after* another worker has taken the partition over and written the same
GPU-minutes: the race of a rebalance. A worker commits its position only once its writes have
landed and only while it owns the partition (Kafka fences a stale generation's commits).

The same schedules against the 0001 ledger (a ReplacingMergeTree: the highest version wins
whole) lose seconds; :func:`test_the_replacing_ledger_loses_seconds_under_such_schedules`
shows it, so this test is known to tell the two designs apart.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from streams.aggregate import MinuteRow
from streams.processor import UsageProcessor
from streams.records import SourceRecord
from tests.fakes.ledger import FakeLedger, ReplacingLedger

TOPIC = "gpu.usage.v1"
M0 = 1_795_651_200  # a UTC minute boundary, far enough in the past for the validator
NODES = {"node-a": 0, "node-b": 1}  # node -> partition (the agent's partitioner is stable)
ALLOCS: list[tuple[str, str] | None] = [("acme", "train"), ("zeta", "infer"), None]


@functools.lru_cache(maxsize=64)
def make_log(seed: int) -> tuple[dict[int, list[bytes]], Counter[tuple[str, str, str, int]]]:
    """Per partition, the records a node's agent sends: 2 GPUs over 3 minutes in batches of a
    few seconds, some seconds held back and sent late, some batches sent twice (a resend).
    Returns the log and the ground truth: seconds per (tenant, job, gpu, minute)."""
    rng = random.Random(seed)
    log: dict[int, list[bytes]] = {p: [] for p in NODES.values()}
    truth: Counter[tuple[str, str, str, int]] = Counter()
    for node, partition in NODES.items():
        samples, held = [], []
        for ts in range(M0, M0 + 180):
            for g in range(2):
                alloc = ALLOCS[(ts // 50 + g) % len(ALLOCS)]
                doc = {
                    "gpu_uuid": f"GPU-{node}-{g}",
                    "mig_uuid": None,
                    "gpu_model": "H100",
                    "ts": ts,
                    "tenant": alloc[0] if alloc else None,
                    "job": alloc[1] if alloc else None,
                    "billing_class": None,
                    "sm_util": 10.0,
                    "mem_util": 5.0,
                    "mem_used": 1,
                    "mem_total": 2,
                    "power_w": 300.0,
                    "energy_j": 300.0,
                    "temp_c": None,
                    "flags": [],
                }
                tenant, job = alloc if alloc else ("__idle__", "")
                truth[(tenant, job, doc["gpu_uuid"], ts - ts % 60)] += 1
                (held if rng.random() < 0.05 else samples).append(doc)
        batches, i = [], 0
        while i < len(samples):
            size = rng.randint(4, 40)
            back = rng.choice([0, 0, 0, 6])  # overlapping batches: redelivery by the agent
            batches.append(samples[max(0, i - back) : i + size])
            i += size
        for i, batch in enumerate(batches):
            log[partition].append(_record(node, i, batch))
            if held and rng.random() < 0.2:  # late data, in a later batch
                log[partition].append(_record(node, 1000 + i, [held.pop()]))
        for j, doc in enumerate(held):
            log[partition].append(_record(node, 2000 + j, [doc]))
    return log, truth


def _record(node: str, seq: int, samples: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "node_id": node,
            "agent_id": f"agent-{node}",
            "seq": seq,
            "samples": samples,
            "gaps": [],
        }
    )


class Outbox:
    """A worker's view of the shared store: reads go straight to it, writes wait until the
    schedule delivers them (an insert in flight)."""

    def __init__(self, store: FakeLedger) -> None:
        self.store = store
        self.pending: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("write_") or name == "mark_readmitted":
            return lambda items: self.pending.append((name, list(items)))
        return getattr(self.store, name)

    def deliver(self, count: int | None = None) -> None:
        count = len(self.pending) if count is None else count
        for name, items in self.pending[:count]:
            getattr(self.store, name)(items)
        del self.pending[:count]


@dataclass
class Worker:
    outbox: Outbox
    processor: UsageProcessor
    owned: set[int] = field(default_factory=set)
    position: dict[int, int] = field(default_factory=dict)


class Group:
    """Workers of one consumer group over a two-partition topic and one store."""

    def __init__(self, store: FakeLedger, log: dict[int, list[bytes]], workers: int) -> None:
        self.store = store
        self.log = log
        self.committed = {p: 0 for p in log}
        self.workers = [self._new_worker() for _ in range(workers)]
        self.assign([i % workers for i in range(len(log))])

    def _new_worker(self) -> Worker:
        outbox = Outbox(self.store)
        return Worker(outbox, UsageProcessor(outbox, grace_s=60, keep_closed_s=0))  # type: ignore[arg-type]

    def assign(self, owners: Sequence[int]) -> None:
        """A rebalance: each partition to a worker; revoked ones drop their cached state (as
        the app's revocation hook does) but their writes in flight stay in flight."""
        for w in self.workers:
            mine = {p for p, o in enumerate(owners) if self.workers[o] is w}
            if w.owned - mine:
                w.processor.reset()
            for p in mine - w.owned:
                w.position[p] = self.committed[p]
            w.owned = mine

    def process(self, wi: int, size: int) -> None:
        w = self.workers[wi]
        chunk: list[SourceRecord] = []
        for p in sorted(w.owned):
            start = w.position[p]
            take = self.log[p][start : start + size]
            chunk += [SourceRecord(v, TOPIC, p, start + i) for i, v in enumerate(take)]
            w.position[p] = start + len(take)
        if chunk:
            w.processor.process(chunk)

    def commit(self, wi: int) -> None:
        w = self.workers[wi]
        if not w.outbox.pending:  # offsets are committed only after the writes returned
            for p in w.owned:
                self.committed[p] = max(self.committed[p], w.position[p])

    def crash(self, wi: int, landed: int) -> None:
        """The worker dies: some of its writes in flight landed, the rest never will."""
        w = self.workers[wi]
        w.outbox.deliver(min(landed, len(w.outbox.pending)))
        w.outbox.pending.clear()
        fresh = self._new_worker()
        fresh.owned = set(w.owned)
        fresh.position = {p: self.committed[p] for p in w.owned}
        self.workers[wi] = fresh

    def drain(self) -> None:
        """Everything lands; one worker takes every partition and catches up to the end."""
        for w in self.workers:
            w.outbox.deliver()
        self.assign([0] * len(self.log))
        w = self.workers[0]
        while any(w.position[p] < len(self.log[p]) for p in self.log):
            self.process(0, 50)
        w.outbox.deliver()


Op = tuple[str, int, int]

ops = st.one_of(
    st.tuples(st.just("process"), st.integers(0, 2), st.integers(1, 12)),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("commit"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("rebalance"), st.integers(0, 8), st.just(0)),
    st.tuples(st.just("crash"), st.integers(0, 2), st.integers(0, 3)),
)


def run(store: FakeLedger, seed: int, schedule: list[Op]) -> tuple[Counter[Any], Counter[Any]]:
    log, truth = make_log(seed)
    group = Group(store, log, workers=3)
    for name, a, b in schedule:
        if name == "process":
            group.process(a, b)
        elif name == "deliver":
            group.workers[a].outbox.deliver(b)
        elif name == "commit":
            group.commit(a)
        elif name == "rebalance":  # a, in base 3, gives each partition's new owner
            group.assign([a % 3, a // 3 % 3])
        else:
            group.crash(a, b)
    group.drain()
    return ledger_cells(store.ledger.values()), truth


def ledger_cells(rows: Any) -> Counter[tuple[str, str, str, int]]:
    out: Counter[tuple[str, str, str, int]] = Counter()
    for r in rows:
        assert isinstance(r, MinuteRow)
        if r.gpu_seconds:
            out[(r.tenant, r.job, r.gpu_uuid, r.minute)] += r.gpu_seconds
    return out


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 31), schedule=st.lists(ops, max_size=40))
def test_any_assignment_rebalance_crash_and_redelivery_converge_to_ground_truth(
    seed: int, schedule: list[Op]
) -> None:
    # given several workers of one group sharing the union ledger, under a random schedule
    # when the schedule runs and every write finally lands
    ledger, truth = run(FakeLedger(), seed, schedule)
    # then the ledger holds exactly the distinct GPU-seconds, per tenant, job, GPU and minute
    assert ledger == truth


def test_the_replacing_ledger_loses_seconds_under_such_schedules() -> None:
    # given the 0001 ledger (highest version wins whole), the same kind of schedules find a
    # run whose ledger is not the ground truth: the race the union ledger removes
    def loses(args: tuple[int, list[Op]]) -> bool:
        ledger, truth = run(ReplacingLedger(), *args)
        return ledger != truth

    found = find(
        st.tuples(st.integers(0, 31), st.lists(ops, max_size=40)),
        loses,
        settings=settings(max_examples=3000, deadline=None, database=None),
    )
    ledger, truth = run(ReplacingLedger(), *found)
    assert sum(ledger.values()) < sum(truth.values())  # seconds were lost, not invented
