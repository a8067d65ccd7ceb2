"""Running the node agent from ``gpumeter agent``'s options: a simulated or replayed fleet in
accelerated time (:func:`run_fleet`), or this machine's GPUs through NVML at 1 Hz
(:func:`run_nvml`), each with its progress line and closing report. Parsing is in
:mod:`agents.cli`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agents.console import StatusLine, Stop, delivery_report, fmt_ts
from agents.fleet import build_agents, make_fleet
from agents.options import default_start


def run_fleet(
    args: argparse.Namespace, producer: object, topic: str, spool_root: Path, stop: Stop
) -> int:
    from agents.agent import run_accelerated

    start = args.start if args.start is not None else default_start()
    fleet = make_fleet(
        trace=args.trace,
        start=start,
        duration_s=args.duration,
        nodes=args.nodes,
        gpus_per_node=args.gpus,
        seed=args.seed,
        max_gpus=args.max_gpus,
        trace_dir=args.trace_dir,
        shares=args.shares,
        openb=args.openb,
        openb_offset_s=args.openb_offset,
    )
    samplers = fleet.samplers()
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
        schema_version=args.schema_version,
    )
    n_gpus = sum(len(s.gpus()) for s in samplers)  # devices: MIG slices count one each
    wall0 = time.monotonic()
    status = StatusLine(enabled=not args.quiet)

    def progress(done: int, total: int) -> None:
        sent = sum(a.stats.samples for a in agents)
        pending = sum(a.spool.pending_samples for a in agents)
        failures = sum(a.delivery.stats.failures for a in agents)
        rate = sent / max(time.monotonic() - wall0, 1e-9)
        status.show(
            f"{done / total:6.1%}  sim {fmt_ts(start + done)}  {n_gpus} GPUs  "
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


def run_nvml(
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
        schema_version=args.schema_version,
    )
    status = StatusLine(enabled=not args.quiet)

    def on_second(ts: int) -> None:
        status.show(
            f"{fmt_ts(ts)}  {len(sampler.gpus())} GPUs  spooled {agent.stats.samples:,}  "
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
