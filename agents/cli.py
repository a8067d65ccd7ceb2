"""``gpumeter agent``: run the node agent (NVML, simulated fleet or trace replay)."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.settings import Settings

if TYPE_CHECKING:
    from agents.spool import Spool

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
        "agent",
        help="run the node agent (NVML, simulated fleet or trace replay)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Not argparse-required: `gpumeter agent resend` needs no source; run() checks it.
    src = p.add_mutually_exclusive_group()
    src.add_argument("--nvml", action="store_true", help="sample this machine's GPUs via NVML")
    src.add_argument("--simulate", action="store_true", help="a simulated fleet")
    src.add_argument("--trace", action="store_true", help="replay the Alibaba trace")
    fleet = p.add_argument_group("simulated fleet / trace replay")
    fleet.add_argument(
        "--nodes",
        type=int_range(1, 10_000),
        default=4,
        help="simulated nodes, 1..10000 (default 4)",
    )
    fleet.add_argument(
        "--gpus", type=int_range(1, 64), default=8, help="GPUs per node, 1..64 (default 8)"
    )
    fleet.add_argument(
        "--seed", type=int_range(0, 2**63 - 1), default=7, help="simulation seed (default 7)"
    )
    fleet.add_argument(
        "--start",
        type=parse_start,
        default=None,
        help="first simulated second: YYYY-MM-DD[THH:MM] UTC (default: yesterday 00:00 UTC)",
    )
    fleet.add_argument(
        "--duration",
        type=parse_duration,
        default=3600,
        help="how much simulated time: 90s, 30m, 6h, 1d, 1h30m (1 s..366 d; default 1h)",
    )
    fleet.add_argument(
        "--speed",
        type=parse_speed,
        default=None,
        help="simulated seconds per wall second (0 < speed <= 1e7), or 'max' (default max)",
    )
    fleet.add_argument(
        "--max-gpus",
        type=int_range(1, 1_000_000),
        default=256,
        help="trace replay: cap the replayed fleet (default 256)",
    )
    fleet.add_argument("--trace-dir", type=Path, default=None, help="trace data directory")
    nv = p.add_argument_group("NVML")
    nv.add_argument(
        "--node-id", type=parse_node_id, default=None, help="node id (default: the host name)"
    )
    nv.add_argument(
        "--allocation-file",
        type=Path,
        default=Path("/run/gpumeter/allocations.json"),
        help="allocation file written by the scheduler prolog (see agents/README.md; "
        "default /run/gpumeter/allocations.json; process environments are used too)",
    )
    out = p.add_argument_group("delivery")
    out.add_argument(
        "--bootstrap",
        type=parse_bootstrap,
        default=None,
        help="Kafka bootstrap host:port[,host:port] (overrides GPUMETER_KAFKA_BOOTSTRAP)",
    )
    out.add_argument(
        "--topic", type=parse_topic, default=None, help="usage topic (default gpu.usage.v1)"
    )
    out.add_argument(
        "--spool-dir",
        type=Path,
        default=None,
        help="spool directory (default <data_dir>/spool); one subdirectory per node",
    )
    out.add_argument(
        "--spool-max-mb",
        type=int_range(1, 1024 * 1024),
        default=512,
        help="spool bound per node in MiB, 1..1048576 (default 512); beyond it, and when "
        "the disk is full, the oldest data is dropped and reported as spool_full gaps",
    )
    out.add_argument(
        "--retain",
        type=parse_retention,
        default=3600,
        help="keep acknowledged batches this long for resend (0..7d; default 1h; at most "
        "a quarter of --spool-max-mb)",
    )
    out.add_argument(
        "--flush-every",
        type=int_range(1, 3600),
        default=None,
        help="seconds of samples per Kafka record, 1..3600 (default 10 for NVML, 60 simulated)",
    )
    out.add_argument(
        "--clock-warn",
        type=float_range(0.001, 86_400.0),
        default=2.0,
        help="warn when this node's clock is more than this many seconds off the "
        "broker's (default 2)",
    )
    out.add_argument("--no-fsync", action="store_true", help="do not fsync each spooled batch")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=run, agent_parser=p)

    actions = p.add_subparsers(dest="agent_command", metavar="{resend}")
    r = actions.add_parser(
        "resend",
        help="send retained (already acknowledged) batches again",
        description="Send again the batches each node's spool still retains (acknowledged ones "
        "are kept for --retain, default 1 h), from the batch covering --since on. Use it when the "
        "broker lost data it had acknowledged (an in-memory broker restarted, a topic recreated). "
        "A running agent serves the request within a second; otherwise this command sends them "
        "itself (needs the bootstrap). Duplicates are harmless: the worker deduplicates by GPU-second.",
        epilog="examples:\n  gpumeter agent resend --since 2026-11-20T10:00\n"
        "  gpumeter agent resend --since 2h          (two hours ago)\n"
        "  gpumeter agent resend --since today --node gpu-a100-007",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--since",
        type=parse_since,
        required=True,
        help="UTC time: YYYY-MM-DD[THH:MM[:SS]], an epoch second, 'today', 'yesterday', "
        "or an age such as 90m, 2h, 1d",
    )
    r.add_argument(
        "--node",
        action="append",
        type=parse_node_id,
        default=None,
        help="only this node (repeatable; default every node in the spool directory)",
    )
    r.add_argument(
        "--spool-dir",
        dest="resend_spool_dir",
        type=Path,
        default=None,
        help="spool directory (default <data_dir>/spool)",
    )
    r.add_argument(
        "--bootstrap",
        dest="resend_bootstrap",
        type=parse_bootstrap,
        default=None,
        help="Kafka bootstrap when no agent is running (default GPUMETER_KAFKA_BOOTSTRAP)",
    )
    r.add_argument(
        "--topic",
        dest="resend_topic",
        type=parse_topic,
        default=None,
        help="usage topic (default gpu.usage.v1)",
    )
    r.set_defaults(handler=run_resend)


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {lo}..{hi}")
        return value

    return parse


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {lo:g}..{hi:g}")
        return value

    return parse


_DURATION_PART = re.compile(r"(\d+)\s*([smhd]?)")


def _duration_seconds(text: str) -> int:
    t = text.strip().lower()
    if (
        not t
        or not re.fullmatch(r"(\d+\s*[smhd]?\s*)+", t)
        or (len(_DURATION_PART.findall(t)) > 1 and not re.fullmatch(r"(\d+\s*[smhd]\s*)+", t))
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number with s/m/h/d, e.g. 6h or 1h30m"
        )
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in _DURATION_PART.findall(t))


def parse_duration(text: str) -> int:
    """A positive duration (90s, 30m, 6h, 1d, 1h30m; a plain number is seconds), at most 366 days."""
    value = _duration_seconds(text)
    if not 1 <= value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be 1 s..366 d")
    return value


def parse_retention(text: str) -> int:
    value = _duration_seconds(text)
    if value > 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: retention is at most 7 d")
    return value


def parse_speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or 'max'") from None
    if not 0 < value <= 1e7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: speed must be > 0 and at most 1e7, or 'max'")
    return value


#: 2015-01-01T00:00:00Z: the contract rejects earlier samples (schemas.usage.MIN_TS).
_MIN_START = 1_420_070_400


def parse_start(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = int(dt.timestamp())
    if ts < _MIN_START:
        raise argparse.ArgumentTypeError(f"{text!r}: the start must be 2015-01-01 or later")
    if ts > time.time() + 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future: the worker rejects samples from the future"
        )
    return ts


def parse_since(text: str, now: float | None = None) -> int:
    """A UTC instant, friendly: ISO date/time (UTC unless it says otherwise), an epoch second,
    'today', 'yesterday', 'now', or an age ('90m', '2h', '1d', '2h ago')."""
    t = text.strip().lower()
    now = time.time() if now is None else now
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if t in ("today", "yesterday", "now"):
        return (
            int(now)
            if t == "now"
            else int((midnight - timedelta(days=1 if t == "yesterday" else 0)).timestamp())
        )
    if t.endswith(" ago"):
        t = t[:-4].strip()
    if re.fullmatch(r"\d{9,11}", t):
        return int(t)
    if re.fullmatch(r"(\d+\s*[smhd]\s*)+", t):
        return int(now) - _duration_seconds(t)
    try:
        dt = datetime.fromisoformat(
            text.strip().replace(" ", "T", 1).removesuffix("Z").removesuffix("z")
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a UTC time like 2026-11-20T10:00, an epoch second, 'today', "
            "or an age like 2h"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def parse_node_id(text: str) -> str:
    if (
        not 1 <= len(text) <= 128
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
        or "/" in text
        or text in (".", "..")
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a node id is 1..128 printable characters, without '/'"
        )
    return text


def parse_bootstrap(text: str) -> str:
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if (
            not sep
            or not host
            or not re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+", host)
            or not port.isdigit()
            or not 1 <= int(port) <= 65535
        ):
            raise argparse.ArgumentTypeError(
                f"{server.strip()!r}: expected host:port (port 1..65535), e.g. kafka:9092"
            )
    return text


def parse_topic(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._\-]{1,249}", text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a Kafka topic name is 1..249 of letters, digits, '.', '_' and '-'"
        )
    return text


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
        print(
            f"started the embedded broker on {broker.bootstrap} (in memory only)", file=sys.stderr
        )
        yield broker.bootstrap


def build_agents(
    samplers: Sequence,
    spool_root: Path,
    producer: object,
    topic: str,
    *,
    flush_every: int,
    spool_max_mb: int = 512,
    fsync: bool = True,
    retain_s: float = 3600.0,
    clock_warn_s: float = 2.0,
) -> list:
    from agents.agent import NodeAgent
    from agents.kafka import Delivery
    from agents.spool import Spool

    if spool_max_mb < 1:
        raise ValueError(f"spool_max_mb must be at least 1, got {spool_max_mb}")
    agents = []
    for sampler in samplers:
        # Segments of an eighth of the bound (agents/spool.py): old ones can be dropped early.
        spool = Spool(
            spool_root / sampler.node_id,
            max_bytes=spool_max_mb * 1024**2,
            fsync=fsync,
            retain_s=retain_s,
        )
        delivery = Delivery(
            spool, producer, topic, key=sampler.node_id.encode(), clock_warn_s=clock_warn_s
        )
        agents.append(NodeAgent(sampler, spool, delivery, flush_every_s=flush_every))
    return agents


class Stop:
    """SIGTERM/SIGINT: the first asks the agent to stop (sampling ends, delivery gets
    :data:`~agents.agent.STOP_GRACE_S` to send what it can, the rest stays spooled); a second
    one stops at once."""

    def __init__(self) -> None:
        self.now = False
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.now

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.now:
            raise KeyboardInterrupt
        self.now = True
        self.signal_name = signal.Signals(signum).name
        print(
            f"\n{self.signal_name}: stopping; unacknowledged batches stay in the spool "
            "(sent on the next start)",
            file=sys.stderr,
            flush=True,
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.kafka import make_producer
    from schemas.topics import USAGE

    if not (args.nvml or args.simulate or args.trace):
        args.agent_parser.error("one of the arguments --nvml --simulate --trace is required")
    topic = args.topic or USAGE
    spool_root = args.spool_dir or settings.data_dir / "spool"
    stop = Stop()
    stop.install()
    with kafka_bootstrap(args.bootstrap, settings) as bootstrap:
        producer = make_producer(bootstrap)
        try:
            if args.nvml:
                return _run_nvml(args, producer, topic, spool_root, stop)
            return _run_accelerated(args, producer, topic, spool_root, stop)
        finally:
            producer.close(timeout=1 if stop() else 5)


def make_fleet(args: argparse.Namespace, start: int) -> object:
    if args.simulate:
        from agents.simulator import SimulatedFleet

        return SimulatedFleet(
            seed=args.seed,
            nodes=args.nodes,
            gpus_per_node=args.gpus,
            start=start,
            duration_s=args.duration,
        )
    from agents.trace import TraceFleet

    kwargs = {"data_dir": args.trace_dir} if args.trace_dir else {}
    return TraceFleet(
        start=start,
        duration_s=args.duration,
        gpus_per_node=args.gpus,
        max_gpus=args.max_gpus,
        **kwargs,
    )


def _run_accelerated(
    args: argparse.Namespace, producer: object, topic: str, spool_root: Path, stop: Stop
) -> int:
    from agents.agent import run_accelerated

    start = args.start if args.start is not None else default_start()
    fleet = make_fleet(args, start)
    samplers = fleet.samplers()  # type: ignore[attr-defined]
    agents = build_agents(
        samplers,
        spool_root,
        producer,
        topic,
        flush_every=args.flush_every or 60,
        spool_max_mb=args.spool_max_mb,
        fsync=not args.no_fsync,
        retain_s=args.retain,
        clock_warn_s=args.clock_warn,
    )
    n_gpus = sum(len(s.gpus()) for s in samplers)
    wall0 = time.monotonic()
    status = StatusLine(enabled=not args.quiet)

    def progress(done: int, total: int) -> None:
        sent = sum(a.stats.samples for a in agents)
        pending = sum(a.spool.pending_samples for a in agents)
        failures = sum(a.delivery.stats.failures for a in agents)
        rate = sent / max(time.monotonic() - wall0, 1e-9)
        status.show(
            f"{done / total:6.1%}  sim {_fmt_ts(start + done)}  {n_gpus} GPUs  "
            f"spooled {sent:,}  unacked {pending:,}  send failures {failures}  "
            f"{rate:,.0f} samples/s"
        )

    ok = run_accelerated(
        agents, start, start + args.duration, speed=args.speed, progress=progress, should_stop=stop
    )
    status.done()
    total = sum(a.stats.samples for a in agents)
    dropped = sum(a.spool.dropped_samples for a in agents)
    took = time.monotonic() - wall0
    if ok:
        outcome = "all acknowledged"
    elif stop():
        outcome = (
            f"stopped by {stop.signal_name}: "
            f"{sum(a.spool.pending_samples for a in agents):,} samples still spooled, "
            "sent on the next start"
        )
    else:
        outcome = "NOT all acknowledged (still spooled)"
    print(
        f"published {total:,} samples from {len(agents)} node(s), {n_gpus} GPU(s) in {took:.1f} s "
        f"({total / max(took, 1e-9):,.0f} samples/s); dropped by spool bound or full disk: "
        f"{dropped} (reported as spool_full gaps); {outcome}"
    )
    print(delivery_report(agents, producer))
    for a in agents:
        a.spool.close()
    return 0 if ok or stop() else 1


def delivery_report(agents: Sequence, producer: object) -> str:
    """One line: producer replacements, broker log rewinds and refills, clock offset."""
    stats = [a.delivery.stats for a in agents]
    offsets = [s for s in stats if s.clock_offset_ms is not None]
    if offsets:
        best = min(offsets, key=lambda s: s.clock_uncertainty_ms or 0.0)
        clock = (
            f"clock offset vs broker {-(best.clock_offset_ms or 0) / 1000:+.3f} s "
            f"(±{(best.clock_uncertainty_ms or 0) / 1000:.3f} s)"
        )
    else:
        clock = "clock offset vs broker unknown (the topic keeps producer timestamps: CreateTime)"
    return (
        f"delivery: producer replaced {getattr(producer, 'resets', 0)} time(s); broker log went "
        f"backwards {sum(s.log_rewinds for s in stats)} time(s); "
        f"{sum(s.resent for s in stats)} acknowledged batch(es) re-sent; {clock}"
    )


def _run_nvml(
    args: argparse.Namespace, producer: object, topic: str, spool_root: Path, stop: Stop
) -> int:
    import socket

    from agents.agent import run_realtime
    from agents.attribution import Attributor
    from agents.nvml import NvmlSampler, NvmlUnavailableError

    node_id = args.node_id or socket.gethostname()
    try:
        sampler = NvmlSampler(
            node_id=node_id, attributor=Attributor(allocation_file=args.allocation_file)
        )
    except NvmlUnavailableError as exc:
        print(f"gpumeter agent: {exc}", file=sys.stderr)
        return 2
    (agent,) = build_agents(
        [sampler],
        spool_root,
        producer,
        topic,
        flush_every=args.flush_every or 10,
        spool_max_mb=args.spool_max_mb,
        fsync=not args.no_fsync,
        retain_s=args.retain,
        clock_warn_s=args.clock_warn,
    )
    status = StatusLine(enabled=not args.quiet)

    def on_second(ts: int) -> None:
        status.show(
            f"{_fmt_ts(ts)}  {len(sampler.gpus())} GPUs  spooled {agent.stats.samples:,}  "
            f"unacked {agent.spool.pending_samples:,}  gaps {agent.stats.gap_seconds} s  "
            f"send failures {agent.delivery.stats.failures}"
        )

    try:
        run_realtime(agent, should_stop=stop, on_second=on_second)
    finally:
        status.done()
        sampler.close()
        print(
            f"stopped: {agent.spool.pending_samples:,} samples still spooled; dropped by spool "
            f"bound or full disk: {agent.spool.dropped_samples} (reported as spool_full gaps)"
        )
        print(delivery_report([agent], producer))
        agent.spool.close()
    return 0


def run_resend(args: argparse.Namespace, settings: Settings) -> int:
    """``gpumeter agent resend --since T``: ask each node's spool to send retained batches again."""
    from agents.kafka import RESEND_FILE
    from agents.spool import SpoolError

    spool_root: Path = args.resend_spool_dir or settings.data_dir / "spool"
    nodes = args.node or sorted(p.name for p in spool_root.glob("*") if (p / "agent_id").is_file())
    if not nodes:
        print(
            f"gpumeter agent resend: no node spools under {spool_root} (see --spool-dir)",
            file=sys.stderr,
        )
        return 2
    missing = [n for n in nodes if not (spool_root / n / "agent_id").is_file()]
    if missing:
        print(
            f"gpumeter agent resend: no spool for node(s) {', '.join(missing)} under {spool_root}",
            file=sys.stderr,
        )
        return 2
    print(f"resend from {_fmt_ts(args.since)} UTC on for {len(nodes)} node(s)")
    idle: list[str] = []
    for node in nodes:
        d = spool_root / node
        tmp = d / f".{RESEND_FILE}.tmp"
        try:
            tmp.write_text(str(args.since))
            tmp.replace(d / RESEND_FILE)
        except OSError as exc:
            print(
                f"  {node}: cannot write the resend request ({exc.strerror}); free some space "
                "on the spool's disk and try again",
                file=sys.stderr,
            )
            return 1
        try:  # is an agent running on this spool? (it holds the spool's lock)
            _open_for_resend(d).close()
            idle.append(node)
        except SpoolError:
            print(f"  {node}: handed to the running agent (it serves the request within a second)")
    if not idle:
        return 0
    bootstrap = args.resend_bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        for node in idle:
            print(
                f"  {node}: no agent running and no bootstrap given; the request waits in the "
                "spool for the next start"
            )
        return 0
    return _resend_now(idle, spool_root, bootstrap, args.resend_topic, args.since)


def _open_for_resend(directory: Path) -> Spool:
    """Open a node's spool without applying any bound or retention: this command must not
    delete what the agent (with its own --retain and --spool-max-mb) still keeps."""
    from agents.spool import Spool

    return Spool(directory, fsync=False, max_bytes=2**62, retain_bytes=2**62, retain_s=float("inf"))


def _resend_now(
    nodes: list[str], spool_root: Path, bootstrap: str, topic: str | None, since: int
) -> int:
    from agents.kafka import RESEND_FILE, Delivery, make_producer
    from schemas.topics import USAGE

    producer = make_producer(bootstrap)
    failed = 0
    try:
        for node in nodes:
            spool = _open_for_resend(spool_root / node)
            try:
                delivery = Delivery(spool, producer, topic or USAGE, key=node.encode())
                n = delivery.request_resend(since)
                (spool.directory / RESEND_FILE).unlink(missing_ok=True)
                ok = delivery.flush(timeout=60)
                print(
                    f"  {node}: {n} retained batch(es) re-sent, {spool.pending_count} pending "
                    f"sent too; {'acknowledged' if ok else 'NOT all acknowledged: ' + delivery.stats.last_error}"
                )
                failed += not ok
            finally:
                spool.close()
    finally:
        producer.close(timeout=5)
    return 1 if failed else 0


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
