"""The Faust app: one processor reading ``gpu.usage.v1`` in chunks.

Faust is used for what it is good at (consumer groups, partition assignment, offset commits,
producing derived topics); exactness does not depend on it. Faust is at-least-once in practice,
so the processor is idempotent and the chunk's offsets are acked only after ClickHouse holds the
chunk (see :mod:`streams.processor`). ``stream.take_events`` acks a chunk's events when the loop
body returns *or raises*, which is why no exception may leave a processor body: every one ends
the process (:func:`guarded`, :func:`persist_or_exit`), so nothing unflushed can be committed.

Left to Faust, a processor that raised was restarted once and then stayed dead while the
consumer kept fetching and committing offsets: the process looked healthy and everything after
was lost (issue 8). Here a processor or timer that raises ends the worker with
:attr:`~streams.health.ExitCode.SOFTWARE`; its supervisor restarts it and redelivery keeps
totals exact.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import faust
import orjson

from schemas import topics
from schemas.frame import WHOLE
from streams.backpressure import process_with_backpressure
from streams.consumer import ConsumerCheck, Progress
from streams.health import ExitCode, Health, fatal
from streams.partitioner import CachedPartitioner
from streams.preemption import PreemptionProcessor
from streams.processor import UsageProcessor
from streams.publish import DerivedPublisher
from streams.records import RejectedRecord, SourceRecord
from streams.work import WorkProcessor

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Bounds of a message on ``gpu.usage.rejected.v1``. The producer refuses messages over 1 MB,
#: and a rejection that cannot be sent must never stop counting, so a rejection carries an
#: excerpt of the record and the SHA-256 of all of it; the raw bytes are in ``usage_rejected``.
REJECTION_EXCERPT_BYTES = 512
REJECTION_REASON_CHARS = 300
REJECTION_ID_CHARS = 128


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    app_id: str = "gpumeter-worker"
    usage_topic: str = topics.USAGE
    rejected_topic: str = topics.REJECTED
    minutely_topic: str = topics.MINUTELY
    work_topic: str = topics.WORK
    preemptions_topic: str = topics.PREEMPTIONS
    partitions: int = 4
    #: Records per chunk (one validate-count-persist pass, one set of ClickHouse inserts and
    #: ledger reads): those cost about the same whatever the chunk's size, and Faust fetches
    #: nothing while a chunk is processed, so larger chunks spread both over more GPU-seconds
    #: (``gpumeter worker`` on bench/bench_worker.py's 12 h replay, steady, interleaved runs:
    #: 400 records 135-143k GPU-s/s, 800 169-176k with a fifth less CPU; on 24 h, 1600 was
    #: slower again, 135k against 176k). A chunk closes sooner when ``chunk_within_s`` passes,
    #: so a quiet topic is not delayed. The integration tests pin 100 (their crash and kill
    #: points are placed by chunks of fewer than 150 records).
    chunk_records: int = 800
    chunk_within_s: float = 1.0
    #: Bytes fetched per partition per request (Faust's default, 1 MiB, is ~40 records of an
    #: 8-GPU node's minute: several round trips to fill one chunk).
    fetch_bytes: int = 8 << 20
    #: The derived topics' producer waits this long to batch messages (Faust's default 0 sent
    #: each closed minute as a request of its own: ~6 % of the worker's time in socket writes).
    producer_linger_s: float = 0.02
    #: Short group timeouts: a group join waits about half the rebalance timeout (measured on
    #: the embedded broker: Faust's default 60 s gave a 30 s join, 6 s gave 3 s). The worker
    #: CLI passes the configured ones (``faust_options``); these defaults serve tests.
    rebalance_timeout_s: float = 6.0
    session_timeout_s: float = 6.0
    heartbeat_s: float = 1.0
    commit_interval_s: float = 1.0
    #: Faust's own state (``<app-id>-data/``); None: Faust's default, the current directory.
    datadir: Path | None = None
    #: Extra ``faust.App`` options (security, group timeouts from settings); they win over
    #: the fields above.
    faust_options: tuple[tuple[str, Any], ...] = ()
    #: Seconds between liveness / lag / log-rewind checks.
    check_interval_s: float = 1.0


def broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip())


def source_records(events: Sequence[faust.EventT]) -> list[SourceRecord]:
    return [
        SourceRecord(
            e.value if isinstance(e.value, bytes) else bytes(e.value or b""),
            e.message.topic,
            e.message.partition,
            e.message.offset,
        )
        for e in events
    ]


def persist_or_exit(process: Callable[[list[SourceRecord]], T], records: list[SourceRecord]) -> T:
    """Run a processor on a chunk; on failure exit the process without returning.

    Synchronous on purpose: no await between counting and persisting, so a cancellation
    (shutdown) cannot slip in. And never raise: ``take_events`` acks the chunk when the loop
    body raises, which would commit offsets of data that never reached ClickHouse.
    """
    try:
        return process_with_backpressure(process, records)
    except Exception:
        fatal(
            ExitCode.SOFTWARE,
            "persisting a chunk failed after retries; exiting without "
            "acking it (it will be redelivered)",
            exc_info=True,
        )
        raise  # unreachable: fatal() does not return


def guarded(name: str, body: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap a processor (Faust agent) or timer body: any exception ends the process.

    ``fatal`` runs synchronously in the handler, with no await between the exception and the
    exit, so neither the chunk's ack (``take_events``' finally) nor an offset commit can run.
    ``CancelledError`` (a BaseException) passes through: that is Faust stopping the body.
    """

    @functools.wraps(body)
    async def run(*args: Any) -> None:
        try:
            await body(*args)
        except Exception as exc:
            fatal(
                ExitCode.SOFTWARE,
                f"{name} raised {type(exc).__name__}: {_short(str(exc))}; "
                "exiting without acking its chunk (it will be redelivered)",
                exc_info=True,
            )

    return run


def _short(text: str, limit: int = REJECTION_REASON_CHARS) -> str:
    text = _valid_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _valid_text(text: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates, which JSON allows, become ``\\udxxx``)."""
    if text.isascii():  # the usual id: nothing to replace, no copy
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rejection_message(r: RejectedRecord) -> tuple[bytes, bytes]:
    """(key, value) for ``gpu.usage.rejected.v1``: bounded whatever the record held.

    At most ~2 KB of excerpt (512 bytes, each at most 4 characters once escaped), 300
    characters of reason and 128 of node id: far under the producer's 1 MB limit.
    """
    node = _short(r.node_id, REJECTION_ID_CHARS)
    value = orjson.dumps(
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "sample_index": r.sample_index,
            "code": _short(r.code, REJECTION_ID_CHARS),
            "reason": _short(r.reason),
            "node_id": node,
            "raw_bytes": len(r.raw),
            "raw_sha256": hashlib.sha256(r.raw).hexdigest(),
            "raw_excerpt": r.raw[:REJECTION_EXCERPT_BYTES].decode("utf-8", "backslashreplace"),
            "raw_truncated": len(r.raw) > REJECTION_EXCERPT_BYTES,
        }
    )
    return node.encode(), value


def minutely_message(row: Any) -> tuple[bytes, bytes]:
    sm_util_sum, mem_util_sum, device_energy_mj = row.sums()
    held = row.claimed_mask & ~row.released_mask  # MinuteRow.seconds_mask, taken once
    seconds = held.bit_count()
    gpu = _valid_text(row.gpu_uuid)
    return gpu.encode(), orjson.dumps(
        {
            "minute": row.minute,
            "tenant": _opt_text(row.tenant),
            "job": _opt_text(row.job),
            "billing_class": _opt_text(row.billing_class),
            "gpu_uuid": gpu,
            "mig_uuid": _opt_text(row.mig_uuid),
            "gpu_model": _opt_text(row.gpu_model),
            "node_id": _opt_text(row.node_id),
            "share_milli": row.share_milli,  # 1..1000 (contract v2: shared GPUs)
            "seconds_mask": held,
            "gpu_seconds": seconds,
            "gpu_milli_seconds": seconds * row.share_milli,
            "active_seconds": (row.claimed_active & held).bit_count(),
            "sm_util_sum": sm_util_sum,
            "mem_util_sum": mem_util_sum,
            "energy_mj": device_energy_mj * row.share_milli // WHOLE,  # the row's share
            "peak_mem_used": row.peak_mem_used,
            "version": row.version,
        }
    )


def _opt_text(v: str | None) -> str | None:
    return None if v is None else _valid_text(v)


def create_app(
    config: WorkerConfig,
    processor: UsageProcessor,
    on_chunk: Callable[[UsageProcessor], None] | None = None,
    work_processor: WorkProcessor | None = None,
    health: Health | None = None,
    preemption_processor: PreemptionProcessor | None = None,
) -> faust.App:
    health = health or Health(stall_after_s=120.0)
    partitioner = CachedPartitioner()
    options: dict[str, Any] = dict(
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
        producer_linger=config.producer_linger_s,
        producer_partitioner=partitioner,
        consumer_max_fetch_size=config.fetch_bytes,
    )
    if config.datadir is not None:
        options["datadir"] = str(config.datadir)
    options.update(dict(config.faust_options))
    app = faust.App(config.app_id, **options)
    usage = app.topic(
        config.usage_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=config.partitions,
    )
    progress = Progress()
    check = ConsumerCheck(app, health, progress)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: object, revoked: object, **kwargs: object) -> None:
        # Another worker may own these GPUs now; never trust cached minute state across that.
        processor.reset()
        check.revoked(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: object, assigned: object, **kwargs: object) -> None:
        check.assigned()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _shutdown(sender: object, **kwargs: object) -> None:
        await check.probe.stop()

    # derived messages: a batch per partition on Faust's own producer (streams/publish.py)
    # (aiokafka's producer under Faust's: Faust's own API sends one message at a time)
    publisher = DerivedPublisher(
        lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
        partitioner,
    )

    async def send_rejections(records: Sequence[RejectedRecord]) -> None:
        await publisher.send(config.rejected_topic, list(map(rejection_message, records)))

    async def usage_body(stream: faust.StreamT) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]  # not in faust's StreamT
            config.chunk_records, within=config.chunk_within_s
        ):
            health.chunk_begins()
            records = source_records(events)
            output = persist_or_exit(processor.process, records)
            if on_chunk:
                on_chunk(processor)
            await send_rejections(output.rejected)
            await publisher.send(config.minutely_topic, list(map(minutely_message, output.closed)))
            progress.done(events)
            health.chunk_done()

    usage_processor = app.agent(usage, name="usage-processor")(
        guarded("the usage processor", usage_body)
    )

    if work_processor is not None:
        work = app.topic(
            config.work_topic, value_serializer="raw", key_serializer="raw", partitions=1
        )

        async def work_body(stream: faust.StreamT) -> None:
            async for events in stream.take_events(  # type: ignore[attr-defined]
                config.chunk_records, within=config.chunk_within_s
            ):
                health.chunk_begins()
                records = source_records(events)
                refused = persist_or_exit(work_processor.process, records)
                await send_rejections(refused)
                progress.done(events)
                health.chunk_done()

        app.agent(work, name="work-processor")(guarded("the work processor", work_body))

    if preemption_processor is not None:
        preemptions = app.topic(
            config.preemptions_topic, value_serializer="raw", key_serializer="raw", partitions=1
        )

        async def preemption_body(stream: faust.StreamT) -> None:
            async for events in stream.take_events(  # type: ignore[attr-defined]
                config.chunk_records, within=config.chunk_within_s
            ):
                health.chunk_begins()
                records = source_records(events)
                output = persist_or_exit(preemption_processor.process, records)
                await send_rejections(output)
                progress.done(events)
                health.chunk_done()

        app.agent(preemptions, name="preemption-processor")(
            guarded("the preemption processor", preemption_body)
        )

    app.timer(config.check_interval_s)(guarded("the consumer check", check.run))

    app.usage_processor = usage_processor  # type: ignore[attr-defined]
    app.started_at = time.monotonic()  # type: ignore[attr-defined]
    app.health = health  # type: ignore[attr-defined]
    return app
