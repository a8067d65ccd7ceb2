"""How far a consumer group is behind on a topic, per partition, as any observer sees it.

A worker sees only the partitions assigned to it. A group member killed with -9 keeps its
partitions until its session expires, and nobody reads them meanwhile: a worker caught up on
its own partitions is not a group caught up on the topic. This reads the group's *committed*
offsets for every partition of the topic, so batch runs (``--exit-when-idle``, the demo, the
tests) can wait for the whole topic, whoever holds which partition.

The log end is read from a *fetch* response's high watermark, not from ListOffsets: the
embedded broker's ListOffsets end trails the true end while a producer batches (11,474 for
11,520 records, for good), so "committed >= end offset" could declare a run done early.
"""

from __future__ import annotations

import time
from typing import Any


class GroupLag:
    """Committed offsets of a consumer group vs the topic's true log end (kafka-python)."""

    def __init__(self, bootstrap: str, group: str, topic: str, **options: Any) -> None:
        """``options``: kafka-python client options (security: ``kafka_python_options``)."""
        from kafka import KafkaAdminClient, KafkaConsumer

        self.group = group
        self.topic = topic
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, **options)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, **options)
        self.probe = KafkaConsumer(
            bootstrap_servers=bootstrap,
            **options,
            enable_auto_commit=False,
            max_poll_records=1,
            fetch_max_wait_ms=200,
        )
        self._last: tuple[int, int, float] | None = None

    def partitions(self) -> dict[int, tuple[int, int]]:
        """Per partition of the topic: (committed offset, log end); -1 if nothing committed."""
        from kafka import TopicPartition

        parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        ends = self.log_ends(tps) if tps else {}
        committed = self._committed()
        return {tp.partition: (committed.get(tp.partition, -1), ends[tp]) for tp in tps}

    def behind(self) -> dict[int, int]:
        """Partitions whose committed offset is short of the log end, with the records left.

        A partition with records and no committed offset counts in full (from its first
        retained offset, a lower bound: 0 is assumed where the log start is unknown)."""
        return {
            p: end - max(committed, 0)
            for p, (committed, end) in self.partitions().items()
            if max(committed, 0) < end
        }

    def read(self) -> tuple[int, int]:
        """(sum of committed offsets, sum of log ends) over the topic's partitions."""
        parts = self.partitions()
        return (
            sum(max(c, 0) for c, _ in parts.values()),
            sum(e for _, e in parts.values()),
        )

    def _committed(self) -> dict[int, int]:
        from kafka.errors import GroupIdNotFoundError

        # kafka-python 3 renamed list_consumer_group_offsets to list_group_offsets.
        try:
            if hasattr(self.admin, "list_group_offsets"):
                offsets = self.admin.list_group_offsets(self.group).get(self.group, {})
            else:
                offsets = self.admin.list_consumer_group_offsets(self.group)
        except GroupIdNotFoundError:  # the group does not exist yet (still joining)
            return {}
        # Anything else (coordinator moving, broker away, an ACL refusing OffsetFetch) is
        # raised to the caller: streams.idle_exit retries what can pass and ends the run on
        # what cannot, instead of reading "nothing committed" for ever.
        return {
            tp.partition: int(getattr(o, "offset", o))
            for tp, o in offsets.items()
            if tp.topic == self.topic
        }

    def log_ends(self, tps: list[Any], timeout_s: float = 5.0) -> dict[Any, int]:
        """The true end of each partition's log: fetch its last batch, read the high watermark."""
        listed = self.consumer.end_offsets(tps)
        self.probe.assign(tps)
        for tp in tps:  # ListOffsets' end is at most one batch short: fetch from just before it
            self.probe.seek(tp, max(listed[tp] - 1, 0))
        ends: dict[Any, int] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            self.probe.poll(timeout_ms=200)
            ends = {tp: self.probe.highwater(tp) for tp in tps}
            if all(v is not None for v in ends.values()) or time.monotonic() > deadline:
                break
        # a partition that gave no fetch response in time: ListOffsets' figure, a lower bound
        return {tp: listed[tp] if v is None else max(v, listed[tp]) for tp, v in ends.items()}

    def caught_up(self, settle_s: float = 1.0) -> bool:
        """True once committed == end (> 0) on every partition, unchanged across two reads
        ``settle_s`` apart."""
        parts = self.partitions()
        committed = sum(max(c, 0) for c, _ in parts.values())
        end = sum(e for _, e in parts.values())
        now = time.monotonic()
        last, self._last = self._last, (committed, end, now)
        if not end or any(max(c, 0) < e for c, e in parts.values()):
            return False
        if last is None or last[:2] != (committed, end):
            return False
        if now - last[2] < settle_s:
            self._last = last  # keep the older read: the two must be settle_s apart
            return False
        return True

    def close(self) -> None:
        for c in (self.probe, self.consumer, self.admin):
            c.close()
