"""``gpumeter demo``: the whole pipeline on one machine, checked against ground truth.

Embedded broker (Tansu) + a stream worker (Faust, in a subprocess) + embedded ClickHouse (chDB)
+ a simulated fleet publishing a simulated day in accelerated time. Then: per-tenant totals
compared with the simulator's ground truth, the month's invoices, and the utilization report.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.options import int_range, parse_duration, parse_start
from gpumeter.demo_pipeline import (
    embedded_worker_env,
    prepare_data_dir,
    publish_and_process,
    start_worker,
    stop,
)
from gpumeter.ground_truth import compare_tokens_with_ground_truth, compare_with_ground_truth
from gpumeter.preemption_truth import compare_preemptions_with_ground_truth
from kernel.settings import Settings

__all__ = ["embedded_worker_env", "register", "run"]

DESCRIPTION = """\
Run the whole pipeline on this machine with nothing else running: an embedded Kafka-compatible
broker, the stream worker, an embedded ClickHouse in <data_dir>/clickhouse, and a simulated
fleet (default 4 nodes x 8 GPUs, 5 customers and the internal team "research", one simulated
day) publishing in accelerated time. Research jobs use idle GPUs and take whole GPUs back from
spot customers (preemptions, published on gpu.preemptions.v1 as a scheduler would). Then print
per-tenant GPU-hours and each preemption's lost GPU-seconds compared with the simulator's ground
truth ("exact: yes/no"), produce and finalize the month's invoices (research is internal: shown
back at cost, not invoiced), and write the utilization report.

Exit status: 0 when every figure matches the ground truth, 1 otherwise.
Re-running replaces the previous demo's data (and only demo data: a data directory holding
anything else is refused).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a simulated fleet and check it",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--nodes", type=int_range(1, 1000), default=4, help="simulated nodes, 1..1000 (default 4)"
    )
    p.add_argument(
        "--gpus", type=int_range(1, 64), default=8, help="GPUs per node, 1..64 (default 8)"
    )
    p.add_argument(
        "--duration",
        type=parse_duration,
        default=parse_duration("1d"),
        help="simulated time: 90s, 30m, 2h, 1d, 1h30m (1 s..366 d; default 1d)",
    )
    p.add_argument(
        "--start",
        type=parse_start,
        default=None,
        help="first simulated second, YYYY-MM-DD[THH:MM] UTC (default: yesterday)",
    )
    p.add_argument(
        "--seed", type=int_range(0, 2**63 - 1), default=7, help="simulation seed (default 7)"
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="replay the Alibaba GPU-cluster trace from ../shared/data instead of the "
        "simulated fleet (tenants are its services; capped by --max-gpus)",
    )
    p.add_argument(
        "--max-gpus",
        type=int_range(1, 100_000),
        default=128,
        help="with --trace: replayed GPUs at most, 1..100000 (default 128)",
    )
    p.add_argument(
        "--whole-gpus",
        action="store_true",
        help="simulate whole GPUs only (default: with 3+ GPUs per node, each node also has "
        "GPUs shared by several tenants in milli-GPU shares and one GPU in MIG mode)",
    )
    p.add_argument("--no-billing", action="store_true", help="skip invoices")
    p.add_argument("--no-report", action="store_true", help="skip the utilization report")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from agents.fleet import make_fleet
    from agents.options import default_start
    from agents.preemption_sim import INTERNAL_TENANT
    from agents.simulator import SimulatedFleet
    from agents.trace import TraceFleet

    console = Console(stderr=False)
    duration = args.duration
    start = args.start if args.start is not None else default_start()
    data_dir = settings.data_dir.resolve()
    embedded = settings.clickhouse_dsn is None
    database = None if embedded else "gpumeter_demo"
    if embedded:
        prepare_data_dir(data_dir)
    t_start = time.monotonic()
    console.rule("[bold]gpumeter demo")
    shares = not args.trace and not args.whole_gpus and args.gpus >= 3
    fleet: Any
    if args.trace:
        fleet = make_fleet(
            trace=True,
            start=start,
            duration_s=duration,
            nodes=args.nodes,
            gpus_per_node=args.gpus,
            seed=args.seed,
            max_gpus=args.max_gpus,
        )
    else:
        fleet = SimulatedFleet(
            seed=args.seed,
            nodes=args.nodes,
            gpus_per_node=args.gpus,
            start=start,
            duration_s=duration,
            shares=shares,
            internal=INTERNAL_TENANT,
        )
    if isinstance(fleet, TraceFleet):
        console.print(
            f"fleet: Alibaba DLRM trace replay, {fleet.gpu_count} GPUs, "
            f"{fleet.instances} instances ({fleet.dropped} beyond --max-gpus left out), "
            f"{_fmt(start)} .. {_fmt(start + duration)} UTC"
        )
    else:
        console.print(
            f"fleet: {args.nodes} nodes x {args.gpus} GPUs, 5 customers + internal "
            f"{INTERNAL_TENANT!r} ({len(fleet.preemptions)} spot preemptions), "
            f"{_fmt(start)} .. {_fmt(start + duration)} UTC (seed {args.seed}); "
            + (
                "whole GPUs, shared GPUs (milli-GPU shares) and a MIG GPU per node"
                if shares
                else "whole GPUs only"
                + ("" if args.whole_gpus else " (shared GPUs need 3+ GPUs per node)")
            )
        )

    from infra.embedded.broker import EmbeddedBroker
    from kernel.clickhouse import connect_configured
    from schemas.clickhouse.migrate import migrate
    from schemas.topics import default_topics

    cluster = settings.clickhouse_cluster
    client = connect_configured(settings, database, cluster=cluster)
    if database:
        on = f" ON CLUSTER {cluster}" if cluster else ""
        client.command(f"DROP DATABASE IF EXISTS {database}{on}")
        client = connect_configured(settings, database, cluster=cluster)
    migrate(client, raw_ttl_days=settings.raw_ttl_days, cluster=cluster)
    client.close()  # the worker subprocess needs the embedded engine's lock

    log_path = data_dir / "demo-worker.log"
    with EmbeddedBroker(log_path=data_dir / "demo-broker.log") as broker:
        broker.create_topics(default_topics(settings.usage_partitions))
        console.print(f"embedded broker on {broker.bootstrap}; worker log: {log_path}")
        worker = start_worker(broker.bootstrap, settings, database, log_path)
        try:
            published, took_publish = publish_and_process(
                console, fleet, broker.bootstrap, data_dir, start, duration, worker
            )
        finally:
            stop(worker)
    took_pipeline = time.monotonic() - t_start
    client = connect_configured(settings, database)
    checks = compare_with_ground_truth(console, client, fleet, start, start + duration)
    if not args.trace:
        checks += compare_tokens_with_ground_truth(console, client, fleet, start, start + duration)
        checks += compare_preemptions_with_ground_truth(console, client, fleet)
    exact = all(c.ok for c in checks)
    rate = published / max(took_publish, 1e-9)
    console.print(
        f"pipeline: {published:,} GPU-seconds in {took_publish:.1f} s "
        f"({rate:,.0f} GPU-seconds/s end to end); total so far {took_pipeline:.1f} s"
    )
    console.print(f"[bold]exact: {'[green]yes' if exact else '[red]NO'}[/]")
    if not exact:
        for c in checks:
            if not c.ok:
                console.print(f"  [red]{c.name}: expected {c.expected}, measured {c.measured}")
    period = datetime.fromtimestamp(start, UTC).strftime("%Y-%m")
    if args.trace and not args.no_billing:
        console.print(
            "[yellow]invoices skipped: the demo price book has contracts for the "
            "simulated tenants only; invoice the trace's services with your own: "
            "gpumeter invoices run --period " + period + " --pricebook PRICEBOOK.toml"
        )
    elif not args.no_billing:
        _billing(console, client, period, data_dir)
    if not args.no_report:
        _report(console, client, period, data_dir)
    console.rule()
    where = (
        f"the embedded ClickHouse in {data_dir / 'clickhouse'}"
        if embedded
        else f"database {database}"
    )
    console.print(f"data: {where}. Query it, for example:")
    db = f" --database {database}" if database else ""
    console.print(
        f'  gpumeter sql{db} "SELECT tenant, round(sum(gpu_milli_seconds)/3600000, 2) AS gpu_hours '
        f'FROM usage_daily GROUP BY tenant ORDER BY gpu_hours DESC"'
    )
    console.print(f"done in {time.monotonic() - t_start:.1f} s")
    return 0 if exact else 1


def _billing(console: Any, client: Any, period: str, data_dir: Path) -> None:
    from rich.table import Table

    from billing.service import invoice_month

    pricebook = Path(__file__).resolve().parent.parent / "billing" / "pricebook.demo.toml"
    out = data_dir / "demo" / "invoices"
    t0 = time.monotonic()
    summaries = invoice_month(client, pricebook, period, out)
    table = Table(
        title=f"invoices {period} (finalized; price book {pricebook.name})", title_justify="left"
    )
    for col in ("tenant", "number", "GPU-hours", "total"):
        table.add_column(col, justify="left" if col in ("tenant", "number") else "right")
    for s in summaries:
        table.add_row(s.tenant, s.number, f"{s.gpu_hours:,.2f}", f"{s.total:,.2f} {s.currency}")
    console.print(table)
    console.print(f"invoices exported (CSV, JSON, PDF) to {out} in {time.monotonic() - t0:.1f} s")


def _report(console: Any, client: Any, period: str, data_dir: Path) -> None:
    from analytics.report import write_report

    assets = Path(__file__).resolve().parent.parent / "analytics" / "assets.demo.toml"
    path = write_report(
        client, period, data_dir / "demo" / "report", assets if assets.exists() else None
    )
    console.print(f"utilization and ROA report: {path}")


def _fmt(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
