"""``gpumeter agent resend``: ask each node's spool to send its retained (already acknowledged)
batches again, through the running agent or, when none runs, directly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agents.console import fmt_ts
from agents.spool import Spool
from kernel.settings import Settings

#: Name of the resend request file in a node's spool directory (``gpumeter agent resend``).
RESEND_FILE = "resend"


def run_resend(args: argparse.Namespace, settings: Settings) -> int:
    """``gpumeter agent resend --since T``: ask each node's spool to send retained batches again."""
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
    print(f"resend from {fmt_ts(args.since)} UTC on for {len(nodes)} node(s)")
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
    from kernel.kafka import kafka_python_options

    return _resend_now(
        idle, spool_root, bootstrap, args.resend_topic, args.since, kafka_python_options(settings)
    )


def _open_for_resend(directory: Path) -> Spool:
    """Open a node's spool without applying any bound or retention: this command must not
    delete what the agent (with its own --retain and --spool-max-mb) still keeps."""
    return Spool(directory, fsync=False, max_bytes=2**62, retain_bytes=2**62, retain_s=float("inf"))


def _resend_now(
    nodes: list[str],
    spool_root: Path,
    bootstrap: str,
    topic: str | None,
    since: int,
    options: dict[str, Any],
) -> int:
    from agents.kafka import Delivery, make_producer
    from schemas.topics import USAGE

    producer = make_producer(bootstrap, **options)
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


def describe_retained(spool: Spool) -> str:
    """What a spool still retains for resend: seqs and UTC span, or that nothing is left."""
    kept = spool.retained()
    if not kept:
        return "none: beyond the retention window, so that data is lost"
    first = kept[0].first_ts if kept[0].first_ts is not None else kept[0].last_ts
    return f"seqs {kept[0].seq}..{kept[-1].seq}, {fmt_ts(first)}..{fmt_ts(kept[-1].last_ts)} UTC"
