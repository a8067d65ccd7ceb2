"""The agent's Kafka producer (kafka-python): acks=all, idempotent, lz4, nodes spread over
partitions; replaceable when kafka-python's idempotent producer gets stuck for good."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from agents.partition import NodePartitioner

log = logging.getLogger("agents.kafka")  # one logger name for delivery and its producer


def make_producer(
    bootstrap: str, client_id: str = "gpumeter-agent", **overrides: Any
) -> ResettableProducer:
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=20,
        max_in_flight_requests_per_connection=5,  # the idempotent producer keeps order up to 5
        request_timeout_ms=5_000,
        delivery_timeout_ms=15_000,
        # send() must never stall sampling: while the broker is away it fails fast and the
        # batch simply stays in the spool.
        max_block_ms=100,
        max_request_size=8 * 1024**2,
        reconnect_backoff_max_ms=2_000,
        # A fixed protocol version: without it the constructor probes the broker and raises
        # when the broker is down at start-up, before the agent has sampled anything.
        # Kafka >= 3.0 and the embedded Tansu broker speak it.
        api_version=(3, 9),
        # Nodes spread evenly over partitions, each node always on the same one (agents/partition.py).
        partitioner=NodePartitioner(),
    )
    config.update(overrides)
    return ResettableProducer(config)


class ResettableProducer:
    """A KafkaProducer that can be replaced by a fresh one.

    A new producer gets a new producer id; every unacknowledged batch is then re-sent from the
    spool (duplicates are harmless: sample ids are deterministic). Replacements are spaced by a
    backoff that doubles from ``min_backoff_s`` to ``max_backoff_s`` and returns to the minimum
    once a send succeeds: one producer is shared by every node of the process.
    """

    def __init__(
        self, config: dict[str, Any], *, min_backoff_s: float = 1.0, max_backoff_s: float = 30.0
    ) -> None:
        self._config = config
        self._producer = self._new()
        self.generation = 0
        self.resets = 0
        #: Times a delivery saw the broker's log go backwards. Shared by every node of the
        #: process: a broker that lost one partition's data lost the others' too.
        self.log_rewinds = 0
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self._backoff_s = min_backoff_s
        self._last_reset = time.monotonic()

    def _new(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(**self._config)

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> Any:
        return self._producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions; waits for the broker's metadata (so: connected)."""
        return set(self._producer.partitions_for(topic) or ())

    def healthy(self) -> None:
        """A send succeeded: the next replacement may come soon again."""
        self._backoff_s = self.min_backoff_s

    def reset(self, reason: str = "", *, force: bool = False) -> bool:
        """Replace the producer, unless the last replacement is more recent than the backoff."""
        if not force and time.monotonic() - self._last_reset < self._backoff_s:
            return False
        self._last_reset = time.monotonic()
        self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)
        old, self._producer = self._producer, self._new()
        self.generation += 1
        self.resets += 1
        log.warning(
            "replaced the Kafka producer (%s); next replacement no sooner than %.0f s",
            reason or "asked",
            self._backoff_s,
        )
        # Its pending batches fail; delivery re-sends them. kafka-python raises a variety of
        # errors from close() on a producer whose broker is gone; none matters here.
        with contextlib.suppress(Exception):
            old.close(timeout=0)
        return True

    def close(self, timeout: float | None = None) -> None:
        try:
            self._producer.close(timeout=timeout)
        except Exception as exc:  # e.g. batches still pending while the broker is away
            log.warning("closing the Kafka producer: %s", exc)
