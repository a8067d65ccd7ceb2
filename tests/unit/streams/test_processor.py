"""The usage processor's commit path against an in-memory ledger: bad input becomes rejections
with their source position, good samples are counted once, and a worker restart that replays
what it already wrote changes no stored total."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.frame import frames_from_samples
from schemas.usage import GpuSecond
from streams.aggregate import MinuteRow
from streams.processor import UsageProcessor
from streams.records import SourceRecord
from tests.fakes.ledger import FakeLedger

TOPIC = "gpu.usage.v1"
# Recent enough for the validator's real clock, an hour back so nothing is "in the future".
M0 = int(time.time()) // 60 * 60 - 3600

LedgerKey = tuple[int, str, str, str, str, int]  # (minute, gpu, mig, tenant, job, share_milli)


def sample(
    gpu: str, ts: int, alloc: tuple[str, str] | None = ("acme", "train"), **overrides: Any
) -> dict[str, Any]:
    tenant, job = alloc if alloc else (None, None)
    doc = {
        "gpu_uuid": gpu,
        "mig_uuid": None,
        "gpu_model": "H100",
        "ts": ts,
        "tenant": tenant,
        "job": job,
        "billing_class": None,
        "sm_util": 40.0,
        "mem_util": 10.0,
        "mem_used": 100,
        "mem_total": 1000,
        "power_w": 300.0,
        "energy_j": 301.5,
        "temp_c": 50.0,
        "flags": [],
    }
    doc.update(overrides)
    return doc


def record(
    offset: int,
    samples: list[dict[str, Any]],
    *,
    node: str = "node-1",
    seq: int = 0,
    gaps: list[dict[str, Any]] | None = None,
    partition: int = 0,
) -> SourceRecord:
    doc = {
        "schema_version": 1,
        "node_id": node,
        "agent_id": f"agent-{node}",
        "seq": seq,
        "samples": samples,
        "gaps": gaps or [],
    }
    return SourceRecord(orjson.dumps(doc), TOPIC, partition, offset)


def mixed_chunk() -> list[SourceRecord]:
    """Offset 10: three good samples and a 5 s gap; 11: malformed JSON; 12: four samples of
    which index 2 is bad."""
    return [
        record(
            10,
            [sample("GPU-A", M0 + i) for i in range(3)],
            gaps=[{"start": M0 - 5, "end": M0, "reason": "agent_restarted"}],
        ),
        SourceRecord(b'{"schema_version": 1, "node_id": "node-2", ', TOPIC, 0, 11),
        record(
            12,
            [
                sample("GPU-B", M0, None, sm_util=0.0),
                sample("GPU-B", M0 + 1, None, sm_util=0.0),
                sample("GPU-B", M0 + 2, None, sm_util=150.0),
                sample("GPU-B", M0 + 3, ("zeta", "infer")),
            ],
            node="node-3",
        ),
    ]


def test_a_mixed_chunk_keeps_good_samples_and_rejects_bad_input_with_its_position() -> None:
    # given a chunk with a good record, a malformed record and a record with one bad sample
    store = FakeLedger()
    proc = UsageProcessor(store)
    # when it is processed
    out = proc.process(mixed_chunk())
    # then the two rejections say where they came from and why
    assert [(r.topic, r.partition, r.offset, r.sample_index, r.code) for r in out.rejected] == [
        (TOPIC, 0, 11, -1, "malformed_json"),
        (TOPIC, 0, 12, 2, "invalid_sample"),
    ]
    malformed, bad_sample = out.rejected
    assert "JSON" in malformed.reason and malformed.raw == mixed_chunk()[1].value
    assert "samples[2].sm_util" in bad_sample.reason
    assert bad_sample.node_id == "node-3"
    assert orjson.loads(bad_sample.raw)["sm_util"] == 150.0
    assert store.rejected == out.rejected
    # and the six good samples reach the ledger and the raw archive
    assert store.seconds_by_allocation() == Counter(
        {("acme", "train"): 3, ("__idle__", ""): 2, ("zeta", "infer"): 1}
    )
    assert store.energy_by_allocation()[("acme", "train")] == 3 * 301_500
    assert len(store.raw) == 6
    assert {node for node, _ in store.raw.values()} == {"node-1", "node-3"}
    # and the counters agree
    s = proc.stats
    assert (s.records, s.samples, s.new_seconds, s.duplicates) == (3, 6, 6, 0)
    assert (s.rejected_records, s.rejected_samples, s.gap_seconds) == (1, 1, 5)
    assert s.flushes == 1


def test_replaying_a_chunk_after_a_restart_changes_no_ledger_total() -> None:
    # given a worker that processed a chunk and wrote it
    store = FakeLedger()
    UsageProcessor(store).process(mixed_chunk())
    ledger_before = {k: dataclasses.astuple(v) for k, v in store.ledger.items()}
    raw_before = dict(store.raw)
    # when it restarts (a new processor, nothing in memory) and the chunk is redelivered
    restarted = UsageProcessor(store)
    restarted.process(mixed_chunk())
    # then it loaded the state of the minutes from the ledger
    assert set().union(*store.loads) >= {("GPU-A", M0), ("GPU-B", M0)}
    # and the stored rows and raw archive are exactly as before
    assert {k: dataclasses.astuple(v) for k, v in store.ledger.items()} == ledger_before
    assert store.raw == raw_before
    # and every sample was recognised as already counted
    s = restarted.stats
    assert (s.samples, s.new_seconds, s.duplicates) == (6, 0, 6)
    assert (s.rejected_records, s.rejected_samples) == (1, 1)


def test_a_replay_after_the_minute_was_evicted_is_recognised_from_the_ledger() -> None:
    # given a worker with no grace and no retention after close
    store = FakeLedger()
    proc = UsageProcessor(store, grace_s=0, keep_closed_s=0)
    first = record(0, [sample("GPU-A", M0 + i) for i in range(59)])
    proc.process([first])
    # when a much later record closes and evicts minute M0
    proc.process([record(1, [sample("GPU-A", M0 + 600)], seq=1)])
    evicted = frames_from_samples([GpuSecond.model_validate(sample("GPU-A", M0))])
    assert ("GPU-A", M0) in proc.aggregator.missing(evicted)
    # and the first record is redelivered, plus one genuinely new late second
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 60})
    proc.process([record(0, [sample("GPU-A", M0 + i) for i in range(60)])])
    # then the replayed seconds add nothing and the new one is merged into minute M0
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 61})
    assert store.ledger[(M0, "GPU-A", "", "acme", "train", 1000)].seconds_mask == (1 << 60) - 1
    assert (proc.stats.duplicates, proc.stats.late) == (59, 1)


def test_a_record_with_a_non_finite_energy_never_crashes_the_worker() -> None:
    # given a record whose one sample says energy_j: Infinity (accepted by pydantic's JSON parser)
    raw = orjson.dumps(
        {
            "schema_version": 1,
            "node_id": "node-1",
            "agent_id": "a",
            "seq": 0,
            "gaps": [],
            "samples": [sample("GPU-A", M0, flags=["energy_estimated"]), sample("GPU-A", M0 + 1)],
        }
    ).replace(b'"energy_j":301.5', b'"energy_j":Infinity', 1)
    store = FakeLedger()
    proc = UsageProcessor(store)
    # when it is processed
    out = proc.process([SourceRecord(raw, TOPIC, 0, 0)])
    # then it is a rejection, not an exception, and no stored energy is absurd
    assert len(out.rejected) == 1
    assert all(r.energy_mj < 10**12 for r in store.ledger.values())


# -- exactness under any chunking, duplication and restarts --------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_ledger_is_exact_under_any_redelivery_and_restarts(data: st.DataObject) -> None:
    # given distinct samples of 2 nodes x 2 GPUs over 3 minutes, in per-node batches
    gpus = {"GPU-A": "node-1", "GPU-B": "node-1", "GPU-C": "node-2"}
    idents = data.draw(
        st.sets(
            st.tuples(st.sampled_from(sorted(gpus)), st.integers(0, 179)), min_size=1, max_size=60
        )
    )
    allocs = [("acme", "train"), ("zeta", "infer"), None]
    docs = [
        sample(
            g,
            M0 + off,
            data.draw(st.sampled_from(allocs)),
            energy_j=float(data.draw(st.integers(100, 600))),
        )
        for g, off in sorted(idents)
    ]
    batches = [
        [d for d in docs if gpus[d["gpu_uuid"]] == node][i::3]
        for node in ("node-1", "node-2")
        for i in range(3)
    ]
    records = [record(i, b, node=gpus[b[0]["gpu_uuid"]], seq=i) for i, b in enumerate(batches) if b]
    # and a delivery history: every record at least once, some again, reordered, in chunks,
    # with the worker restarted (memory lost) between some chunks
    delivered = data.draw(
        st.permutations([r for r in records for _ in range(data.draw(st.integers(1, 3)))])
    )
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(delivered), max_size=len(delivered)))
    store = FakeLedger()
    proc = UsageProcessor(store, grace_s=data.draw(st.sampled_from([0, 60, 120])), keep_closed_s=0)
    i = 0
    for size in sizes:
        if i >= len(delivered):
            break
        # when each chunk is processed, sometimes by a freshly restarted worker
        if data.draw(st.booleans()):
            proc = UsageProcessor(store, grace_s=proc.aggregator.grace_s, keep_closed_s=0)
        proc.process(delivered[i : i + size])
        i += size
    # then the stored seconds and energy per allocation are those of the distinct samples
    expected_s: Counter[tuple[str, str]] = Counter()
    expected_e: Counter[tuple[str, str]] = Counter()
    for d in docs:
        key = (d["tenant"], d["job"]) if d["tenant"] else ("__idle__", "")
        expected_s[key] += 1
        expected_e[key] += round(d["energy_j"] * 1000)
    assert store.seconds_by_allocation() == expected_s
    assert store.energy_by_allocation() == expected_e
    # and the raw archive holds each sample once
    assert len(store.raw) == len(docs)


# -- retry, restart, parked samples, conflicts ----------------------------------------------------


class FailingOnce(FakeLedger):
    """A ledger whose first ledger write fails after the raw archive was written."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse went away")
        super().write_ledger(rows)


def test_retrying_a_chunk_after_a_failed_write_counts_it_in_full() -> None:
    # given a processor whose ledger write fails once
    store = FailingOnce()
    proc = UsageProcessor(store)
    chunk = [record(0, [sample("GPU-A", M0 + i) for i in range(60)])]
    # when the chunk fails, and the caller retries the same chunk in the same process
    try:
        proc.process(chunk)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the write error must reach the caller")
    proc.process(chunk)
    # then all 60 seconds are in the ledger (not "already counted" by the failed attempt)
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 60})


def test_a_restarted_worker_does_not_re_emit_reloaded_minutes_on_every_chunk() -> None:
    # given 30 seconds of an open minute written by a first worker
    store = FakeLedger()
    UsageProcessor(store, grace_s=60).process(
        [record(0, [sample("GPU-A", M0 + i) for i in range(30)])]
    )
    # when a restarted worker receives the rest of that minute, a few seconds per chunk
    restarted = UsageProcessor(store, grace_s=60)
    emitted = []
    for i in range(30, 60, 5):
        out = restarted.process([record(i, [sample("GPU-A", M0 + j) for j in range(i, i + 5)])])
        emitted += [r.minute for r in out.closed]
    # then nothing is emitted while the minute is open, and it is emitted once when it closes
    assert emitted == []
    out = restarted.process([record(99, [sample("GPU-A", M0 + 200)])])
    assert [(r.minute, r.gpu_seconds) for r in out.closed] == [(M0, 60)]


def test_a_sample_from_the_future_is_parked_then_counted_when_its_time_comes(
    monkeypatch: Any,
) -> None:
    # given a node whose clock runs 10 minutes ahead, and a worker allowing 300 s of skew
    now = float(M0 + 3600)
    monkeypatch.setattr("streams.processor.time.time", lambda: now)
    store = FakeLedger()
    proc = UsageProcessor(store, max_future_skew_s=300)
    ahead = int(now) + 600
    out = proc.process([record(0, [sample("GPU-A", int(now)), sample("GPU-A", ahead)])])
    # then the future sample is parked (rejected with its own code), the other counted
    assert [(r.code, r.sample_index) for r in out.rejected] == [("future_timestamp", 1)]
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 1})
    assert proc.stats.parked == 1
    # when time passes beyond the sample's second minus the allowance, and data keeps flowing
    now += 400
    proc.process([record(1, [sample("GPU-A", int(now) - 100)], seq=1)])
    # then the parked sample is counted once, and marked re-admitted
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 3})
    assert proc.stats.readmitted == 1
    now += 60
    proc.process([record(2, [sample("GPU-A", int(now) - 100)], seq=2)])
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 4})
    assert proc.stats.readmitted == 1


def test_two_claims_of_one_second_give_the_same_ledger_in_either_order_and_are_recorded() -> None:
    # given acme's and globex's records claiming the same minute of GPU-A
    acme = record(0, [sample("GPU-A", M0 + i, ("acme", "train")) for i in range(60)])
    globex = record(1, [sample("GPU-A", M0 + i, ("globex", "x")) for i in range(60)], node="node-2")
    results = []
    for order in ([acme, globex], [globex, acme], [globex], [acme]):
        store = FakeLedger()
        proc = UsageProcessor(store)
        for rec in order:  # one chunk each: the second arrives after the first was written
            proc.process([rec])
        results.append((store.seconds_by_allocation(), len(store.conflicts)))
    # then acme (the smaller tenant) holds the 60 seconds whichever came first
    acme_wins = Counter({("acme", "train"): 60, ("globex", "x"): 0})
    assert results[0] == results[1] == (acme_wins, 60)
    assert results[2] == (Counter({("globex", "x"): 60}), 0)
