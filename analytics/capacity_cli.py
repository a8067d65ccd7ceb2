"""``gpumeter capacity``: the GPUs idle now, per model, and how many are likely to stay idle."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kernel.settings import Settings

EPILOG = """\
how to read it:
  idle now    idle GPU-equivalents in the latest closed minute (the idle share of a shared
              GPU counts by its share); "whole" counts devices idle all minute at full share
  expected    mean idle GPUs at that hour of week over the past --weeks weeks
  likely      a low quantile (--quantile) of the same: the figure to sell against
  error       the forecast's mean absolute error over the last --backtest-weeks weeks, and
              the share of those hours in which fewer GPUs were idle than "likely" promised

examples:
  gpumeter capacity                              the table, now
  gpumeter capacity --at "2026-03-02 14:00"      as it was then (UTC)
  gpumeter capacity --publish --every 60         a live feed on gpu.capacity.v1, every minute
  gpumeter capacity --json                       the feed records on stdout
  gpumeter capacity --schema > capacity.schema.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capacity",
        help="sellable capacity: GPUs idle now per model, and the forecast for the next hours",
        description="Read the ledger and print, per GPU model, the capacity idle in the latest "
        "closed minute, a forecast of how much stays idle in each of the next hours (from the "
        "same hour of week in past weeks) and that forecast's error measured on past weeks, at "
        "the model's spot rate. With --publish, send one record per model to gpu.capacity.v1 "
        "(its JSON Schema: --schema).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--at", help="UTC time to describe, 'YYYY-MM-DD HH:MM' (default: now)")
    p.add_argument("--hours", type=_positive, default=6, help="forecast horizon (default 6)")
    p.add_argument("--weeks", type=_positive, default=4, help="weeks of history (default 4)")
    p.add_argument("--backtest-weeks", type=_positive, default=2, help="weeks scored (default 2)")
    p.add_argument(
        "--quantile", type=_fraction, default=0.2, help="'likely' quantile, 0..1 (default 0.2)"
    )
    p.add_argument("--assets", type=Path, default=None, help="asset register (spot rates)")
    p.add_argument("--database", default=None, help="ClickHouse database (default: the DSN's)")
    p.add_argument("--json", action="store_true", help="print the feed records as JSON lines")
    p.add_argument("--publish", action="store_true", help="send the records to Kafka")
    p.add_argument("--topic", default=None, help="topic for --publish (gpu.capacity.v1)")
    p.add_argument("--every", type=_positive, default=None, metavar="SECONDS", help="repeat")
    p.add_argument("--schema", action="store_true", help="print the feed's JSON Schema, exit")
    p.set_defaults(handler=_run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.capacity import capacity_json_schema

    if args.schema:
        print(json.dumps(capacity_json_schema(), indent=2, sort_keys=True))
        return 0
    try:
        at = _parse_at(args.at)
    except ValueError as exc:
        print(f"gpumeter capacity: {exc}", file=sys.stderr)
        return 2
    from analytics.assets import AssetRegisterError, load_assets

    try:
        register_ = load_assets(args.assets)
    except AssetRegisterError as exc:
        print(f"gpumeter capacity: {exc}", file=sys.stderr)
        return 2
    spot = {m: r.spot_per_gpu_hour for m, r in register_.models.items()}
    from kernel.clickhouse import connect_configured

    if args.publish and not settings.kafka_bootstrap:
        print(
            "gpumeter capacity: --publish needs a broker: set GPUMETER_KAFKA_BOOTSTRAP",
            file=sys.stderr,
        )
        return 2
    client = connect_configured(settings, args.database)
    producer = _producer(settings) if args.publish else None
    while True:
        records = _once(args, settings, client, at or datetime.now(UTC), spot, register_.currency)
        if records is None:
            return 1  # said why; a live feed that has nothing to say must not look healthy
        if producer is not None:
            _send(producer, args.topic, records)
        if args.every is None:
            return 0
        time.sleep(args.every)


def _once(
    args: argparse.Namespace,
    settings: Settings,
    client: Any,
    at: datetime,
    spot: dict[str, Decimal],
    currency: str,
) -> list[Any] | None:
    from analytics.capacity import capacity, latest_minute_with_data
    from analytics.capacity_view import feed_records, print_table

    cap = capacity(
        client,
        at,
        grace_s=settings.grace_seconds,
        horizon_h=args.hours,
        weeks=args.weeks,
        backtest_weeks=args.backtest_weeks,
        quantile=args.quantile,
        spot=spot,
    )
    if not cap.models:
        latest = latest_minute_with_data(client)
        hint = (
            f"the latest minute in the ledger is {latest:%Y-%m-%d %H:%M} UTC (--at)"
            if latest
            else "the ledger is empty"
        )
        print(
            f"gpumeter capacity: no device reported in the minute {cap.minute:%Y-%m-%d %H:%M} "
            f"UTC: is the worker running and caught up? ({hint})",
            file=sys.stderr,
        )
        return None
    records = feed_records(cap, currency, int(time.time()))
    if args.json:
        for r in records:
            print(r.model_dump_json(), flush=True)
    else:
        print_table(cap, currency, args)
    return records


def _parse_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"--at {text!r}: expected 'YYYY-MM-DD HH:MM' (UTC)")


def _producer(settings: Settings) -> Any:
    from kafka import KafkaProducer

    from kernel.kafka import kafka_python_options

    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        **kafka_python_options(settings),
    )


def _send(producer: Any, topic: str | None, records: list[Any]) -> None:
    from schemas.capacity import CAPACITY_TOPIC

    futures = [
        producer.send(
            topic or CAPACITY_TOPIC,
            key=r.gpu_model.encode(),
            value=r.model_dump_json().encode(),
        )
        for r in records
    ]
    producer.flush(timeout=30)
    for f in futures:
        f.get(timeout=30)  # a refused record raises: the feed must not go quiet silently
