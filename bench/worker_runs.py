"""The worker bench's runs: publishing, a bare aiokafka read loop, the processor's handler and
stage timer, and the full ``gpumeter worker`` subprocess timed from outside through its
consumer group's committed offsets (so start-up and steady state are measured apart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def publish(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]
) -> dict[tuple[int, int], int]:
    """Publish; return the device-seconds of each record by (partition, offset)."""
    from agents.kafka import make_producer

    producer = make_producer(
        bootstrap, request_timeout_ms=30_000, delivery_timeout_ms=120_000, max_block_ms=30_000
    )
    futures = [(producer.send(topic, key=k, value=v), n) for k, v, n in records]
    producer.flush(timeout=120)
    where = {}
    for f, n in futures:
        meta = f.get(timeout=1)
        where[(meta.partition, meta.offset)] = n
    producer.close(timeout=5)
    return where


async def consume(
    bootstrap: str, topic: str, n_records: int, handle: Callable[[list], None], chunk: int
) -> float:
    """Read every record of ``topic`` from the beginning, passing chunks of ``chunk`` messages
    (fewer only when none arrive for 1 s, or at the end) to ``handle``, as the worker's
    ``take_events(chunk, within=1.0)`` does; return the seconds from the first fetch to the
    last handle."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not parts:
            await consumer._client.force_metadata_update()
            parts = sorted(consumer.partitions_for_topic(topic) or ())
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        got = 0
        pending: list = []
        t0 = time.perf_counter()
        while got < n_records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=chunk - len(pending))
            msgs = [m for ms in batches.values() for m in ms]
            pending.extend(msgs)
            full = len(pending) >= chunk or got + len(pending) >= n_records
            if pending and (full or not msgs):
                handle(pending)
                got += len(pending)
                pending = []
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


def processor_for(dsn: str, database: str) -> tuple[Any, Any]:
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate
    from streams.clickhouse.sink import LedgerSink
    from streams.processor import UsageProcessor

    client = connect(dsn, database=database)
    migrate(client)
    return UsageProcessor(LedgerSink(client)), client


def processor_handler(proc: Any) -> Callable[[list], None]:
    from streams.records import SourceRecord

    def handle(msgs: list) -> None:
        proc.process([SourceRecord(m.value, m.topic, m.partition, m.offset) for m in msgs])

    return handle


def ledger_milli_by_tenant(client: Any) -> dict[str, int]:
    rows = client.query(
        "SELECT tenant, sum(gpu_milli_seconds) FROM usage_minutely FINAL GROUP BY tenant"
    ).result_rows
    return {t: int(v) for t, v in rows}


class StageTimer:
    """Wall seconds spent in each step of :meth:`UsageProcessor.process` (wraps the functions
    it calls; a few hundred calls per run, so the wrapping costs nothing measurable)."""

    def __init__(self, proc: Any) -> None:
        import streams.processor as module

        self.seconds: dict[str, float] = {}
        self._patches = [
            (module, "parse", "validate"),
            (proc.aggregator, "missing", "aggregate"),
            (proc.aggregator, "add", "aggregate"),
            (proc.sink, "load", "reload state"),
            (proc.sink, "write_raw", "raw archive"),
            (proc.sink, "write_ledger", "ledger"),
        ]
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, fn: Callable, stage: str) -> Callable:
        seconds = self.seconds
        seconds.setdefault(stage, 0.0)

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[stage] += time.perf_counter() - t

        return timed

    def __enter__(self) -> StageTimer:
        for obj, name, stage in self._patches:
            fn = getattr(obj, name)
            self._saved.append((obj, name, obj.__dict__.get(name)))
            setattr(obj, name, self._wrap(fn, stage))
        return self

    def __exit__(self, *exc: object) -> None:
        for obj, name, old in reversed(self._saved):
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


class CommitWatch(threading.Thread):
    """Polls a consumer group's committed offsets, timestamping each change, so a run's
    start-up (until the first commit) and steady state (first to last commit) are apart."""

    def __init__(self, bootstrap: str, group: str, topic: str, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaAdminClient

        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.group, self.topic, self.period_s = group, topic, period_s
        self.samples: list[tuple[float, dict[int, int]]] = []  # (perf_counter, committed)
        self._halt = threading.Event()
        self.error = ""  # the last failed read (the group may not exist yet)

    def run(self) -> None:
        last: dict[int, int] = {}
        while not self._halt.is_set():
            try:  # kafka-python 3 renamed list_consumer_group_offsets to list_group_offsets
                if hasattr(self.admin, "list_group_offsets"):
                    offsets = self.admin.list_group_offsets(self.group).get(self.group, {})
                else:
                    offsets = self.admin.list_consumer_group_offsets(self.group)
            except Exception as exc:  # the group does not exist yet
                self.error = repr(exc)
                offsets = {}
            now = {
                tp.partition: int(getattr(o, "offset", o))
                for tp, o in offsets.items()
                if tp.topic == self.topic and int(getattr(o, "offset", o)) >= 0
            }
            if now != last:
                self.samples.append((time.perf_counter(), now))
                last = now
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.admin.close()


def committed_seconds(committed: dict[int, int], where: dict[tuple[int, int], int]) -> int:
    """Device-seconds in the records below each partition's committed offset."""
    return sum(n for (p, off), n in where.items() if off < committed.get(p, 0))


def run_worker(
    bootstrap: str,
    topic: str,
    data_dir: Path,
    app_id: str,
    idle_s: float,
    where: dict[tuple[int, int], int],
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """``gpumeter worker --exit-when-idle`` (plus ``extra`` arguments) over the topic, watched
    from outside: wall time, start-up (to the first commit) and the steady rate from the first
    commit to the last."""
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir)}
    env.pop("GPUMETER_CLICKHOUSE_DSN", None)
    cmd = [sys.executable, "-m", "gpumeter.cli", "worker", "--bootstrap", bootstrap]
    cmd += ["--app-id", app_id, "--topic", topic, "--exit-when-idle", str(idle_s), *(extra or [])]
    watch = CommitWatch(bootstrap, app_id, topic)
    watch.start()
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=900, cwd=ROOT)
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    watch.stop()
    stats: dict[str, Any] = {}
    for line in (proc.stdout + proc.stderr).decode(errors="replace").splitlines():
        if "WORKER-STATS " in line:  # Faust may send stdout to its logger (stderr)
            stats = json.loads(line.split("WORKER-STATS ", 1)[1])
    total = sum(where.values())
    if proc.returncode != 0 or stats.get("new_seconds") != total:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"worker run failed: rc {proc.returncode}, stats {stats}")
    points = [(t, committed_seconds(c, where)) for t, c in watch.samples]
    first = next((p for p in points if p[1] > 0), None)
    last = next((p for p in points if p[1] == total), None)
    if first is None or last is None or last[0] <= first[0]:
        raise SystemExit(
            f"worker run: commits not seen in full ({len(points)} points; {watch.error})"
        )
    return {
        "wall": wall,
        "stats": stats,
        "startup_s": first[0] - t0,
        "steady_rate": (last[1] - first[1]) / (last[0] - first[0]),
        "steady_s": last[0] - first[0],
        "steady_seconds": last[1] - first[1],
        "maxrss_kb": _child_maxrss_kb(),
        # the worker's CPU (user + system), start-up included: on a shared machine the wall
        # rates depend on what else runs, GPU-seconds per CPU-second much less
        "cpu_s": cpu,
    }


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _child_maxrss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
