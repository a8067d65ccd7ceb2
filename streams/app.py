"""The Faust app: one processor reading ``gpu.usage.v1`` in chunks.

Faust is used for what it is good at (consumer groups, partition assignment, offset commits,
producing derived topics); exactness does not depend on it. Faust is at-least-once in practice,
so the processor is idempotent and the chunk's offsets are acked only after ClickHouse holds the
chunk (see :mod:`streams.processor`). ``stream.take_events`` acks a chunk's events when the loop
body returns *or raises*, which is why the body below never lets a persistence error escape: it
exits the process instead, so nothing unflushed can be committed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import faust
import orjson

from schemas import topics
from streams.processor import SourceRecord, UsageProcessor
from streams.work import WorkProcessor

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    app_id: str = "gpumeter-worker"
    usage_topic: str = topics.USAGE
    rejected_topic: str = topics.REJECTED
    minutely_topic: str = topics.MINUTELY
    work_topic: str = topics.WORK
    partitions: int = 4
    chunk_records: int = 100
    chunk_within_s: float = 1.0
    #: Short group timeouts: a group join waits about half the rebalance timeout (measured on
    #: the embedded broker: Faust's default 60 s gave a 30 s join, 6 s gave 3 s).
    rebalance_timeout_s: float = 6.0
    session_timeout_s: float = 6.0
    heartbeat_s: float = 1.0
    commit_interval_s: float = 1.0


def broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip())


def source_records(events: Sequence[faust.EventT]) -> list[SourceRecord]:
    return [
        SourceRecord(e.value if isinstance(e.value, bytes) else bytes(e.value or b""),
                     e.message.topic, e.message.partition, e.message.offset)
        for e in events
    ]


def persist_or_exit(process: Callable[[list[SourceRecord]], T], records: list[SourceRecord]) -> T:
    """Run a processor on a chunk; on failure exit the process without returning.

    Synchronous on purpose: no await between counting and persisting, so a cancellation
    (shutdown) cannot slip in. And never raise: ``take_events`` acks the chunk when the loop
    body raises, which would commit offsets of data that never reached ClickHouse.
    """
    try:
        return process(records)
    except Exception:
        log.exception("persisting a chunk failed after retries; exiting without acking it "
                      "(it will be redelivered)")
        logging.shutdown()
        os._exit(70)


def create_app(
    config: WorkerConfig,
    processor: UsageProcessor,
    on_chunk: Callable[[UsageProcessor], None] | None = None,
    work_processor: WorkProcessor | None = None,
) -> faust.App:
    app = faust.App(
        config.app_id,
        broker=broker_url(config.bootstrap),
        store="memory://",
        web_enabled=False,
        topic_partitions=config.partitions,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=config.rebalance_timeout_s,
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=config.heartbeat_s,
        broker_commit_interval=config.commit_interval_s,
        producer_compression_type="lz4",
    )
    usage = app.topic(config.usage_topic, value_serializer="raw", key_serializer="raw",
                      partitions=config.partitions)
    rejected = app.topic(config.rejected_topic, value_serializer="raw", key_serializer="raw",
                         partitions=1)
    minutely = app.topic(config.minutely_topic, value_serializer="raw", key_serializer="raw",
                         partitions=config.partitions)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: object, revoked: object, **kwargs: object) -> None:
        # Another worker may own these GPUs now; never trust cached minute state across that.
        processor.reset()

    @app.agent(usage, name="usage-processor")
    async def usage_processor(stream: faust.StreamT) -> None:
        async for events in stream.take_events(config.chunk_records, within=config.chunk_within_s):
            output = persist_or_exit(processor.process, source_records(events))
            if on_chunk:
                on_chunk(processor)
            for r in output.rejected:
                await rejected.send(key=r.node_id.encode(), value=orjson.dumps({
                    "topic": r.topic, "partition": r.partition, "offset": r.offset,
                    "sample_index": r.sample_index, "code": r.code, "reason": r.reason,
                    "raw": r.raw.decode("utf-8", errors="replace"),
                }))
            for row in output.closed:
                await minutely.send(key=row.gpu_uuid.encode(), value=orjson.dumps({
                    "minute": row.minute, "tenant": row.tenant, "job": row.job,
                    "billing_class": row.billing_class, "gpu_uuid": row.gpu_uuid,
                    "mig_uuid": row.mig_uuid, "gpu_model": row.gpu_model, "node_id": row.node_id,
                    "seconds_mask": row.seconds_mask, "gpu_seconds": row.gpu_seconds,
                    "active_seconds": row.active_seconds, "sm_util_sum": row.sm_util_sum,
                    "mem_util_sum": row.mem_util_sum, "energy_mj": row.energy_mj,
                    "peak_mem_used": row.peak_mem_used, "version": row.version,
                }))

    if work_processor is not None:
        work = app.topic(config.work_topic, value_serializer="raw", key_serializer="raw",
                         partitions=1)

        @app.agent(work, name="work-processor")
        async def work_processor_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(config.chunk_records, within=config.chunk_within_s):
                persist_or_exit(work_processor.process, source_records(events))

    app.usage_processor = usage_processor  # type: ignore[attr-defined]
    app.started_at = time.monotonic()  # type: ignore[attr-defined]
    return app
