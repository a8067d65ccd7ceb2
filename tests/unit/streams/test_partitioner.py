"""The worker's partitioner sends every key where Kafka's default partitioner would."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.partitioner import CachedPartitioner


def test_same_partition_as_the_default_for_any_key_and_partition_count() -> None:
    rng = random.Random(7)
    keys = [f"GPU-{rng.getrandbits(128):032x}".encode() for _ in range(300)]
    keys += [b"", b"\x00", "GPU-é".encode(), bytes(range(256))]
    cached = CachedPartitioner(max_keys=50)  # small: the memory is dropped and refilled
    for n in (1, 3, 4, 12, 72):
        parts = list(range(n))
        for key in keys * 2:  # the second pass reads remembered hashes
            expected = DefaultPartitioner()(key, parts, parts)
            assert cached(key, parts, parts) == expected
            # the agents' client (kafka-python) hashes the same way
            assert parts[(kafka_python_murmur2(key) & 0x7FFFFFFF) % n] == expected


def test_a_topic_that_grows_is_partitioned_by_its_new_count() -> None:
    cached = CachedPartitioner()
    key = b"GPU-grow"
    small, large = list(range(4)), list(range(12))
    assert cached(key, small, small) == DefaultPartitioner()(key, small, small)
    assert cached(key, large, large) == DefaultPartitioner()(key, large, large)


def test_no_key_goes_to_an_available_partition() -> None:
    assert CachedPartitioner()(None, [0, 1, 2], [2]) == 2
