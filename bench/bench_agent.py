"""What the node agent costs: device-seconds/s it generates, encodes and spools, its delivery
rate to a broker, and the CPU and memory of a realtime 8-GPU agent at 1 Hz; each next to a
baseline measured in the same run (the machine is shared and noisy: compare ratios across
runs). Records are contract v2 (frames with shares) by default, ``--schema-version 1`` for the
previous contract; ``--shares`` gives every simulated node shared GPUs and a MIG GPU (v2 only).
Every run checks its totals: each device-second sampled is spooled and delivered once.

1. Generate + encode + spool, for a simulated fleet (default 4 nodes x 8 GPUs x 1 h, one record
   per node per 60 s as ``gpumeter agent --simulate`` does), with fsync on and off. Baseline:
   the simulated samplers alone (the floor any agent pays for its samples).
2. Delivery from the spools to the embedded broker through :class:`agents.kafka.Delivery`
   (acks=all, idempotent, lz4, one batch acknowledged in order). Baseline: a raw kafka-python
   producer with the same configuration sending the same payloads (same sizes) from memory.
3. Realtime: ``run_realtime`` for one node of 8 simulated GPUs at 1 Hz (10 s per record, fsync
   on, delivering to the broker) for ``--realtime`` wall seconds in a fresh subprocess: CPU
   seconds per wall second (``getrusage``, every thread) and peak RSS (VmHWM). Baseline: a
   subprocess with the same imports and a connected producer that only wakes each second
   (bench/bench_agent_realtime.py). NVML reads on real GPUs cost more than the simulator; see
   bench/README.md.

    python bench/bench_agent.py                  # 4 x 8 GPUs x 1 h, realtime 30 s, v2
    python bench/bench_agent.py --shares         # shared GPUs and MIG slices on every node
    python bench/bench_agent.py --schema-version 1
    python bench/bench_agent.py --flush 10       # NVML-like records (10 s per record)
    python bench/bench_agent.py --realtime 0     # skip the realtime measurement
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.bench_agent_realtime import TOPIC, realtime, realtime_child  # noqa: E402

RUNS = 3


def median_of(run: Callable[[], tuple[int, float]]) -> float:
    """Median samples/s over RUNS runs of ``run`` (which returns (samples, seconds))."""
    rates = []
    for _ in range(RUNS):
        n, dt = run()
        rates.append(n / dt)
    return statistics.median(rates)


class NoDelivery:
    """Delivery is measured on its own (part 2); generation does not pump."""

    def pump(self) -> None:
        pass


def sample_only(fleet, seconds: int, version: int) -> tuple[int, float]:  # noqa: ANN001
    samplers = fleet.samplers()
    n = 0
    t0 = time.perf_counter()
    for ts in range(fleet.start, fleet.start + seconds):
        for s in samplers:
            n += len(s.seconds(ts) if version == 2 else s.sample(ts))
    dt = time.perf_counter() - t0
    assert n == sum(len(s.gpus()) for s in samplers) * seconds, n
    return n, dt


def build_agents(fleet, root: Path, *, fsync: bool, flush: int, version: int) -> list:  # noqa: ANN001
    from agents.agent import NodeAgent
    from agents.spool import Spool

    shutil.rmtree(root, ignore_errors=True)
    # NoDelivery stands in for agents.kafka.Delivery: NodeAgent calls only its pump().
    return [
        NodeAgent(
            s,
            Spool(root / s.node_id, fsync=fsync),
            NoDelivery(),  # type: ignore[arg-type]
            flush_every_s=flush,
            schema_version=version,
        )
        for s in fleet.samplers()
    ]


def generate(
    fleet,  # noqa: ANN001
    seconds: int,
    root: Path,
    *,
    fsync: bool,
    flush: int,
    version: int,
) -> tuple[int, float]:
    agents = build_agents(fleet, root, fsync=fsync, flush=flush, version=version)
    end = fleet.start + seconds
    t0 = time.perf_counter()
    for ts in range(fleet.start, end):
        for a in agents:
            a.record_second(ts)
    for a in agents:
        a.seal(last_ts=end - 1)
    dt = time.perf_counter() - t0
    for a in agents:
        a.spool.close()
    total = sum(a.stats.samples for a in agents)
    assert total == sum(len(a.sampler.gpus()) for a in agents) * seconds, total  # each once
    return total, dt


def deliver(bootstrap: str, roots: list[Path]) -> tuple[int, float, int, int]:
    """Send every spool under ``roots`` through Delivery; (samples, seconds, records, bytes)."""
    from agents.kafka import Delivery, make_producer
    from agents.spool import Spool

    producer = make_producer(bootstrap)
    spools = [Spool(r) for r in roots]
    deliveries = [
        Delivery(s, producer, TOPIC, key=r.name.encode())
        for s, r in zip(spools, roots, strict=True)
    ]
    n = sum(s.pending_samples for s in spools)
    records = sum(s.pending_count for s in spools)
    size = sum(len(p) for s in spools for _, p in s.pending())
    t0 = time.perf_counter()
    for d in deliveries:
        d.pump()
    ok = all(d.flush(timeout=300) for d in deliveries)
    dt = time.perf_counter() - t0
    assert ok and all(d.stats.failures == 0 for d in deliveries), [d.stats for d in deliveries]
    producer.close(timeout=5)
    for s in spools:
        s.close()
    return n, dt, records, size


def raw_producer(bootstrap: str, payloads: list[tuple[bytes, bytes]]) -> float:
    from agents.kafka import make_producer

    producer = make_producer(bootstrap)
    t0 = time.perf_counter()
    futures = [producer.send(TOPIC, key=k, value=v) for k, v in payloads]
    producer.flush(timeout=300)
    dt = time.perf_counter() - t0
    for f in futures:
        f.get(timeout=1)
    producer.close(timeout=5)
    return dt


def spooled_payloads(roots: list[Path]) -> list[tuple[bytes, bytes]]:
    from agents.spool import Spool

    out = []
    for r in roots:
        s = Spool(r)
        out += [(r.name.encode(), p) for _, p in s.pending()]
        s.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3600, help="simulated seconds (default 1 h)")
    ap.add_argument("--flush", type=int, default=60, help="seconds per record (default 60)")
    ap.add_argument("--schema-version", type=int, choices=(1, 2), default=2)
    ap.add_argument("--shares", action="store_true", help="shared and MIG GPUs on every node")
    ap.add_argument(
        "--realtime",
        type=float,
        default=30.0,
        help="wall seconds of the realtime 8-GPU measurement (0: skip; default 30)",
    )
    ap.add_argument("--realtime-child", choices=("agent", "idle"), help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--spool", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.realtime_child:
        return realtime_child(
            args.bootstrap,
            args.spool,
            args.realtime,
            idle=args.realtime_child == "idle",
            version=args.schema_version,
            shares=args.shares,
        )
    if args.shares and args.schema_version == 1:
        ap.error("--shares needs --schema-version 2")

    from agents.simulator import SimulatedFleet
    from infra.embedded.broker import EmbeddedBroker
    from schemas.topics import TopicSpec

    start = (int(time.time()) // 3600 - 2) * 3600 - args.seconds // 3600 * 3600
    fleet = SimulatedFleet(
        nodes=args.nodes,
        gpus_per_node=args.gpus,
        start=start,
        duration_s=args.seconds,
        shares=args.shares,
    )
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-agent-"))
    devices = sum(len(s.gpus()) for s in fleet.samplers())
    n_expected = devices * args.seconds
    v = args.schema_version
    print(
        f"{n_expected:,} device-seconds per run ({args.nodes} nodes x {args.gpus} GPUs"
        f"{f', {devices} devices with MIG slices' if args.shares else ''} x {args.seconds} s, "
        f"{args.flush} s per record, contract v{v}), median of {RUNS} runs; spools in {tmp}"
    )
    try:
        # 1. generation
        gen_rows: list[tuple[str, float]] = []
        gen_rows.append(
            (
                "baseline: simulated samplers only",
                median_of(lambda: sample_only(fleet, args.seconds, v)),
            )
        )
        gen_rows.append(
            (
                "agent: sample + encode + spool, no fsync",
                median_of(
                    lambda: generate(
                        fleet, args.seconds, tmp / "gen", fsync=False, flush=args.flush, version=v
                    )
                ),
            )
        )
        gen_rows.append(
            (
                "agent: sample + encode + spool, fsync",
                median_of(
                    lambda: generate(
                        fleet, args.seconds, tmp / "gen", fsync=True, flush=args.flush, version=v
                    )
                ),
            )
        )
        base = gen_rows[0][1]
        print(f"\n1. generate + encode + spool{'':20} {'dev-s/s':>12} {'vs baseline':>12}")
        for name, rate in gen_rows:
            print(f"   {name:44} {rate:12,.0f} {rate / base:12.2f}")

        # 2. delivery
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            broker.create_topics([TopicSpec(TOPIC, 4)])
            roots = sorted(p for p in (tmp / "gen").iterdir() if p.is_dir())
            payloads = spooled_payloads(roots)
            n_records, n_bytes = len(payloads), sum(len(v) for _, v in payloads)
            raw_rates, del_rates = [], []
            for _ in range(RUNS):
                raw_rates.append(n_expected / raw_producer(broker.bootstrap, payloads))
                # a fresh copy of the spools each run: Delivery empties them
                shutil.rmtree(tmp / "deliver", ignore_errors=True)
                shutil.copytree(tmp / "gen", tmp / "deliver")
                n, dt, records, size = deliver(
                    broker.bootstrap, sorted(p for p in (tmp / "deliver").iterdir() if p.is_dir())
                )
                assert n == n_expected and records == n_records and size == n_bytes
                del_rates.append(n / dt)
            raw, dlv = statistics.median(raw_rates), statistics.median(del_rates)
            per_rec = n_bytes / n_records
            print(
                f"\n2. delivery to the embedded broker: {n_records} records of "
                f"{per_rec / 1024:,.0f} KiB JSON (lz4 on the wire)"
            )
            print(f"   {'':44} {'samples/s':>12} {'records/s':>10} {'MB/s':>7} {'vs baseline':>12}")
            for name, rate in (
                ("baseline: raw kafka-python producer, same bytes", raw),
                ("agent: Delivery from the spool (acked, in order)", dlv),
            ):
                rec_s = rate / n_expected * n_records
                print(
                    f"   {name:44} {rate:12,.0f} {rec_s:10,.0f} {rec_s * per_rec / 1e6:7.1f} "
                    f"{rate / raw:12.2f}"
                )

            # 3. realtime
            if args.realtime > 0:
                agent, idle = realtime(
                    broker.bootstrap, tmp, args.realtime, version=v, shares=args.shares
                )
                print(
                    f"\n3. realtime: 1 node x 8 simulated GPUs at 1 Hz for {agent['wall_s']:.0f} s "
                    f"wall (10 s per record, fsync on), separate processes"
                )
                print(f"   {'':44} {'CPU s/wall s':>12} {'peak RSS MiB':>13} {'RSS start':>10}")
                for name, r in (
                    ("baseline: imports + producer, idle at 1 Hz", idle),
                    ("agent: run_realtime, 8 GPUs", agent),
                ):
                    print(
                        f"   {name:44} {r['cpu_per_wall_s']:12.4f} {r['peak_rss_mib']:13.1f} "
                        f"{r['rss_start_mib']:10.1f}"
                    )
                extra = agent["cpu_per_wall_s"] - idle["cpu_per_wall_s"]
                print(
                    f"   agent minus baseline: {extra * 100:.2f} % of one core, "
                    f"{agent['peak_rss_mib'] - idle['peak_rss_mib']:+.1f} MiB peak RSS; "
                    f"{agent['samples']} samples in {agent['batches']} records, "
                    f"{agent['acked']} acknowledged, gaps {agent['gap_seconds']} s"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
