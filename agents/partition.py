"""Which partition of the usage topic a node's batches go to.

Kafka's default partitioner takes murmur2 of the record key modulo the partition count. For node
ids that differ only in a counter (``sim-node-00`` .. ``sim-node-05``) that spreads badly: all
six land on one of four partitions, and the other workers of the consumer group sit idle.

Rule (stable: it depends only on the node id and the partition count, so a node's batches stay
on one partition, in order, as the worker's per-node watermark needs):

    digits  = every decimal digit of the node id, in order, read as one integer N
    stem    = the node id without its digits
    partition = (H(stem) + N) mod partitions      H = first 8 bytes of BLAKE2b, big-endian

Nodes numbered in sequence under one naming scheme (``gpu-a100-001..128``, ``sim-node-00..63``,
``ip-10-0-3-17``) therefore go round-robin: over P partitions, any run of consecutive numbers is
spread within one node per partition. Racked names (``dgx-rack3-n07``) spread by rack and slot
together. Ids without digits, or with digits that are not a counter (a hash in a host name),
fall back to a uniform hash. The record key stays the node id; only the partition is chosen
here (kafka-python's ``partitioner`` hook), so consumers see nothing different.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kafka.partitioner import Partitioner


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def partition_for(node_id: str, partitions: int) -> int:
    """The partition index (0..partitions-1) for ``node_id``."""
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, got {partitions}")
    digits = "".join(c for c in node_id if c.isdigit() and c.isascii())
    stem = "".join(c for c in node_id if not (c.isdigit() and c.isascii()))
    n = int(digits) if digits else 0
    return (_h(stem) + n) % partitions


class NodePartitioner(Partitioner):
    """kafka-python partitioner applying :func:`partition_for` to the record key (the node id)."""

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if topic not in cluster.topics():
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        all_partitions = sorted(cluster.partitions_for_topic(topic))
        if serialized_key is None:
            return all_partitions[0]
        node_id = serialized_key.decode("utf-8", errors="replace")
        return all_partitions[partition_for(node_id, len(all_partitions))]
