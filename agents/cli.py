"""``gpumeter agent``: run the node agent (NVML, simulated fleet or trace replay)."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gpumeter.settings import Settings

DESCRIPTION = """\
Sample GPUs every second, attribute each GPU-second to a tenant and job (or idle), spool the
batches durably on disk and publish them to Kafka topic gpu.usage.v1.

sources (pick one):
  --nvml        the real GPUs of this machine, at 1 Hz (needs an NVIDIA driver)
  --simulate    a simulated fleet (N nodes x M GPUs, several tenants), in accelerated time
  --trace       replay the Alibaba GPU-cluster trace in ../shared/data, in accelerated time

where it publishes: GPUMETER_KAFKA_BOOTSTRAP (or --bootstrap); when neither is set, an embedded
broker is started for the run (it keeps data in memory only, so this is a smoke test).
"""

EXAMPLES = """\
examples:
  gpumeter agent --simulate --nodes 2 --gpus 8 --duration 1h
  gpumeter agent --simulate --duration 1d --speed 3600 --bootstrap localhost:9092
  gpumeter agent --trace --max-gpus 256 --duration 2h
  GPUMETER_KAFKA_BOOTSTRAP=kafka:9092 gpumeter agent --nvml --allocation-file /run/gpumeter/allocations.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent", help="run the node agent (NVML, simulated fleet or trace replay)",
        description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--nvml", action="store_true", help="sample this machine's GPUs via NVML")
    src.add_argument("--simulate", action="store_true", help="a simulated fleet")
    src.add_argument("--trace", action="store_true", help="replay the Alibaba trace")
    fleet = p.add_argument_group("simulated fleet / trace replay")
    fleet.add_argument("--nodes", type=int, default=4, help="simulated nodes (default 4)")
    fleet.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    fleet.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    fleet.add_argument("--start", type=parse_start, default=None,
                       help="first simulated second: YYYY-MM-DD[THH:MM] UTC (default: yesterday 00:00 UTC)")
    fleet.add_argument("--duration", type=parse_duration, default=3600,
                       help="how much simulated time: 90s, 30m, 6h, 1d (default 1h)")
    fleet.add_argument("--speed", type=parse_speed, default=None,
                       help="simulated seconds per wall second, or 'max' (default max)")
    fleet.add_argument("--max-gpus", type=int, default=256,
                       help="trace replay: cap the replayed fleet (default 256)")
    fleet.add_argument("--trace-dir", type=Path, default=None, help="trace data directory")
    nv = p.add_argument_group("NVML")
    nv.add_argument("--node-id", default=None, help="node id (default: the host name)")
    nv.add_argument("--allocation-file", type=Path, default=Path("/run/gpumeter/allocations.json"),
                    help="allocation file written by the scheduler prolog (see agents/README.md; "
                    "default /run/gpumeter/allocations.json; process environments are used too)")
    out = p.add_argument_group("delivery")
    out.add_argument("--bootstrap", default=None, help="Kafka bootstrap (overrides GPUMETER_KAFKA_BOOTSTRAP)")
    out.add_argument("--topic", default=None, help="usage topic (default gpu.usage.v1)")
    out.add_argument("--spool-dir", type=Path, default=None,
                     help="spool directory (default <data_dir>/spool); one subdirectory per node")
    out.add_argument("--spool-max-mb", type=int, default=512, help="spool bound per node (default 512 MiB)")
    out.add_argument("--flush-every", type=int, default=None,
                     help="seconds of samples per Kafka record (default 10 for NVML, 60 simulated)")
    out.add_argument("--no-fsync", action="store_true", help="do not fsync each spooled batch")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=run)


def parse_duration(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number with s/m/h/d, e.g. 6h")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or 'max'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def parse_start(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def default_start() -> int:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=1)).timestamp())


@contextlib.contextmanager
def kafka_bootstrap(explicit: str | None, settings: Settings) -> Iterator[str]:
    """The configured Kafka, or an embedded broker started for the duration of the block."""
    from schemas.topics import default_topics

    bootstrap = explicit or settings.kafka_bootstrap
    if bootstrap:
        yield bootstrap
        return
    from infra.embedded.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        broker.create_topics(default_topics(settings.usage_partitions))
        print(f"started the embedded broker on {broker.bootstrap} (in memory only)", file=sys.stderr)
        yield broker.bootstrap


def build_agents(samplers: Sequence, spool_root: Path, producer: object, topic: str, *,
                 flush_every: int, spool_max_mb: int = 512, fsync: bool = True) -> list:
    from agents.agent import NodeAgent
    from agents.kafka import Delivery
    from agents.spool import Spool

    agents = []
    for sampler in samplers:
        spool = Spool(spool_root / sampler.node_id, max_bytes=spool_max_mb * 1024**2,
                      segment_bytes=min(8 * 1024**2, spool_max_mb * 1024**2 // 4), fsync=fsync)
        delivery = Delivery(spool, producer, topic, key=sampler.node_id.encode())
        agents.append(NodeAgent(sampler, spool, delivery, flush_every_s=flush_every))
    return agents


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.kafka import make_producer
    from schemas.topics import USAGE

    topic = args.topic or USAGE
    spool_root = args.spool_dir or settings.data_dir / "spool"
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    with kafka_bootstrap(args.bootstrap, settings) as bootstrap:
        producer = make_producer(bootstrap)
        try:
            if args.nvml:
                return _run_nvml(args, producer, topic, spool_root, stop)
            return _run_accelerated(args, producer, topic, spool_root, stop)
        finally:
            producer.close(timeout=5)


def make_fleet(args: argparse.Namespace, start: int) -> object:
    if args.simulate:
        from agents.simulator import SimulatedFleet

        return SimulatedFleet(seed=args.seed, nodes=args.nodes, gpus_per_node=args.gpus,
                              start=start, duration_s=args.duration)
    from agents.trace import TraceFleet

    kwargs = {"data_dir": args.trace_dir} if args.trace_dir else {}
    return TraceFleet(start=start, duration_s=args.duration, gpus_per_node=args.gpus,
                      max_gpus=args.max_gpus, **kwargs)


def _run_accelerated(args: argparse.Namespace, producer: object, topic: str, spool_root: Path,
                     stop: dict[str, bool]) -> int:
    from agents.agent import run_accelerated

    start = args.start if args.start is not None else default_start()
    fleet = make_fleet(args, start)
    samplers = fleet.samplers()  # type: ignore[attr-defined]
    agents = build_agents(samplers, spool_root, producer, topic,
                          flush_every=args.flush_every or 60, spool_max_mb=args.spool_max_mb,
                          fsync=not args.no_fsync)
    n_gpus = sum(len(s.gpus()) for s in samplers)
    wall0 = time.monotonic()
    status = StatusLine(enabled=not args.quiet)

    def progress(done: int, total: int) -> None:
        sent = sum(a.stats.samples for a in agents)
        pending = sum(a.spool.pending_samples for a in agents)
        failures = sum(a.delivery.stats.failures for a in agents)
        rate = sent / max(time.monotonic() - wall0, 1e-9)
        status.show(f"{done / total:6.1%}  sim {_fmt_ts(start + done)}  {n_gpus} GPUs  "
                    f"spooled {sent:,}  unacked {pending:,}  send failures {failures}  "
                    f"{rate:,.0f} samples/s")

    ok = run_accelerated(agents, start, start + args.duration, speed=args.speed,
                         progress=progress, should_stop=lambda: stop["now"])
    status.done()
    total = sum(a.stats.samples for a in agents)
    dropped = sum(a.spool.dropped_samples for a in agents)
    took = time.monotonic() - wall0
    print(f"published {total:,} samples from {len(agents)} node(s), {n_gpus} GPU(s) in {took:.1f} s "
          f"({total / max(took, 1e-9):,.0f} samples/s); dropped by spool bound: {dropped}; "
          f"{'all acknowledged' if ok else 'NOT all acknowledged (still spooled)'}")
    for a in agents:
        a.spool.close()
    return 0 if ok else 1


def _run_nvml(args: argparse.Namespace, producer: object, topic: str, spool_root: Path,
              stop: dict[str, bool]) -> int:
    import socket

    from agents.agent import run_realtime
    from agents.attribution import Attributor
    from agents.nvml import NvmlSampler, NvmlUnavailableError

    node_id = args.node_id or socket.gethostname()
    try:
        sampler = NvmlSampler(node_id=node_id,
                              attributor=Attributor(allocation_file=args.allocation_file))
    except NvmlUnavailableError as exc:
        print(f"gpumeter agent: {exc}", file=sys.stderr)
        return 2
    (agent,) = build_agents([sampler], spool_root, producer, topic,
                            flush_every=args.flush_every or 10, spool_max_mb=args.spool_max_mb,
                            fsync=not args.no_fsync)
    status = StatusLine(enabled=not args.quiet)

    def on_second(ts: int) -> None:
        status.show(f"{_fmt_ts(ts)}  {len(sampler.gpus())} GPUs  spooled {agent.stats.samples:,}  "
                    f"unacked {agent.spool.pending_samples:,}  gaps {agent.stats.gap_seconds} s  "
                    f"send failures {agent.delivery.stats.failures}")

    try:
        run_realtime(agent, should_stop=lambda: stop["now"], on_second=on_second)
    finally:
        status.done()
        sampler.close()
        agent.spool.close()
    return 0


def _fmt_ts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class StatusLine:
    """One self-overwriting status line on a terminal; periodic plain lines otherwise."""

    def __init__(self, enabled: bool = True, every_s: float = 5.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1:
                sys.stderr.write("\r\x1b[2K" + text)
                sys.stderr.flush()
                self._last = now
        elif now - self._last >= self.every_s:
            print(text, file=sys.stderr, flush=True)
            self._last = now

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
