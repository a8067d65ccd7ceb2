"""``gpumeter report``: utilization, idle capacity and return on assets for a period."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kernel.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="utilization, idle capacity and return on assets for a month or day",
        description="Read the ledger (and the period's invoices when they exist) and print "
        "utilization, energy, revenue, costs, margin, ROA, break-even utilization and the value "
        "of idle capacity per fleet, GPU model, node and tenant; write one self-contained HTML "
        "file with charts. Costs come from the asset register (TOML; see "
        "analytics/assets.demo.toml for every field).",
        epilog="examples:\n  gpumeter report --period 2025-03\n"
        "  gpumeter report --period 2025-03-14 --assets site-assets.toml --out reports/\n"
        "  gpumeter report --assets site-assets.toml --validate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--period", help="YYYY-MM (a UTC month) or YYYY-MM-DD (a UTC day)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the HTML (default: .)")
    p.add_argument(
        "--assets",
        type=Path,
        default=None,
        help="asset register TOML (default: analytics/assets.demo.toml)",
    )
    p.add_argument(
        "--pricebook",
        type=Path,
        default=None,
        help="price book TOML, read for its tenants' kind (internal use is shown back at cost, "
        "not counted as sales; default: billing/pricebook.demo.toml)",
    )
    p.add_argument("--database", default=None, help="ClickHouse database (default: the DSN's)")
    p.add_argument(
        "--validate",
        action="store_true",
        help="only check the asset register, print every problem, and exit",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from analytics.assets import AssetRegisterError, load_assets

    try:
        register_ = load_assets(args.assets)
    except AssetRegisterError as exc:
        print(f"gpumeter report: {exc}", file=sys.stderr)
        return 2
    if args.validate:
        print(
            f"asset register OK: {len(register_.assets)} asset class(es), "
            f"{len(register_.models)} GPU model rate(s)"
        )
        return 0
    if not args.period:
        print("gpumeter report: --period YYYY-MM is required", file=sys.stderr)
        return 2

    from clickhouse_connect.driver.exceptions import Error as DriverError
    from rich.console import Console

    from analytics.ledger_facts import parse_period
    from analytics.report import build_report, print_summary, render_html
    from kernel.clickhouse import ClickHouseError, connect_configured

    try:
        parse_period(args.period)
    except ValueError as exc:
        print(f"gpumeter report: {exc}", file=sys.stderr)
        return 2
    try:
        client = connect_configured(settings, args.database)
        report = build_report(client, args.period, args.assets, pricebook_path=args.pricebook)
    except ClickHouseError as exc:
        print(f"gpumeter report: {exc}", file=sys.stderr)
        return 1
    except DriverError as exc:  # the server's code and name are kept
        err = ClickHouseError.from_driver(exc)
        hint = " (is the schema migrated? run `gpumeter db migrate`)" if err.code == 60 else ""
        print(f"gpumeter report: {err.render()}{hint}", file=sys.stderr)
        return 1
    # Piped output gets a fixed width wide enough for the tables; a terminal uses its own.
    print_summary(report, Console(width=None if sys.stdout.isatty() else 140))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpumeter-report-{report.period.label}.html"
    path.write_text(render_html(report), encoding="utf-8")
    print(f"wrote {path}")
    return 0
