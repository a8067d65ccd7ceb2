"""``gpumeter preemption report``: publish one preemption record (``gpu.preemptions.v1``).

The node agent cannot know that an allocation was preempted; the scheduler that took the GPU
back can. Its integration calls this command (or publishes the same JSON itself, following
``schemas/json/gpu.preemptions.v1.schema.json``) once per device the allocation lost.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import Any

from kernel.settings import Settings

DESCRIPTION = """\
Publish one preemption record on Kafka topic gpu.preemptions.v1: allocation (tenant, job) at
--share-milli of GPU --gpu (or its MIG slice --mig) lost the device at --at (the first second
it no longer held it). With --checkpoint-at, the job's last checkpoint: the work from it up to
--at is lost; without it, everything the allocation ran on that device is lost. The worker
stores the record (table preemptions); the view preemption_losses counts the lost
milli-GPU-seconds from the ledger, `gpumeter report` shows them, and billing waives the plan's
minimum duration for a preempted job (plan option preempted_minimum, billing/README.md).

Times: RFC 3339 with a time zone (2026-01-01T12:00:05Z, 2026-01-01T13:00:05+01:00) or Unix
epoch seconds (1767268805). Report each device the allocation lost (one record per GPU or MIG
slice). Sending the same (tenant, job, gpu, mig, at) again replaces the earlier record.

Exit status: 0 published (the broker acknowledged it), 2 invalid arguments (the message names
the field), 1 the broker did not acknowledge it within --timeout.
"""

EXAMPLES = """\
examples:
  gpumeter preemption report --tenant hooli --job hooli-j0042 --gpu GPU-8f1e... \\
      --share-milli 1000 --at 2026-01-01T12:00:05Z --checkpoint-at 2026-01-01T11:50:00Z \\
      --preempted-by research --reason "internal demand"
  gpumeter preemption report ... --dry-run      (validate and print the record; send nothing)
"""

_EPOCH = re.compile(r"^\d{1,12}$")


def parse_instant(text: str) -> int:
    """RFC 3339 with a zone, or Unix epoch seconds, as epoch seconds (UTC)."""
    text = text.strip()
    if _EPOCH.match(text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected RFC 3339 (2026-01-01T12:00:05Z) or Unix epoch seconds"
        ) from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add Z for UTC (2026-01-01T12:00:05Z)"
        )
    if dt.microsecond:
        raise argparse.ArgumentTypeError(f"{text!r}: whole seconds only")
    return int(dt.timestamp())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preemption", help="report preemptions of allocations (from a scheduler)")
    actions = p.add_subparsers(dest="preemption_command", metavar="<action>", required=True)
    r = actions.add_parser(
        "report",
        help="publish one preemption record on gpu.preemptions.v1",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--tenant", required=True, help="the preempted allocation's tenant")
    r.add_argument("--job", required=True, help="the preempted allocation's job")
    r.add_argument("--gpu", required=True, metavar="GPU_UUID", help="the device's GPU UUID")
    r.add_argument(
        "--mig", metavar="MIG_UUID", default=None, help="the MIG slice (omit for a whole GPU)"
    )
    r.add_argument(
        "--share-milli",
        type=int,
        required=True,
        help="the allocation's share of the device, 1..1000 milli-GPUs (1000: all of it)",
    )
    r.add_argument("--at", type=parse_instant, required=True, help="first second without it")
    r.add_argument(
        "--checkpoint-at", type=parse_instant, default=None, help="the job's last checkpoint"
    )
    r.add_argument("--preempted-by", default=None, help="tenant that took the device")
    r.add_argument("--reason", default=None, help="short text, e.g. 'internal demand'")
    r.add_argument(
        "--bootstrap", default=None, help="Kafka host:port[,...] (default GPUMETER_KAFKA_BOOTSTRAP)"
    )
    r.add_argument("--topic", default=None, help="default gpu.preemptions.v1")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the ack")
    r.add_argument("--dry-run", action="store_true", help="validate and print; send nothing")
    r.set_defaults(handler=run)


def build_record(args: argparse.Namespace, now: float | None = None) -> Any:
    """The validated record; raises ``pydantic.ValidationError`` naming the bad field."""
    from schemas.preemption import PreemptionReported

    doc = {
        "tenant": args.tenant,
        "job": args.job,
        "gpu_uuid": args.gpu,
        "mig_uuid": args.mig,
        "share_milli": args.share_milli,
        "at": args.at,
        "checkpoint_at": args.checkpoint_at,
        "preempted_by": args.preempted_by,
        "reason": args.reason,
    }
    return PreemptionReported.model_validate(
        {k: v for k, v in doc.items() if v is not None},
        context={"now": time.time() if now is None else now},
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from schemas.reason import describe
    from schemas.topics import PREEMPTIONS

    try:
        record = build_record(args)
    except ValidationError as exc:
        print(f"gpumeter preemption report: invalid record: {describe(exc)}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(record.to_json().decode())
        return 0
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print(
            "gpumeter preemption report: no Kafka bootstrap (--bootstrap or "
            "GPUMETER_KAFKA_BOOTSTRAP)",
            file=sys.stderr,
        )
        return 2
    return _publish(record, bootstrap, args.topic or PREEMPTIONS, args.timeout, settings)


def _publish(record: Any, bootstrap: str, topic: str, timeout: float, settings: Settings) -> int:
    from kafka.errors import KafkaError

    from agents.kafka import make_producer
    from kernel.kafka import kafka_python_options

    # The agent's producer settings (acks=all, idempotent, lz4), except that a one-shot
    # command may block on the broker's metadata for as long as it is told to wait.
    producer = make_producer(
        bootstrap,
        client_id="gpumeter-preemption",
        max_block_ms=int(timeout * 1000),
        **kafka_python_options(settings),
    )
    try:
        producer.send(topic, key=record.tenant.encode(), value=record.to_json()).get(timeout)
    except KafkaError as exc:
        print(
            f"gpumeter preemption report: the broker at {bootstrap} did not acknowledge the "
            f"record within {timeout:g} s ({type(exc).__name__}: {exc}); nothing was stored, "
            "send it again",
            file=sys.stderr,
        )
        return 1
    finally:
        producer.close(timeout=5)
    print(f"published preemption {record.event_id} on {topic}")
    return 0
