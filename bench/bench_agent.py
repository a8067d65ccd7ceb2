"""What the node agent costs: samples/s it generates, encodes and spools, its delivery rate to a
broker, and the CPU and memory of a realtime 8-GPU agent at 1 Hz; each next to a baseline
measured in the same run (the machine is shared and noisy: compare ratios across runs).

1. Generate + encode + spool, for a simulated fleet (default 4 nodes x 8 GPUs x 1 h, one record
   per node per 60 s as ``gpumeter agent --simulate`` does), with fsync on and off. Baseline:
   the simulated samplers alone (the floor any agent pays for its samples).
2. Delivery from the spools to the embedded broker through :class:`agents.kafka.Delivery`
   (acks=all, idempotent, lz4, one batch acknowledged in order). Baseline: a raw kafka-python
   producer with the same configuration sending the same payloads (same sizes) from memory.
3. Realtime: ``run_realtime`` for one node of 8 simulated GPUs at 1 Hz (10 s per record, fsync
   on, delivering to the broker) for ``--realtime`` wall seconds in a fresh subprocess: CPU
   seconds per wall second (``getrusage``, every thread) and peak RSS (VmHWM). Baseline: a
   subprocess with the same imports and a connected producer that only wakes each second.
   NVML reads on real GPUs cost more than the simulator; see bench/README.md.

    python bench/bench_agent.py                  # 4 x 8 GPUs x 1 h, realtime 30 s
    python bench/bench_agent.py --flush 10       # NVML-like records (10 s per record)
    python bench/bench_agent.py --realtime 0     # skip the realtime measurement
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

RUNS = 3
TOPIC = "bench.agent.usage"


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


def sample_only(fleet, seconds: int) -> tuple[int, float]:  # noqa: ANN001
    samplers = fleet.samplers()
    n = 0
    t0 = time.perf_counter()
    for ts in range(fleet.start, fleet.start + seconds):
        for s in samplers:
            n += len(s.sample(ts))
    return n, time.perf_counter() - t0


def build_agents(fleet, root: Path, *, fsync: bool, flush: int) -> list:  # noqa: ANN001
    from agents.agent import NodeAgent
    from agents.spool import Spool

    shutil.rmtree(root, ignore_errors=True)
    # NoDelivery stands in for agents.kafka.Delivery: NodeAgent calls only its pump().
    return [
        NodeAgent(s, Spool(root / s.node_id, fsync=fsync), NoDelivery(), flush_every_s=flush)  # type: ignore[arg-type]
        for s in fleet.samplers()
    ]


def generate(fleet, seconds: int, root: Path, *, fsync: bool, flush: int) -> tuple[int, float]:  # noqa: ANN001
    agents = build_agents(fleet, root, fsync=fsync, flush=flush)
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
    return sum(a.stats.samples for a in agents), dt


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


# -- realtime (subprocess) ---------------------------------------------------------------------
def _rss_kib(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak (VmHWM), KiB. Not ``ru_maxrss``: Linux
    carries that across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def realtime_child(bootstrap: str, spool_dir: Path, seconds: float, idle: bool) -> int:
    """Runs in a fresh process: one 8-GPU node at 1 Hz (or, ``idle``, the baseline)."""
    from agents.agent import NodeAgent, run_realtime
    from agents.kafka import Delivery, make_producer
    from agents.simulator import SimulatedFleet
    from agents.spool import Spool

    now = int(time.time())
    fleet = SimulatedFleet(nodes=1, gpus_per_node=8, start=now - 60, duration_s=int(seconds) + 600)
    producer = make_producer(bootstrap)
    producer.partitions_for(TOPIC)  # connected before measuring
    (sampler,) = fleet.samplers()
    spool = Spool(spool_dir, fsync=True)
    agent = NodeAgent(sampler, spool, Delivery(spool, producer, TOPIC, key=b"rt"), flush_every_s=10)
    rss0, cpu0, t0 = _rss_kib(), _cpu_s(), time.monotonic()
    deadline = t0 + seconds
    if idle:
        while time.monotonic() < deadline:
            time.sleep(max(0.0, (int(time.time()) + 1) - time.time()))
    else:
        run_realtime(agent, should_stop=lambda: time.monotonic() >= deadline)
    wall, cpu = time.monotonic() - t0, _cpu_s() - cpu0
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "cpu_per_wall_s": cpu / wall,
                "rss_start_mib": rss0 / 1024,
                "rss_end_mib": _rss_kib() / 1024,
                "peak_rss_mib": _rss_kib("VmHWM") / 1024,
                "samples": agent.stats.samples,
                "batches": agent.stats.batches,
                "acked": agent.delivery.stats.acked,
                "gap_seconds": agent.stats.gap_seconds,
            }
        )
    )
    producer.close(timeout=5)
    spool.close()
    return 0


def realtime(bootstrap: str, tmp: Path, seconds: float) -> tuple[dict, dict]:
    """The agent and the idle baseline, side by side (both use little CPU)."""
    procs = {}
    for kind in ("agent", "idle"):
        cmd = [
            sys.executable,
            __file__,
            "--realtime-child",
            kind,
            "--bootstrap",
            bootstrap,
            "--spool",
            str(tmp / f"rt-{kind}"),
            "--realtime",
            str(seconds),
        ]
        procs[kind] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for kind, p in procs.items():
        stdout, stderr = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            sys.stderr.write(stderr.decode(errors="replace")[-3000:])
            raise SystemExit(f"realtime {kind} child failed ({p.returncode})")
        out[kind] = json.loads(stdout.decode().strip().splitlines()[-1])
    return out["agent"], out["idle"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3600, help="simulated seconds (default 1 h)")
    ap.add_argument("--flush", type=int, default=60, help="seconds per record (default 60)")
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
            args.bootstrap, args.spool, args.realtime, idle=args.realtime_child == "idle"
        )

    from agents.simulator import SimulatedFleet
    from infra.embedded.broker import EmbeddedBroker
    from schemas.topics import TopicSpec

    start = (int(time.time()) // 3600 - 2) * 3600 - args.seconds // 3600 * 3600
    fleet = SimulatedFleet(
        nodes=args.nodes, gpus_per_node=args.gpus, start=start, duration_s=args.seconds
    )
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-agent-"))
    n_expected = args.nodes * args.gpus * args.seconds
    print(
        f"{n_expected:,} samples per run ({args.nodes} nodes x {args.gpus} GPUs x "
        f"{args.seconds} s, {args.flush} s per record), median of {RUNS} runs; spools in {tmp}"
    )
    try:
        # 1. generation
        gen_rows: list[tuple[str, float]] = []
        gen_rows.append(
            (
                "baseline: simulated samplers only",
                median_of(lambda: sample_only(fleet, args.seconds)),
            )
        )
        gen_rows.append(
            (
                "agent: sample + encode + spool, no fsync",
                median_of(
                    lambda: generate(
                        fleet, args.seconds, tmp / "gen", fsync=False, flush=args.flush
                    )
                ),
            )
        )
        gen_rows.append(
            (
                "agent: sample + encode + spool, fsync",
                median_of(
                    lambda: generate(fleet, args.seconds, tmp / "gen", fsync=True, flush=args.flush)
                ),
            )
        )
        base = gen_rows[0][1]
        print(f"\n1. generate + encode + spool{'':20} {'samples/s':>12} {'vs baseline':>12}")
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
                agent, idle = realtime(broker.bootstrap, tmp, args.realtime)
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
