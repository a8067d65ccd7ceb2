"""``gpumeter agent tokens``: the inference companion's command (see agents/README.md)."""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from agents.options import parse_bootstrap, parse_node_id, parse_topic
from kernel.settings import Settings

DESCRIPTION = """\
Read the Prometheus /metrics of the inference servers on this node (vLLM, Text Generation
Inference, SGLang), attribute their prompt and generated tokens to the allocation of the GPUs
each server runs on (the allocation file the NVML sampler reads), and publish them as work units
(unit tokens) on Kafka topic gpu.work.v1. A failed scrape is counted and the next window covers
it; a server restart (a counter lower than before) counts the new value.
"""

EXAMPLES = """\
examples:
  gpumeter agent tokens --config /etc/gpumeter/inference.toml --check
  gpumeter agent tokens --config /etc/gpumeter/inference.toml --bootstrap kafka:9092
  gpumeter agent tokens --config inference.toml --once     (one scrape, send, exit)

the configuration format is in agents/inference_config.py and agents/README.md.
"""


def register_inference(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "tokens",
        help="publish the tokens of inference servers on this node (vLLM, TGI, SGLang)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        required=True,
        help="TOML or JSON endpoint configuration",
    )
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--once", action="store_true", help="scrape once, send, and exit")
    p.add_argument(
        "--bootstrap",
        dest="tokens_bootstrap",
        metavar="HOST:PORT",
        type=parse_bootstrap,
        default=None,
        help="Kafka bootstrap host:port[,host:port] (default GPUMETER_KAFKA_BOOTSTRAP)",
    )
    p.add_argument(
        "--topic",
        dest="tokens_topic",
        metavar="TOPIC",
        type=parse_topic,
        default=None,
        help="work-units topic (default gpu.work.v1)",
    )
    p.add_argument(
        "--node-id",
        dest="tokens_node_id",
        metavar="ID",
        type=parse_node_id,
        default=None,
        help="node id in each report's source (default: the config's, else the host name)",
    )
    p.add_argument(
        "--state-dir",
        dest="tokens_state_dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="baselines and unsent reports (default: the config's, else <data_dir>/tokens)",
    )
    p.set_defaults(handler=run_tokens)


def run_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from agents.attribution import Attributor
    from agents.console import Stop
    from agents.inference_config import load_config
    from agents.inference_scrape import TokenCompanion
    from agents.kafka import make_producer
    from schemas.topics import WORK

    config = load_config(args.config)  # InferenceConfigError is an AgentError: message, exit 1
    if args.check:
        for ep in config.endpoints:
            print(f"{ep.name}: {ep.kind.name} {ep.url} on {len(ep.gpus)} GPU(s)")
        print(f"configuration OK: {len(config.endpoints)} endpoint(s), every {config.interval_s} s")
        return 0
    bootstrap = args.tokens_bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print(
            "gpumeter agent tokens: no Kafka bootstrap (--bootstrap or GPUMETER_KAFKA_BOOTSTRAP)",
            file=sys.stderr,
        )
        return 2
    producer = make_producer(bootstrap, client_id="gpumeter-tokens")
    companion = TokenCompanion(
        config.endpoints,
        Attributor(allocation_file=config.allocation_file),
        producer,
        args.tokens_topic or WORK,
        args.tokens_state_dir or config.state_dir or settings.data_dir / "tokens",
        args.tokens_node_id or config.node_id or socket.gethostname(),
    )
    stop = Stop()
    stop.install()
    try:
        while True:
            companion.scrape_once()
            if args.once or stop():
                break
            # Scrapes on multiples of the interval: windows of equal length on every node.
            wake = (int(time.time()) // config.interval_s + 1) * config.interval_s
            while not stop() and time.time() < wake:
                companion.pump()
                time.sleep(min(0.2, max(0.0, wake - time.time())))
            if stop():
                break
        done = companion.flush(timeout=10 if args.once else 3)
    finally:
        companion.close()
        producer.close(timeout=1)
    s = companion.stats
    print(
        f"tokens: {s.tokens:,} in {s.reports} report(s); failed scrapes "
        f"{sum(s.scrape_failures.values())}; counter resets {s.resets}; unattributed "
        f"{s.unattributed_tokens:,}; invalid {s.invalid_reports}; dropped {s.dropped_reports}; "
        f"{'all acknowledged' if done else f'{len(companion.outbox)} unsent (kept for the next start)'}"
    )
    if args.once and s.scrape_failures:
        return 1  # a one-shot run that could not read an endpoint did not do its job
    return 0 if done or stop() else 1
