"""Derived messages sent in batches reach the partition Kafka's default partitioner picks, each
once and in order; a batch that is not delivered is reported, never dropped silently."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.partitioner import CachedPartitioner
from streams.publish import DerivedPublisher


async def _publish_and_read(bootstrap: str, topic: str, chunks: list[list[tuple[bytes, bytes]]]):
    # small batches: every chunk spans several batches per partition
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=2048, compression_type="lz4"
    )
    await producer.start()
    failures: list[str] = []
    publisher = DerivedPublisher(lambda: producer, CachedPartitioner(), failures.append)
    try:
        for chunk in chunks:
            await publisher.send(topic, chunk)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    got: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    stamps: list[int] = []
    want = sum(len(c) for c in chunks)
    try:
        while sum(len(v) for v in got.values()) < want:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, msgs in batch.items():
                got[tp.partition].extend((m.key, m.value) for m in msgs)
                stamps.extend(m.timestamp for m in msgs)
    finally:
        await consumer.stop()
    return got, failures, publisher, stamps


def test_every_message_lands_once_where_the_default_partitioner_puts_it(
    broker: Any, topic_factory: Any
) -> None:
    topic = topic_factory("minutely", partitions=4)
    chunks = [
        [
            (f"GPU-{g:04d}".encode(), f'{{"chunk":{c},"gpu":{g},"pad":"{"x" * 300}"}}'.encode())
            for g in range(150)
        ]
        for c in range(3)
    ]
    sent_ms = time.time() * 1000
    got, failures, publisher, stamps = asyncio.run(
        _publish_and_read(broker.bootstrap, topic, chunks)
    )
    assert failures == []
    parts = [0, 1, 2, 3]
    expected: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for chunk in chunks:
        for key, value in chunk:
            expected[DefaultPartitioner()(key, parts, parts)].append((key, value))
    assert dict(got) == dict(expected)  # each once, on its partition, in the order sent
    assert publisher.messages == 450
    assert publisher.batches > 4 * 3  # 2 KB batches: more than one per partition and chunk
    # stamped with the time they were sent (time-based retention applies to the topic)
    assert all(sent_ms - 1000 <= ms <= time.time() * 1000 + 1000 for ms in stamps)


class _FailingProducer:
    """An aiokafka-shaped producer whose batches complete as the broker would report them."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.futures: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> Any:
        class Batch:
            def append(self, **kw: Any) -> object:
                return object()

            def close(self) -> None:
                pass

        return Batch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.outcome == "error":
            future.set_exception(TimeoutError("no ack from the broker"))
        elif self.outcome == "cancel":
            future.cancel()
        else:
            future.set_result(None)
        self.futures.append(future)
        return future


@pytest.mark.parametrize(
    ("outcome", "reported"),
    [("error", "not delivered: TimeoutError: no ack from the broker"), ("cancel", "cancelled")],
)
def test_a_batch_not_delivered_is_reported(outcome: str, reported: str) -> None:
    failures: list[str] = []

    async def run() -> None:
        producer = _FailingProducer(outcome)
        publisher = DerivedPublisher(lambda: producer, CachedPartitioner(), failures.append)
        await publisher.send("usage.minutely.v1", [(b"GPU-1", b"{}"), (b"GPU-2", b"{}")])
        await asyncio.sleep(0)  # done callbacks run on the next loop pass

    asyncio.run(run())
    assert failures and all(reported in f for f in failures)
    assert all(f.startswith("a batch of derived messages for usage.minutely.v1[") for f in failures)


def test_delivered_batches_report_nothing() -> None:
    failures: list[str] = []

    async def run() -> None:
        producer = _FailingProducer("ok")
        publisher = DerivedPublisher(lambda: producer, CachedPartitioner(), failures.append)
        await publisher.send("t", [(b"k", b"v")])
        await publisher.send("t", [])
        await asyncio.sleep(0)
        assert len(producer.futures) == 1

    asyncio.run(run())
    assert failures == []
