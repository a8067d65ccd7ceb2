"""``gpumeter worker``: run the stream worker (Faust) that turns usage into the ClickHouse ledger."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import socket
import sys
import time
from typing import Any

from kernel.settings import Settings
from streams.health import ExitCode

DESCRIPTION = """\
Consume gpu.usage.v1 (contract v2 frames, or v1 sample batches for one more release), validate
every record (bad ones go to gpu.usage.rejected.v1 and the usage_rejected table, with the
reason), count every GPU-second exactly once per (tenant, job, share, GPU, minute), and write
the raw archive (usage_frames) and the ledger (usage_minutely) to ClickHouse before committing
offsets. Closed minutes are also emitted to
usage.minutely.v1. Work units (gpu.work.v1) go to the work_units table and preemption records
(gpu.preemptions.v1, e.g. from `gpumeter preemption report`) to the preemptions table, under the
same rules (validated, rejected with a reason, written before offsets are committed).

Kafka: GPUMETER_KAFKA_BOOTSTRAP (or --bootstrap). ClickHouse: GPUMETER_CLICKHOUSE_DSN
(default: the embedded engine in <data_dir>/clickhouse; only one process may open it at a time).

The worker never limps on. Exit status (run it under a supervisor that restarts it; restarting
is always safe, totals stay exact):
  0   stopped on request (SIGTERM, SIGINT, --exit-when-idle)
  2   invalid configuration or arguments; with --exit-when-idle, also a broker that refuses
      to show the group's committed offsets (ACL, credentials, version)
  69  the broker could not be reached within --broker-wait-s at start; with --exit-when-idle,
      the group's lag could not be read for 120 s
  70  a processor, timer or persistence step raised (nothing of it was committed)
  75  stalled: no progress for --stall-exit-s while records were waiting
  76  a requested stop did not finish within --stop-timeout-s
Liveness and counters: --metrics-port (Prometheus /metrics, /healthz) and the status file
<data_dir>/worker/<app-id>.status.json, rewritten every second.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run the stream worker (usage -> ClickHouse ledger)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap (overrides GPUMETER_KAFKA_BOOTSTRAP)"
    )
    p.add_argument("--database", default=None, help="ClickHouse database (default: the DSN's)")
    p.add_argument("--topic", default=None, help="usage topic (default gpu.usage.v1)")
    p.add_argument(
        "--minutely-topic",
        default=None,
        help="where closed minutes are emitted (default usage.minutely.v1)",
    )
    p.add_argument(
        "--rejected-topic",
        default=None,
        help="where rejections are emitted (default gpu.usage.rejected.v1)",
    )
    p.add_argument("--work-topic", default=None, help="work-units topic (default gpu.work.v1)")
    p.add_argument(
        "--preemptions-topic",
        default=None,
        help="preemption records topic (default gpu.preemptions.v1)",
    )
    p.add_argument("--app-id", default="gpumeter-worker", help="consumer group / Faust app id")
    p.add_argument(
        "--exit-when-idle",
        type=_non_negative,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds without new records, once caught up on every "
        "assigned partition and the consumer group's committed offsets reach the end of "
        "every partition of its topics, whoever holds them (batch runs, demo, tests)",
    )
    p.add_argument(
        "--no-raw-archive", action="store_true", help="do not write the raw archive (usage_frames)"
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (default: off; "
        "9464 is the usual choice; 0 picks a free port and logs it)",
    )
    p.add_argument(
        "--stall-exit-s",
        type=_non_negative,
        default=120.0,
        metavar="SECONDS",
        help="exit 75 after this long without progress while records wait, a chunk "
        "is stuck in the processor or the event loop is blocked (default 120; 0: "
        "only report it)",
    )
    p.add_argument(
        "--stop-timeout-s",
        type=_positive,
        default=25.0,
        metavar="SECONDS",
        help="after SIGTERM/SIGINT, exit 76 if the clean stop has not finished by "
        "then (default 25: inside Kubernetes' 30 s grace period)",
    )
    p.add_argument(
        "--broker-wait-s",
        type=_non_negative,
        default=30.0,
        metavar="SECONDS",
        help="at start, exit 69 if no bootstrap broker answers within this long (default 30)",
    )
    p.add_argument(
        "--chunk-records",
        type=_chunk_records,
        default=DEFAULT_CHUNK_RECORDS,
        metavar="N",
        help=f"records processed and committed together, per topic, 1..{MAX_CHUNK_RECORDS} (default "
        f"{DEFAULT_CHUNK_RECORDS}); larger chunks amortise the per-insert cost (on the bench, "
        "steady: 400 records about 140k GPU-seconds/s, 800 about 170k) but redo more after a "
        "crash and hold more records in memory (a v2 record of 8 GPUs x 60 s is about 17 KiB "
        "as JSON, ~100 KiB parsed); a chunk that is not full closes within 1 s",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO (default WARNING)")
    p.set_defaults(handler=run)


#: ``WorkerConfig.chunk_records`` (streams.app imports Faust: not loaded for ``--help``).
DEFAULT_CHUNK_RECORDS = 800
#: More records per chunk than this is a typo, not tuning: a chunk is held in memory and
#: redone whole after a crash.
MAX_CHUNK_RECORDS = 10_000


def _chunk_records(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= MAX_CHUNK_RECORDS:
        raise argparse.ArgumentTypeError(f"{text}: must be an integer 1..{MAX_CHUNK_RECORDS}")
    return v


def _non_negative(text: str) -> float:
    v = float(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number >= 0")
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number > 0")
    return v


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text}: must be a port number from 0 to 65535")
    return int(text)


def wait_for_broker(brokers: list[tuple[str, int]], timeout_s: float) -> str | None:
    """Wait until one bootstrap broker accepts a connection; None, or why none did."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        for host, port in brokers:
            try:
                socket.create_connection((host.strip("[]"), port), timeout=2.0).close()
                return None
            except OSError as exc:
                last = f"{host}:{port}: {exc.strerror or exc}"
        if time.monotonic() >= deadline:
            return last
        time.sleep(0.5)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from kernel.clickhouse import connect_configured
    from kernel.kafka import faust_broker_options, kafka_python_options
    from kernel.settings import parse_bootstrap
    from schemas import topics
    from schemas.clickhouse.migrate import migrate
    from streams.app import WorkerConfig, create_app, guarded
    from streams.clickhouse.sink import LedgerSink
    from streams.health import Health, Watchdog
    from streams.idle_exit import IdleExit, group_lag_reader
    from streams.metrics import MetricsServer, Sources, write_status
    from streams.preemption import ClickHousePreemptionSink, PreemptionProcessor
    from streams.processor import UsageProcessor
    from streams.work import WorkProcessor

    bootstrap = args.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print(
            "gpumeter worker: no Kafka to read from: set GPUMETER_KAFKA_BOOTSTRAP or --bootstrap "
            "(`gpumeter demo` starts an embedded broker and a worker for you)",
            file=sys.stderr,
        )
        return ExitCode.CONFIG
    try:
        brokers = parse_bootstrap(bootstrap)
    except ValueError as exc:
        print(f"gpumeter worker: bad Kafka bootstrap {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    # Faust retries an unreachable broker for ever while the process looks alive (and a bad
    # host name ended in a traceback and exit 0): fail at start, within a stated time.
    why = wait_for_broker(brokers, args.broker_wait_s)
    if why is not None:
        print(
            f"gpumeter worker: cannot reach the Kafka broker at {bootstrap} within "
            f"{args.broker_wait_s:g} s ({why}); exiting {int(ExitCode.UNAVAILABLE)}",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE

    cluster = settings.clickhouse_cluster
    client = connect_configured(settings, args.database, cluster=cluster)
    migrate(client, raw_ttl_days=settings.raw_ttl_days, cluster=cluster)
    processor = UsageProcessor(
        LedgerSink(client, archive_raw=not args.no_raw_archive),
        grace_s=settings.grace_seconds,
        max_future_skew_s=settings.max_future_skew_s,
    )
    state_dir = settings.data_dir.resolve() / "worker"
    state_dir.mkdir(parents=True, exist_ok=True)
    config = WorkerConfig(
        bootstrap=bootstrap,
        app_id=args.app_id,
        usage_topic=args.topic or topics.USAGE,
        work_topic=args.work_topic or topics.WORK,
        preemptions_topic=args.preemptions_topic or topics.PREEMPTIONS,
        minutely_topic=args.minutely_topic or topics.MINUTELY,
        rejected_topic=args.rejected_topic or topics.REJECTED,
        partitions=settings.usage_partitions,
        rebalance_timeout_s=settings.kafka_rebalance_timeout_s,
        session_timeout_s=settings.kafka_session_timeout_s,
        heartbeat_s=settings.kafka_heartbeat_interval_s,
        datadir=state_dir / "faust",
        faust_options=tuple(faust_broker_options(settings).items()),
        chunk_records=args.chunk_records,
    )
    last = {"records": 0, "at": time.monotonic(), "printed": 0.0, "status_warned": -60.0}

    def on_chunk(p: UsageProcessor) -> None:
        last["records"] = p.stats.records
        last["at"] = time.monotonic()

    work = WorkProcessor(processor.sink)
    health = Health(stall_after_s=args.stall_exit_s or 120.0)
    preemptions = PreemptionProcessor(ClickHousePreemptionSink(processor.sink))
    app = create_app(
        config,
        processor,
        on_chunk=on_chunk,
        work_processor=work,
        health=health,
        preemption_processor=preemptions,
    )
    sources = Sources(health, lambda: processor.stats, lambda: (work.accepted, work.rejected))
    status_path = state_dir / f"{_file_name(args.app_id)}.status.json"

    async def _status() -> None:
        now = time.monotonic()
        try:
            write_status(status_path, sources)
        except OSError as exc:  # a full or read-only disk must not stop the meter: say so
            if now - last["status_warned"] >= 60:
                last["status_warned"] = now
                logging.getLogger(__name__).warning(
                    "cannot write the status file %s: %s", status_path, exc
                )
        if now - last["printed"] >= 5:
            last["printed"] = now
            print("worker " + _stats_line(processor), file=sys.stderr, flush=True)
        if idle_exit is not None:
            idle_exit.check(
                records=processor.stats.records,
                last_record_at=last["at"],
                caught_up_here=health.lag == 0 and health.clock() - health.last_lag_observed < 3.0,
            )

    idle_exit = (
        IdleExit(
            args.exit_when_idle,
            args.app_id,
            group_lag_reader(
                bootstrap,
                args.app_id,
                (config.usage_topic, config.work_topic, config.preemptions_topic),
                kafka_python_options(settings),
            ),
        )
        if args.exit_when_idle
        else None
    )
    app.timer(1.0)(guarded("the status timer", _status))

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    # The worker allocates millions of short-lived sample objects; the default GC threshold
    # (700) makes the collector run constantly. Measured: 15-20 % more samples/s.
    gc.set_threshold(50_000, 20, 20)
    if args.metrics_port is not None:
        try:
            server = MetricsServer(sources, args.metrics_port).start()
        except OSError as exc:
            client.close()
            print(
                f"gpumeter worker: cannot serve metrics on port {args.metrics_port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return ExitCode.CONFIG
        print(
            f"worker: metrics on http://0.0.0.0:{server.port}/metrics (liveness: /healthz)",
            file=sys.stderr,
            flush=True,
        )
    Watchdog(health, stall_exit=args.stall_exit_s > 0, stop_timeout_s=args.stop_timeout_s).start()
    worker = _make_worker(app, health, loglevel="INFO" if args.verbose else "WARNING", quiet=True)
    code: Any = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
    finally:
        stats = {
            **dataclasses.asdict(processor.stats),
            "work_accepted": work.accepted,
            "work_rejected": work.rejected,
            "preemptions_accepted": preemptions.accepted,
            "preemptions_rejected": preemptions.rejected,
            "log_rewinds": health.log_rewinds,
        }
        print("WORKER-STATS " + json.dumps(stats), flush=True)
        client.close()
    if code not in (0, None):
        # Faust itself failed (e.g. the broker went away during start); its error is logged.
        print(
            f"gpumeter worker: Faust stopped with status {code!r}; exiting "
            f"{int(ExitCode.SOFTWARE)}",
            file=sys.stderr,
        )
        return ExitCode.SOFTWARE
    return ExitCode.OK


def _make_worker(app: Any, health: Any, **kwargs: Any) -> Any:
    """``faust.Worker`` that tells the watchdog when a stop was requested (the stop timeout)."""
    import faust

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # No terminal spinner. Faust's spins on every log record: it sets the root logger
            # to DEBUG, so each debug call of aiokafka and Faust (several per message sent or
            # fetched) built a record and ran handlers that dropped it. Measured with py-spy:
            # a fifth of the worker's main thread, as much as counting. The root logger keeps
            # the level given (WARNING, or INFO with --verbose).
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        def _on_sigterm(self) -> None:
            _stop_requested(health)
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            _stop_requested(health)
            super()._on_sigint()

    return Worker(app, **kwargs)


def _stop_requested(health: Any) -> None:
    if health.stop_requested is None:
        health.stop_requested = health.clock()


def _file_name(app_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in app_id)


def _stats_line(p: object) -> str:
    s = p.stats  # type: ignore[attr-defined]
    return (
        f"records {s.records:,}  samples {s.samples:,}  counted {s.new_seconds:,}  "
        f"duplicates {s.duplicates:,}  late {s.late:,}  rejected {s.rejected_records:,} "
        f"records / {s.rejected_samples:,} samples  conflicts {getattr(s, 'conflicts', 0):,}"
    )
