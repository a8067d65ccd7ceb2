"""Nodes spread evenly over the usage topic's partitions, each node always on the same one."""

from __future__ import annotations

from collections import Counter

import pytest
from kafka.partitioner.default import murmur2

from agents.partition import NodePartitioner, partition_for

FLEETS = {
    "sim-node-00..63": [f"sim-node-{i:02d}" for i in range(64)],
    "gpu-a100-001..128": [f"gpu-a100-{i:03d}" for i in range(1, 129)],
    "dgx-rack1..8-n00..07": [f"dgx-rack{r}-n{n:02d}" for r in range(1, 9) for n in range(8)],
    "ip-10-0-0..3-16..47": [f"ip-10-0-{a}-{b}" for a in range(4) for b in range(16, 48)],
}


def murmur(node: str, partitions: int) -> int:
    return (murmur2(node.encode()) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", [4, 8, 16])
@pytest.mark.parametrize("fleet", list(FLEETS))
def test_numbered_fleets_spread_evenly(fleet: str, partitions: int) -> None:
    # Tolerance: every partition gets the mean number of nodes, give or take one.
    counts = Counter(partition_for(n, partitions) for n in FLEETS[fleet])
    mean = len(FLEETS[fleet]) / partitions
    assert len(counts) == partitions, f"idle partitions: {sorted(counts.items())}"
    assert max(counts.values()) - min(counts.values()) <= 1, sorted(counts.values())
    assert all(abs(c - mean) <= 1 for c in counts.values())


def test_the_six_simulated_nodes_use_every_one_of_four_partitions() -> None:
    nodes = [f"sim-node-{i:02d}" for i in range(6)]
    # Kafka's default (murmur2 of the key) put five of them on one partition: issue 9, finding 6.
    assert max(Counter(murmur(n, 4) for n in nodes).values()) >= 5
    assert sorted(Counter(partition_for(n, 4) for n in nodes).values()) == [1, 1, 2, 2]


def test_names_without_a_counter_fall_back_to_a_uniform_hash() -> None:
    import hashlib

    nodes = [hashlib.sha1(str(i).encode()).hexdigest()[:12] for i in range(2000)]
    nodes = ["node-" + "".join(c for c in n if not c.isdigit()) + f"-{n}" for n in nodes]
    counts = Counter(partition_for(n, 8) for n in nodes)
    assert len(counts) == 8 and max(counts.values()) < 1.3 * 2000 / 8


def test_a_node_always_maps_to_the_same_partition() -> None:
    assert {partition_for("gpu-a100-017", 16) for _ in range(5)} == {
        partition_for("gpu-a100-017", 16)
    }
    # Known values pin the rule: changing it would move nodes between partitions on upgrade.
    assert [partition_for(f"sim-node-{i:02d}", 4) for i in range(6)] == [
        partition_for("sim-node-00", 4),
        *[(partition_for("sim-node-00", 4) + i) % 4 for i in range(1, 6)],
    ]


def test_the_kafka_partitioner_uses_the_key() -> None:
    class Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

    p = NodePartitioner()
    assert p.partition("t", b"sim-node-03", b"sim-node-03", None, b"v", Cluster()) == partition_for(
        "sim-node-03", 4
    )
    with pytest.raises(ValueError):
        p.partition("other", b"k", b"k", None, b"v", Cluster())
