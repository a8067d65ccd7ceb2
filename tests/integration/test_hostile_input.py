"""Hostile producers through the real worker (embedded broker, embedded ClickHouse).

Records are built here as a foreign producer would build them from the published schema, then
mutated: wrong types, coercible strings, NaN/Infinity/1e400, integers past 2**64, JSON nested
past the parser's depth, lone surrogates, invalid UTF-8, the reserved idle tenant, megabyte
values, conflicting claims of the same GPU-seconds and a MIG parent beside its slices. After
the worker has consumed everything:

- the worker is alive (it exits 0 on idle; a crash would exit non-zero);
- every mutated sample is rejected alone, with a short reason, every broken envelope costs
  its record, and nothing else is rejected;
- the ledger equals a count made here, independently, from the unmutated samples and the
  documented conflict rule;
- every losing claim is in ``usage_conflicts``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from infra.embedded.broker import EmbeddedBroker
from tests.integration.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = 1_795_651_200  # 2026-11-20T00:00:00Z
NODES = ["dgx-a01", "dgx-a02", "hgx-b07"]
GPUS_PER_NODE = 3
MINUTES = 4
ALLOCS: list[tuple[str, str] | None] = [
    ("acme", "train"),
    ("globex", "infer"),
    None,
    ("ünï-cödé", "job'; DROP TABLE x;--"),
]

#: Mutations of one sample: (name, function of the sample dict -> the value to put in the list
#: of samples instead; a callable returning raw JSON text is spliced in as-is).
SAMPLE_MUTATIONS: list[tuple[str, Any]] = [
    ("ts as string", lambda s: {**s, "ts": str(s["ts"])}),
    ("sm_util as string", lambda s: {**s, "sm_util": "50"}),
    ("bool for number", lambda s: {**s, "mem_used": True}),
    ("negative power", lambda s: {**s, "power_w": -1.0}),
    ("reserved tenant", lambda s: {**s, "tenant": "__idle__", "job": "x"}),
    ("extra field", lambda s: {**s, "colour": "blue"}),
    ("missing field", lambda s: {k: v for k, v in s.items() if k != "gpu_model"}),
    ("tenant without job", lambda s: {**s, "tenant": "acme", "job": None}),
    ("control character", lambda s: {**s, "gpu_model": "H100\u0007"}),
    ("megabyte model name", lambda s: {**s, "gpu_model": "M" * 600_000}),
    ("NaN", lambda s: _raw(s, "sm_util", "NaN")),
    ("Infinity", lambda s: _raw(s, "power_w", "Infinity")),
    ("1e400", lambda s: _raw(s, "energy_j", "1e400")),
    ("integer past 2**64", lambda s: _raw(s, "mem_used", str(2**70))),
    ("deep nesting", lambda s: _raw(s, "temp_c", "[" * 5000 + "]" * 5000)),
    ("lone surrogate", lambda s: _raw(s, "job", '"\\ud800"')),
]


class RawSample(str):
    """A sample already encoded as JSON text (for values json.dumps cannot produce)."""


def _raw(s: dict[str, Any], field: str, text: str) -> RawSample:
    body = json.dumps({k: v for k, v in s.items() if k != field})
    return RawSample(body[:-1] + f', "{field}": {text}}}')


def encode(envelope: dict[str, Any], samples: list[Any]) -> bytes:
    parts = [str(x) if isinstance(x, RawSample) else json.dumps(x) for x in samples]
    head = json.dumps(envelope)[:-1]
    return (head + ', "samples": [' + ", ".join(parts) + "]}").encode()


def sample(
    node: int, gpu: int, ts: int, alloc: tuple[str, str] | None, mig: str | None = None
) -> dict[str, Any]:
    return {
        "gpu_uuid": f"GPU-{NODES[node]}-{gpu}",
        "mig_uuid": mig,
        "gpu_model": "NVIDIA H100",
        "ts": ts,
        "tenant": alloc[0] if alloc else None,
        "job": alloc[1] if alloc else None,
        "billing_class": None,
        "sm_util": 40.0 if alloc else 0.0,
        "mem_util": 10.0,
        "mem_used": 100,
        "mem_total": 1000,
        "power_w": 300.0,
        "energy_j": 300.0,
        "temp_c": 50.0,
        "flags": [],
    }


def rank(alloc: tuple[str, str]) -> tuple[int, str, str]:
    # The documented conflict rule (README, "Guarantees"): allocation before idle, then the
    # smaller (tenant, job) by code point; a MIG slice before its parent GPU.
    return (1, "", "") if alloc == ("__idle__", "") else (0, *alloc)


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topic_factory, tmp_path: Path) -> Pipeline:
    return Pipeline(broker.bootstrap, topic_factory("usage", partitions=2), tmp_path)


def test_hostile_records_end_counted_rejected_or_recorded_as_conflicts(pipeline: Pipeline) -> None:
    rng = random.Random(20261128)
    records: list[bytes] = []
    claims: list[dict[str, Any]] = []  # every valid claim sent
    bad_samples: list[tuple[int, int, str]] = []  # (record index, sample index, mutation)
    bad_records: list[tuple[int, str]] = []
    # given per node and minute a record of all its GPUs' seconds, some samples mutated
    for minute in range(MINUTES):
        for n, node in enumerate(NODES):
            samples: list[Any] = []
            for g in range(GPUS_PER_NODE):
                for sec in range(60):
                    s = sample(n, g, START + minute * 60 + sec, ALLOCS[(g + minute) % len(ALLOCS)])
                    if rng.random() < 0.01:
                        name, mutate = rng.choice(SAMPLE_MUTATIONS)
                        bad_samples.append((len(records), len(samples), name))
                        samples.append(mutate(s))
                    else:
                        claims.append(s)
                        samples.append(s)
            env = {
                "schema_version": 1,
                "node_id": node,
                "agent_id": f"agent-{node}",
                "seq": minute,
                "gaps": [],
            }
            records.append(encode(env, samples))
    # and every mutation at least once, one per record of a single GPU
    for i, (name, mutate) in enumerate(SAMPLE_MUTATIONS):
        good = sample(0, 9, START + 3600 + i, ("acme", "train"))
        bad_samples.append((len(records), 1, name))
        claims.append(good)
        records.append(
            encode(
                {
                    "schema_version": 1,
                    "node_id": "dgx-a01",
                    "agent_id": "m",
                    "seq": 100 + i,
                    "gaps": [],
                },
                [good, mutate(good)],
            )
        )
    # and broken envelopes, each followed by valid records that must still count
    envelopes = [
        (
            "megabyte agent id",
            {"schema_version": 1, "node_id": "x", "agent_id": "a" * 600_000, "seq": 0},
        ),
        (
            "schema_version as string",
            {"schema_version": "1", "node_id": "x", "agent_id": "a", "seq": 0},
        ),
        ("seq past 2**63", {"schema_version": 1, "node_id": "x", "agent_id": "a", "seq": 2**127}),
        ("unknown version", {"schema_version": 7, "node_id": "x", "agent_id": "a", "seq": 0}),
    ]
    for i, (name, env) in enumerate(envelopes):
        bad_records.append((len(records), name))
        records.append(encode(env, [sample(1, 9, START + 7200 + i, ("acme", "train"))]))
    for raw, name in [
        (b"{not json", "malformed"),
        (b"\xff\xfe\x00garbage", "invalid utf-8"),
        (b"[]", "not an object"),
        (b"", "empty"),
    ]:
        bad_records.append((len(records), name))
        records.append(raw)
    # and conflicting claims: the same GPU-minute claimed by globex, by idle and by acme; a
    # MIG parent claimed beside its slices
    conflict_env = {"schema_version": 1, "node_id": "rogue", "agent_id": "r", "gaps": []}
    for seq, alloc in enumerate([("globex", "infer"), None, ("acme", "train")]):
        batch = [sample(2, 8, START + 600 + sec, alloc) for sec in range(60)]
        claims.extend(batch)
        records.append(encode({**conflict_env, "seq": seq}, batch))
    slices = [
        sample(2, 7, START + 900 + sec, ("globex", "infer"), mig=f"MIG-{sec % 2}")
        for sec in range(30)
    ]
    parent = [sample(2, 7, START + 900 + sec, ("acme", "train")) for sec in range(60)]
    claims.extend(slices + parent)
    records.append(encode({**conflict_env, "seq": 10}, parent))
    records.append(encode({**conflict_env, "seq": 11}, slices))

    # when a foreign producer sends them all and the worker consumes the topic
    pipeline.publish_raw(records, key=b"hostile")
    stats = pipeline.run_worker()  # asserts exit status 0: alive until idle

    # then each mutated sample, and each broken envelope, is rejected where it was, briefly
    rejected = pipeline.sql("SELECT offset, sample_index, code, reason FROM usage_rejected FINAL")
    got = {(int(r["offset"]), int(r["sample_index"])) for r in rejected}
    want = {(i, j) for i, j, _ in bad_samples} | {(i, -1) for i, _ in bad_records}
    assert got == want, (
        f"missing: {sorted(want - got)[:5]} unexpected: {sorted(got - want)[:5]}; "
        f"mutations: {[n for i, j, n in bad_samples if (i, j) in want - got][:5]}"
        f"{[n for i, n in bad_records if (i, -1) in want - got][:5]}"
    )
    long = [r for r in rejected if len(r["reason"]) >= 300]
    assert not long, long[:2]
    # and the ledger holds, per (tenant, job, gpu, mig, minute), the rule's winners
    by_id: dict[tuple[str, str, int], list[tuple[str, str]]] = {}
    for s in claims:
        alloc = (s["tenant"], s["job"]) if s["tenant"] else ("__idle__", "")
        by_id.setdefault((s["gpu_uuid"], s["mig_uuid"] or "", s["ts"]), []).append(alloc)
    sliced = {(g, ts) for g, m, ts in by_id if m}
    expected: Counter[tuple[str, str, str, str, int]] = Counter()
    losers = 0
    for (gpu, mig, ts), allocs in by_id.items():
        distinct = set(allocs)
        if not mig and (gpu, ts) in sliced:
            losers += len(distinct)
            continue
        tenant, job = min(distinct, key=rank)
        losers += len(distinct) - 1
        expected[(tenant, job, gpu, mig, ts - ts % 60)] += 1
    rows = pipeline.sql(
        "SELECT tenant, job, gpu_uuid, mig_uuid, toUnixTimestamp(minute) AS m, "
        "sum(gpu_seconds) AS s FROM usage_minutely FINAL GROUP BY tenant, job, gpu_uuid, "
        "mig_uuid, m HAVING s > 0"
    )
    ledger = Counter(
        {
            (r["tenant"], r["job"], r["gpu_uuid"], r["mig_uuid"], int(r["m"])): int(r["s"])
            for r in rows
        }
    )
    assert ledger == expected
    # and every losing claim is recorded
    conflicts = pipeline.sql("SELECT count() AS n FROM usage_conflicts FINAL")
    assert int(conflicts[0]["n"]) == losers == 60 * 2 + 30
    assert stats["conflicts"] >= losers
