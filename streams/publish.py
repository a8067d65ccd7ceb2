"""The worker's derived messages (closed minutes, rejections), sent a batch per partition.

A chunk closes thousands of minutes at once (one ``usage.minutely.v1`` message per ledger row).
Sent one by one through Faust's ``Topic.send``, each went through Faust's message future,
monitor and topic lookup and aiokafka's ``send`` (py-spy on ``gpumeter worker``: about a fifth
of the main thread's busy time). Here a chunk's messages are partitioned by the producer's own
partitioner (Kafka's default: murmur2 of the key) and appended to one aiokafka batch per
partition, on the Faust app's producer. Nothing changes for consumers: same topics, keys,
values and partitions.

**Delivery is still tied to the commit.** The batches go through the same producer Faust
flushes before it commits offsets, so a chunk's offsets are committed only after its derived
messages were sent. **A failed delivery ends the worker** (exit 70, nothing more committed):
each batch's future is watched, and a batch the broker refused or that timed out calls
:func:`streams.health.fatal` as soon as it completes. The chunk is redelivered by the restart;
its seconds are found counted in the ledger and its closed minutes are sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from streams.health import ExitCode, fatal

Message = tuple[bytes, bytes]  # (key, value)
Partitioner = Callable[[bytes | None, Sequence[int], Sequence[int]], int]


class DerivedPublisher:
    def __init__(
        self,
        producer: Callable[[], Any],
        partitioner: Partitioner,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``producer`` returns the started aiokafka producer (Faust's, once it runs);
        ``on_failure`` is told a failed delivery (default: end the worker)."""
        self._producer = producer
        self._partitioner = partitioner
        self._on_failure = on_failure or _exit_on_failure
        self.batches = 0
        self.messages = 0

    async def send(self, topic: str, messages: Sequence[Message]) -> None:
        """Queue ``messages`` on ``topic``; returns once they are in the producer's buffer
        (delivery is confirmed by the producer's flush, which Faust awaits before it commits)."""
        if not messages:
            return
        producer = self._producer()
        partitions = sorted(await producer.partitions_for(topic))
        choose = self._partitioner
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            p = choose(message[0], partitions, partitions)
            group = by_partition.get(p)
            if group is None:
                by_partition[p] = [message]
            else:
                group.append(message)
        for partition, group in by_partition.items():
            batch = producer.create_batch()
            for key, value in group:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._submit(producer, batch, topic, partition)
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a message for {topic} is larger than a batch")
            await self._submit(producer, batch, topic, partition)
        self.messages += len(messages)

    async def _submit(self, producer: Any, batch: Any, topic: str, partition: int) -> None:
        batch.close()
        future = await producer.send_batch(batch, topic, partition=partition)
        where = f"{topic}[{partition}]"
        future.add_done_callback(lambda f: self._delivered(f, where))
        self.batches += 1

    def _delivered(self, future: asyncio.Future[Any], where: str) -> None:
        if future.cancelled():
            self._on_failure(f"a batch of derived messages for {where} was cancelled unsent")
            return
        error = future.exception()
        if error is not None:
            self._on_failure(
                f"a batch of derived messages for {where} was not delivered: "
                f"{type(error).__name__}: {error}"
            )


def _exit_on_failure(why: str) -> None:
    fatal(ExitCode.SOFTWARE, f"{why}; exiting before its chunk is committed")
