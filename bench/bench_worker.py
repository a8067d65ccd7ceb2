"""GPU-seconds per second through one stream worker, next to a bare consumer baseline.

Publishes a simulated window (default 4 nodes x 8 GPUs x 1 h = 115,200 samples, one record per
node per 60 s, as ``gpumeter agent --simulate`` sends them) to an embedded broker, then times:

- baseline: a bare aiokafka loop that reads the records, parses them with orjson and
  aggregates per (tenant, job, GPU, minute) into a dict (the floor from DESIGN.md);
- processor: the same aiokafka loop feeding :class:`streams.processor.UsageProcessor` with a
  :class:`streams.clickhouse.sink.LedgerSink` on an embedded chDB, in chunks of 100 records
  (what the Faust app does, without Faust): validation, exact counting, raw archive, ledger;
- processor, in memory: the same records already fetched (no Kafka), to separate the
  processor's own cost; its ClickHouse part (``flush_seconds``) is shown too;
- worker (``--worker``): the full ``gpumeter worker --exit-when-idle`` subprocess (Faust),
  wall time from start to exit, with and without the idle wait and Faust's startup.

Every figure is GPU-seconds (samples) per wall second, median of 3 runs (the worker: 1 run),
and its ratio to the baseline measured in the same run: the machine is shared and noisy, so
compare ratios, not absolute numbers, across runs.

    python bench/bench_worker.py                 # 4 x 8 GPUs x 1 h
    python bench/bench_worker.py --worker        # also the full Faust worker (slow start)
    python bench/bench_worker.py --profile 30    # cProfile the in-memory processor (top 30)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import orjson  # noqa: E402

from agents.simulator import SimulatedFleet  # noqa: E402
from schemas.topics import TopicSpec  # noqa: E402
from schemas.usage import encode_batch  # noqa: E402

RUNS = 3
CHUNK_RECORDS = 100  # WorkerConfig.chunk_records


def make_records(
    nodes: int, gpus: int, seconds: int, start: int, flush: int
) -> list[tuple[bytes, bytes, int]]:
    """(key, value, n_samples) per record, in time order across nodes (as agents publish)."""
    fleet = SimulatedFleet(nodes=nodes, gpus_per_node=gpus, start=start, duration_s=seconds)
    samplers = fleet.samplers()
    out = []
    for seq, t0 in enumerate(range(start, start + seconds, flush)):
        for sampler in samplers:
            samples = [
                s for ts in range(t0, min(t0 + flush, start + seconds)) for s in sampler.sample(ts)
            ]
            payload = encode_batch(sampler.node_id, f"bench-{sampler.node_id}", seq, samples, [])
            out.append((sampler.node_id.encode(), payload, len(samples)))
    return out


def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    from agents.kafka import make_producer

    producer = make_producer(
        bootstrap, request_timeout_ms=30_000, delivery_timeout_ms=120_000, max_block_ms=30_000
    )
    futures = [producer.send(topic, key=k, value=v) for k, v, _ in records]
    producer.flush(timeout=120)
    for f in futures:
        f.get(timeout=1)
    producer.close(timeout=5)


async def consume(
    bootstrap: str, topic: str, n_records: int, handle: Callable[[list], None], chunk: int
) -> float:
    """Read every record of ``topic`` from the beginning, passing lists of up to ``chunk``
    messages to ``handle``; return the seconds from the first fetch to the last handle."""
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
        t0 = time.perf_counter()
        while got < n_records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=chunk)
            msgs = [m for ms in batches.values() for m in ms]
            if msgs:
                handle(msgs)
                got += len(msgs)
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


def baseline_handler() -> tuple[Callable[[list], None], dict]:
    agg: dict[tuple, list] = {}

    def handle(msgs: list) -> None:
        for m in msgs:
            doc = orjson.loads(m.value)
            for s in doc["samples"]:
                ts = s["ts"]
                key = (s["tenant"], s["job"], s["gpu_uuid"], ts - ts % 60)
                a = agg.get(key)
                if a is None:
                    a = agg[key] = [0, 0.0, 0.0, 0]
                a[0] += 1
                a[1] += s["sm_util"]
                a[2] += s["mem_util"]
                a[3] += round(s["energy_j"] * 1000)

    return handle, agg


def processor_for(dsn: str, database: str):  # noqa: ANN201
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate
    from streams.clickhouse.sink import LedgerSink
    from streams.processor import UsageProcessor

    client = connect(dsn, database=database)
    migrate(client)
    return UsageProcessor(LedgerSink(client)), client


def processor_handler(proc) -> Callable[[list], None]:  # noqa: ANN001
    from streams.records import SourceRecord

    def handle(msgs: list) -> None:
        proc.process([SourceRecord(m.value, m.topic, m.partition, m.offset) for m in msgs])

    return handle


class StageTimer:
    """Wall seconds spent in each step of :meth:`UsageProcessor.process` (wraps the functions
    it calls; a few hundred calls per run, so the wrapping costs nothing measurable)."""

    def __init__(self, proc) -> None:  # noqa: ANN001
        import streams.processor as module

        self.seconds: dict[str, float] = {}
        self._module = module
        self._patches = [
            (module, "parse_batch", "validate (parse_batch)"),
            (proc.aggregator, "missing", "aggregate"),
            (proc.aggregator, "add", "aggregate"),
            (proc.sink, "load", "reload state"),
            (proc.sink, "write_raw", "write raw"),
            (proc.sink, "write_ledger", "write ledger"),
        ]
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, fn: Callable, stage: str) -> Callable:
        seconds = self.seconds
        seconds.setdefault(stage, 0.0)

        def timed(*a, **kw):  # noqa: ANN002, ANN003, ANN202
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


def check_event_ids(client, n: int) -> None:  # noqa: ANN001
    """The archived event ids are exactly uuid5(SAMPLE_NAMESPACE, 'gpu|mig|ts')."""
    import uuid

    from schemas.usage import SAMPLE_NAMESPACE

    rows = client.query(
        f"SELECT gpu_uuid, mig_uuid, toUnixTimestamp(ts), event_id FROM usage_seconds LIMIT {n}"
    ).result_rows
    assert rows, "no archived samples"
    for gpu, mig, ts, eid in rows:
        want = uuid.uuid5(SAMPLE_NAMESPACE, f"{gpu}|{mig}|{ts}")
        assert eid == want, (gpu, mig, ts, eid, want)


def run_worker(
    bootstrap: str, topic: str, data_dir: Path, app_id: str, idle_s: float, n_samples: int
) -> dict:
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir)}
    env.pop("GPUMETER_CLICKHOUSE_DSN", None)
    cmd = [
        sys.executable,
        "-m",
        "gpumeter.cli",
        "worker",
        "--bootstrap",
        bootstrap,
        "--app-id",
        app_id,
        "--topic",
        topic,
        "--exit-when-idle",
        str(idle_s),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, env=env, timeout=600, cwd=Path(__file__).resolve().parents[1]
    )
    wall = time.perf_counter() - t0
    stats = {}
    # Faust may redirect stdout to its logger (stderr): look in both.
    for line in (proc.stdout + proc.stderr).decode(errors="replace").splitlines():
        if "WORKER-STATS " in line:
            stats = json.loads(line.split("WORKER-STATS ", 1)[1])
    if proc.returncode != 0 or stats.get("new_seconds") != n_samples:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"worker run failed: rc {proc.returncode}, stats {stats}")
    return {"wall": wall, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3600, help="simulated seconds (default 1 h)")
    ap.add_argument("--flush", type=int, default=60, help="seconds per record (default 60)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--worker", action="store_true", help="also time `gpumeter worker` (Faust)")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the in-memory processor run and print the top N functions",
    )
    args = ap.parse_args(argv)

    from infra.embedded.broker import EmbeddedBroker
    from streams.records import SourceRecord

    # Recent seconds: the validator rejects samples more than 5 minutes in the future.
    start = (int(time.time()) // 3600 - 2) * 3600 - args.seconds // 3600 * 3600
    t0 = time.perf_counter()
    records = make_records(args.nodes, args.gpus, args.seconds, start, args.flush)
    n_samples = sum(n for *_, n in records)
    n_bytes = sum(len(v) for _, v, _ in records)
    print(
        f"{len(records):,} records, {n_samples:,} samples ({args.nodes} nodes x {args.gpus} "
        f"GPUs x {args.seconds} s, {args.flush} s per record), {n_bytes / 1e6:.1f} MB JSON "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )
    topic = "bench.usage"
    rows: list[tuple[str, float, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-worker-"))
    dsn = f"chdb://{tmp / 'clickhouse'}"
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        broker.create_topics([TopicSpec(topic, args.partitions)])
        t0 = time.perf_counter()
        publish(broker.bootstrap, topic, records)
        print(f"published to the embedded broker in {time.perf_counter() - t0:.1f} s")

        # (a) baseline
        rates = []
        for _ in range(RUNS):
            handle, agg = baseline_handler()
            dt = asyncio.run(consume(broker.bootstrap, topic, len(records), handle, CHUNK_RECORDS))
            assert sum(a[0] for a in agg.values()) == n_samples
            rates.append(n_samples / dt)
        base = statistics.median(rates)
        rows.append(("baseline: aiokafka + orjson + dict", base, ""))

        # (b) processor fed by the same aiokafka loop
        rates, cpus = [], []
        for i in range(RUNS):
            proc, client = processor_for(dsn, f"bench_kafka_{i}")
            c0 = time.process_time()
            dt = asyncio.run(
                consume(
                    broker.bootstrap, topic, len(records), processor_handler(proc), CHUNK_RECORDS
                )
            )
            cpus.append(time.process_time() - c0)
            assert proc.stats.new_seconds == n_samples, proc.stats
            assert proc.stats.rejected_records == proc.stats.rejected_samples == 0, proc.stats
            rates.append(n_samples / dt)
            client.close()
        rows.append(
            (
                "processor: aiokafka + UsageProcessor + chDB",
                statistics.median(rates),
                f"CPU {statistics.median(cpus):.2f} s/run (chDB in-process)",
            )
        )

        # (b') the processor alone, records already in memory
        mem_records = [SourceRecord(v, topic, 0, i) for i, (_, v, _) in enumerate(records)]
        chunks = [
            mem_records[i : i + CHUNK_RECORDS] for i in range(0, len(mem_records), CHUNK_RECORDS)
        ]
        rates, cpus, stages = [], [], []
        for i in range(RUNS):
            proc, client = processor_for(dsn, f"bench_mem_{i}")
            timer = StageTimer(proc)
            c0, t = time.process_time(), time.perf_counter()
            with timer:
                for c in chunks:
                    proc.process(c)
            dt = time.perf_counter() - t
            cpus.append(time.process_time() - c0)
            assert proc.stats.new_seconds == n_samples, proc.stats
            rates.append(n_samples / dt)
            stages.append({k: v / dt for k, v in timer.seconds.items()})
            if i == 0:
                check_event_ids(client, 2000)
            client.close()
        share = {k: statistics.median(st[k] for st in stages) for k in stages[0]}
        rows.append(
            (
                "processor, in memory (no Kafka)",
                statistics.median(rates),
                f"CPU {statistics.median(cpus):.2f} s/run; "
                + ", ".join(f"{k} {v:.0%}" for k, v in share.items()),
            )
        )

        if args.profile:
            proc, client = processor_for(dsn, "bench_profile")
            prof = cProfile.Profile()
            prof.enable()
            for c in chunks:
                proc.process(c)
            prof.disable()
            client.close()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.profile)
            print(s.getvalue())

        # (c) the full worker (Faust) in a subprocess, own chDB directory
        if args.worker:
            idle = 3.0
            r = run_worker(
                broker.bootstrap,
                topic,
                tmp / "worker",
                f"bench-worker-{os.getpid()}",
                idle,
                n_samples,
            )
            rows.append(
                (
                    "worker subprocess, wall to exit",
                    n_samples / r["wall"],
                    f"{r['wall']:.1f} s incl. startup, group join, {idle:g} s idle wait",
                )
            )
            busy = r["wall"] - idle
            rows.append(
                (
                    "worker subprocess, minus idle wait",
                    n_samples / busy,
                    f"{r['stats']['records']} records, {r['stats']['flushes']} chunks, "
                    f"flush {r['stats']['flush_seconds']:.1f} s",
                )
            )

    print(
        f"\nGPU-seconds (samples) per second, median of {RUNS} runs; "
        f"ratio = figure / baseline measured in this run"
    )
    print(f"{'':46} {'samples/s':>12} {'vs baseline':>12}")
    for name, rate, note in rows:
        print(f"{name:46} {rate:12,.0f} {rate / base:12.3f}  {note}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
