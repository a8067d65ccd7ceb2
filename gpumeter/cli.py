"""The ``gpumeter`` console script: one entry point, one subcommand per job.

Each bounded context registers its own subcommands (``agents.cli``, ``streams.cli``,
``billing.cli``, ``analytics.cli``); this module owns the shared ones (demo, sql, db, schema,
check), is the only place that reads the environment, and turns each context's error root into
a one-line message (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from kernel.settings import Settings, SettingsError, load_settings

EPILOG = """\
getting started:
  gpumeter demo                      run the whole pipeline on a simulated fleet (embedded
                                     broker + embedded ClickHouse), then print exact totals
  gpumeter sql "SELECT * FROM usage_daily LIMIT 10"
                                     query the demo's ClickHouse
  gpumeter agent --simulate --nodes 2 --gpus 8 --duration 1h
                                     publish simulated usage to a broker
  gpumeter worker                    turn usage on Kafka into the ClickHouse ledger

configuration comes from GPUMETER_* environment variables; `gpumeter check` validates it and
prints every problem at once. Run `gpumeter <command> --help` for each command.
"""

#: Modules that add subcommands: each defines ``register(subparsers) -> None``.
COMMAND_MODULES = (
    "agents.cli",
    "streams.cli",
    "billing.cli",
    "gpumeter.demo",
    "gpumeter.sql",
    "gpumeter.admin",
    "gpumeter.preemption",
    "analytics.cli",
    "analytics.capacity_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpumeter",
        description="Exact GPU metering and billing: who used which GPU for how long, what "
        "each tenant owes, and whether the fleet earns its keep.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings(**getattr(args, "settings_overrides", {}))
    except SettingsError as exc:
        print(f"gpumeter: {exc}", file=sys.stderr)
        return 2
    try:
        return int(handler(args, settings) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _expected_errors() as exc:
        # Errors users can act on get their message, not a traceback.
        print(f"gpumeter {args.command}: {exc}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The error root of each context and the kernel's errors: their messages say what to do."""
    from agents.errors import AgentError
    from analytics.errors import AnalyticsError
    from billing.errors import BillingError
    from infra.embedded.broker import BrokerError
    from kernel.clickhouse import ClickHouseError
    from schemas.errors import SchemaError
    from streams.errors import StreamError

    return (
        AgentError,
        AnalyticsError,
        BillingError,
        BrokerError,
        ClickHouseError,
        SchemaError,
        SettingsError,
        StreamError,
    )


if __name__ == "__main__":
    sys.exit(main())
