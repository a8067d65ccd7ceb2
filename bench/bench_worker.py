"""GPU-seconds per second through one stream worker, next to the bare floor of the same run.

Publishes a simulated window of contract-v2 records (default 4 nodes x 8 GPUs x 1 h; each
node has whole GPUs, shared GPUs and a MIG GPU, one record per node per 60 s of 60-second
frames, as ``gpumeter agent --simulate`` sends them) to an embedded broker, then times:

- floor: a bare aiokafka loop that reads the records, parses them with orjson and aggregates
  per (tenant, job, share, GPU, minute) into a dict (no validation, no exactness, no store);
- processor: the same aiokafka loop feeding :class:`streams.processor.UsageProcessor` with a
  :class:`streams.clickhouse.sink.LedgerSink` on an embedded chDB, in chunks of
  ``WorkerConfig.chunk_records`` records (what the Faust app does, without Faust):
  validation, exact counting, raw archive, ledger;
- processor, in memory: the same records already fetched (no Kafka), with the share of each
  stage (validate, aggregate, raw archive, ledger);
- worker (``--worker``): the full ``gpumeter worker --exit-when-idle`` subprocess (Faust,
  broker -> validate -> aggregate -> ClickHouse, committed), watched from outside through
  its consumer group's committed offsets: start-up (to the first commit) apart, the steady
  rate from the first commit to the last.

Every figure is device-seconds (GPU-seconds) per wall second, median of the runs (the worker:
``--worker-runs``), beside its ratio to the floor measured in the same run: the machine is
shared and noisy, so compare ratios across runs. Every run checks its totals: milli-GPU-
seconds per tenant in the ledger equal those counted from the simulated device seconds.

    python bench/bench_worker.py                       # 4 x 8 GPUs x 1 h
    python bench/bench_worker.py --worker --hours 6    # also the full worker on a long run
    python bench/bench_worker.py --profile 30          # cProfile the in-memory processor
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.worker_data import floor_handler, make_records  # noqa: E402
from bench.worker_runs import (  # noqa: E402
    StageTimer,
    consume,
    ledger_milli_by_tenant,
    processor_for,
    processor_handler,
    publish,
    run_worker,
)
from schemas.topics import TopicSpec  # noqa: E402
from streams.app import WorkerConfig  # noqa: E402

CHUNK_RECORDS = WorkerConfig.chunk_records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    ap.add_argument("--flush", type=int, default=60, help="seconds per record (default 60)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="repeats of each in-process figure")
    ap.add_argument("--worker", action="store_true", help="also time `gpumeter worker` (Faust)")
    ap.add_argument("--worker-runs", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile: top N")
    ap.add_argument(
        "--chunk-records",
        type=int,
        default=CHUNK_RECORDS,
        help=f"records per chunk, in every figure (default {CHUNK_RECORDS}, the worker's)",
    )
    args = ap.parse_args(argv)
    chunk = args.chunk_records

    from infra.embedded.broker import EmbeddedBroker
    from streams.records import SourceRecord

    seconds = int(args.hours * 3600)
    # Recent seconds: the validator rejects seconds more than 5 minutes in the future.
    start = (int(time.time()) // 3600 - 2) * 3600 - (seconds + 3599) // 3600 * 3600
    t0 = time.perf_counter()
    data = make_records(args.nodes, args.gpus, seconds, start, args.flush)
    truth = dict(data.milli_by_tenant)
    n = data.seconds
    print(
        f"{len(data.records):,} records, {n:,} device-seconds ({args.nodes} nodes x "
        f"{args.gpus} GPUs, {data.devices} devices incl. MIG slices, {seconds} s, "
        f"{args.flush} s per record), {data.bytes / 1e6:.1f} MB JSON "
        f"(built in {time.perf_counter() - t0:.1f} s); chunks of {chunk} records"
    )
    topic = "bench.usage"
    rows: list[tuple[str, float, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-worker-"))
    dsn = f"chdb://{tmp / 'clickhouse'}"
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        broker.create_topics([TopicSpec(topic, args.partitions)])
        t0 = time.perf_counter()
        where = publish(broker.bootstrap, topic, data.records)
        print(f"published to the embedded broker in {time.perf_counter() - t0:.1f} s")
        n_records = len(data.records)

        # (a) the floor
        rates = []
        for _ in range(args.runs):
            handle, state = floor_handler()
            dt = asyncio.run(consume(broker.bootstrap, topic, n_records, handle, chunk))
            assert state["seconds"] == n, (state["seconds"], n)
            rates.append(n / dt)
        floor = statistics.median(rates)
        rows.append(("floor: aiokafka + orjson + dict", floor, ""))

        # (b) the processor fed by the same aiokafka loop, into chDB
        rates, cpus = [], []
        for i in range(args.runs):
            proc, client = processor_for(dsn, f"bench_kafka_{i}")
            c0 = time.process_time()
            handle = processor_handler(proc)
            dt = asyncio.run(consume(broker.bootstrap, topic, n_records, handle, chunk))
            cpus.append(time.process_time() - c0)
            assert proc.stats.new_seconds == n, proc.stats
            assert proc.stats.rejected_records == proc.stats.rejected_samples == 0, proc.stats
            assert ledger_milli_by_tenant(client) == truth, "ledger totals differ from truth"
            rates.append(n / dt)
            client.close()
        note = f"CPU {statistics.median(cpus):.2f} s/run (chDB in-process); totals = truth"
        rows.append(("processor: aiokafka + UsageProcessor + chDB", statistics.median(rates), note))

        # (b') the processor alone, records already in memory
        recs = [SourceRecord(v, topic, 0, i) for i, (_, v, _) in enumerate(data.records)]
        chunks = [recs[i : i + chunk] for i in range(0, len(recs), chunk)]
        rates, stages = [], []
        for i in range(args.runs):
            proc, client = processor_for(dsn, f"bench_mem_{i}")
            timer = StageTimer(proc)
            t = time.perf_counter()
            with timer:
                for c in chunks:
                    proc.process(c)
            dt = time.perf_counter() - t
            assert proc.stats.new_seconds == n, proc.stats
            assert ledger_milli_by_tenant(client) == truth, "ledger totals differ from truth"
            rates.append(n / dt)
            stages.append({k: v / dt for k, v in timer.seconds.items()})
            client.close()
        share = {k: statistics.median(st[k] for st in stages) for k in stages[0]}
        note = ", ".join(f"{k} {v:.0%}" for k, v in share.items())
        rows.append(("processor, in memory (no Kafka)", statistics.median(rates), note))

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

        # (c) the full worker (Faust) in a subprocess, its own chDB directory
        if args.worker:
            results = []
            for i in range(args.worker_runs):
                app_id = f"bench-worker-{os.getpid()}-{i}"
                results.append(
                    run_worker(
                        broker.bootstrap,
                        topic,
                        tmp / f"worker-{i}",
                        app_id,
                        3.0,
                        where,
                        ["--chunk-records", str(chunk)],
                    )
                )
            steady = statistics.median(r["steady_rate"] for r in results)
            startup = statistics.median(r["startup_s"] for r in results)
            r = results[len(results) // 2]
            rows.append(
                (
                    "gpumeter worker, steady (first to last commit)",
                    steady,
                    f"start-up {startup:.1f} s apart; {r['steady_seconds']:,} device-s in "
                    f"{r['steady_s']:.1f} s; {r['stats']['records']} records in "
                    f"{r['stats']['flushes']} chunks; RSS {r['maxrss_kb'] / 1024:.0f} MB; "
                    f"{len(results)} run(s); new_seconds = published",
                )
            )
            rows.append(
                (
                    "gpumeter worker, wall to exit",
                    n / statistics.median(x["wall"] for x in results),
                    f"{r['wall']:.1f} s incl. start-up, group join, 3 s idle wait",
                )
            )
            cpu = statistics.median(x["cpu_s"] for x in results)
            rows.append(
                (
                    "gpumeter worker, per CPU-second",
                    n / cpu,
                    f"{cpu:.1f} CPU-s (user + system) per run, start-up included",
                )
            )

    print(
        f"\nDevice-seconds (GPU-seconds) per second, median of {args.runs} runs; "
        "ratio = figure / floor measured in this run"
    )
    print(f"{'':48} {'GPU-s/s':>12} {'vs floor':>9}")
    for name, rate, note in rows:
        print(f"{name:48} {rate:12,.0f} {rate / floor:9.3f}  {note}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
