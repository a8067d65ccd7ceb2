"""``gpumeter agent``: run the node agent (NVML, simulated fleet or trace replay)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from agents.agent import DEFAULT_SCHEMA_VERSION, EMITTED_VERSIONS
from agents.console import Stop
from agents.inference_cli import register_inference
from agents.options import (
    float_range,
    int_range,
    parse_bootstrap,
    parse_duration,
    parse_node_id,
    parse_retention,
    parse_since,
    parse_speed,
    parse_start,
    parse_topic,
)
from agents.resend import run_resend
from kernel.settings import Settings

DESCRIPTION = """\
Sample GPUs every second, attribute each GPU-second to the allocations holding it (tenant,
job and share in milli-GPUs; the rest idle), spool the records durably on disk and publish
them to Kafka topic gpu.usage.v1.

sources (pick one):
  --nvml        the real GPUs of this machine, at 1 Hz (needs an NVIDIA driver)
  --simulate    a simulated fleet (N nodes x M GPUs, several tenants), in accelerated time;
                with --shares every node also has shared GPUs and a MIG GPU
  --trace       replay the Alibaba GPU-cluster trace in ../shared/data, in accelerated time
  --openb FILE  replay a pod list of Alibaba cluster-trace-gpu-v2023 ("openb"): fractional
                pods packed onto shared GPUs, in accelerated time

contract version (--schema-version): 2 sends each device's seconds as frames with their
shares; 1 sends one tenant per GPU-second (no shared GPUs), for a worker not yet upgraded,
and is kept for one release only.

where it publishes: GPUMETER_KAFKA_BOOTSTRAP (or --bootstrap); when neither is set, an embedded
broker is started for the run (it keeps data in memory only, so this is a smoke test).
"""

EXAMPLES = """\
examples:
  gpumeter agent --simulate --nodes 2 --gpus 8 --duration 1h
  gpumeter agent --simulate --shares --duration 6h
  gpumeter agent --simulate --duration 1d --speed 3600 --bootstrap localhost:9092
  gpumeter agent --trace --max-gpus 256 --duration 2h
  gpumeter agent --openb openb_pod_list_default.csv --openb-offset 9800000 --duration 2h
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
    src.add_argument(
        "--openb",
        type=Path,
        default=None,
        metavar="FILE",
        help="replay an openb pod list (Alibaba cluster-trace-gpu-v2023), shared GPUs included",
    )
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
    fleet.add_argument(
        "--openb-offset",
        type=int_range(0, 10**9),
        default=0,
        help="--openb: the pod list's second replayed first (default 0)",
    )
    fleet.add_argument(
        "--shares",
        action="store_true",
        help="--simulate: every node also has shared GPUs (fractional pods) and a GPU in MIG "
        "mode (needs --gpus 3 or more and --schema-version 2)",
    )
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
        "--schema-version",
        type=int,
        choices=EMITTED_VERSIONS,
        default=DEFAULT_SCHEMA_VERSION,
        help=f"contract version of the records (default {DEFAULT_SCHEMA_VERSION}): 2 = frames "
        "with shares; 1 = one tenant per GPU-second, for a worker not yet upgraded, kept for "
        "one release, cannot carry shared GPUs",
    )
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

    actions = p.add_subparsers(dest="agent_command", metavar="{resend,tokens}")
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
    register_inference(actions)  # gpumeter agent tokens


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


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.kafka import make_producer
    from agents.launch import run_fleet, run_nvml
    from kernel.kafka import kafka_python_options
    from schemas.topics import USAGE

    if not (args.nvml or args.simulate or args.trace or args.openb):
        args.agent_parser.error(
            "one of the arguments --nvml --simulate --trace --openb is required"
        )
    if args.openb and args.schema_version == 1:
        args.agent_parser.error("--openb replays shared GPUs: it needs --schema-version 2")
    if args.shares and args.schema_version == 1:
        args.agent_parser.error("--shares simulates shared GPUs: it needs --schema-version 2")
    if args.shares and args.gpus < 3:
        args.agent_parser.error("--shares needs --gpus 3 or more (whole, shared and MIG GPUs)")
    topic = args.topic or USAGE
    spool_root = args.spool_dir or settings.data_dir / "spool"
    stop = Stop()
    stop.install()
    with kafka_bootstrap(args.bootstrap, settings) as bootstrap:
        producer = make_producer(bootstrap, **kafka_python_options(settings))
        try:
            if args.nvml:
                return run_nvml(args, producer, topic, spool_root, stop)
            return run_fleet(args, producer, topic, spool_root, stop)
        finally:
            producer.close(timeout=1 if stop() else 5)
