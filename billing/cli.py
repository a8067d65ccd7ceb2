"""``gpumeter invoices ...``: price book check, run, finalize, export, reconcile, show."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kernel.settings import Settings

DEMO_PRICEBOOK = Path(__file__).resolve().parent / "pricebook.demo.toml"

EPILOG = """\
invoice a month:
  gpumeter invoices check --pricebook prices.toml   validate the price book (every problem)
  gpumeter invoices run --period 2026-01 --pricebook prices.toml
                                                    draft invoices (re-run freely until final)
  gpumeter invoices finalize --period 2026-01       number, hash and freeze them
  gpumeter invoices export --period 2026-01 --format pdf --out invoices/
  gpumeter invoices reconcile --period 2026-01      prove invoices + adjustments = ledger

Usage that arrives after a period is finalized is billed as adjustment lines on the tenant's
next invoice: run (and finalize) the next period. Internal tenants (kind = "internal" in the
price book) get no invoice: run lists their GPU-hours as showback, and `gpumeter report` prices
them at cost. finalize and reconcile take the same --pricebook to know them. See
billing/README.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    inv = sub.add_parser(
        "invoices",
        help="rate usage into monthly invoices; finalize, export, reconcile",
        description="Monthly billing: rate the ledger with a price book into draft invoices, "
        "finalize them (gapless numbers, content hash, immutable), export CSV/JSON/PDF, and "
        "reconcile invoices against the ledger.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = inv.add_subparsers(dest="invoices_command", metavar="<action>", required=True)

    def add(
        name: str, help_: str, handler: Any, *, period: bool = True, pricebook: bool = False
    ) -> argparse.ArgumentParser:
        p = s.add_parser(name, help=help_, description=help_)
        if period:
            p.add_argument(
                "--period",
                required=True,
                metavar="YYYY-MM",
                help="billing period: a calendar month in UTC",
            )
        if pricebook:
            p.add_argument(
                "--pricebook",
                type=Path,
                default=DEMO_PRICEBOOK,
                help=f"price book TOML (default: the demo's, {DEMO_PRICEBOOK.name})",
            )
        p.add_argument("--database", default=None, help="ClickHouse database (default: DSN's)")
        p.set_defaults(handler=handler)
        return p

    add(
        "check",
        "validate a price book and list every problem",
        _check,
        period=False,
        pricebook=True,
    )
    add(
        "run",
        "draft invoices for every tenant with usage, a commitment or pending "
        "adjustments in the period",
        _run,
        pricebook=True,
    )
    fin = add(
        "finalize",
        "give the period's drafts gapless numbers and a content hash; "
        "afterwards they are immutable. Refused before the period has ended plus the "
        "ingest grace (24 h) unless --force with a --reason (recorded)",
        _finalize,
        pricebook=True,
    )
    fin.add_argument(
        "--force",
        action="store_true",
        help="finalize a period that has not ended (plus grace); needs --reason",
    )
    fin.add_argument(
        "--reason",
        default=None,
        help="why the period is finalized early (stored in billing_period_closes)",
    )
    exp = add(
        "export",
        "write the period's invoices as CSV (accounting), JSON (documents) or PDF (customers)",
        _export,
    )
    exp.add_argument("--format", choices=["csv", "json", "pdf"], required=True)
    exp.add_argument("--out", type=Path, required=True, help="output directory")
    add(
        "reconcile",
        "re-rate the period from the ledger and prove finalized invoices plus "
        "adjustments match it; exit 1 on any difference",
        _reconcile,
        pricebook=True,
    )
    add("show", "list the period's invoices", _show)


def _client(args: argparse.Namespace, settings: Settings) -> Any:
    from kernel.clickhouse import connect_configured
    from schemas.clickhouse.migrate import migrate

    cluster = settings.clickhouse_cluster
    client = connect_configured(settings, args.database, cluster=cluster)
    migrate(client, cluster=cluster)  # idempotent: the billing tables exist before the first run
    _skip_pandas_probe()
    return client


def _skip_pandas_probe() -> None:
    """clickhouse-connect imports pandas (about 0.8 s here) on a process's first insert only to
    ask whether the data is a DataFrame. Billing inserts row lists, so in a billing command that
    has not imported pandas, tell the driver pandas is absent (it then skips that check)."""
    if "pandas" in sys.modules:
        return
    from clickhouse_connect.driver import options

    options.pd = None  # read by the driver through the module, as its lazy import would set it
    options.pd_time_test = None


def _guard(fn: Any) -> Any:
    """Billing and ClickHouse errors become one clear message and exit status 1."""

    def wrapped(args: argparse.Namespace, settings: Settings) -> int:
        from billing.errors import BillingError
        from kernel.clickhouse import ClickHouseError
        from kernel.period import PeriodError

        try:
            return int(fn(args, settings))
        except (BillingError, ClickHouseError, PeriodError) as exc:
            print(f"gpumeter invoices: {exc}", file=sys.stderr)
            return 1

    return wrapped


@_guard
def _check(args: argparse.Namespace, settings: Settings) -> int:
    from billing.pricebook import load_pricebook

    book = load_pricebook(args.pricebook)
    print(
        f"{args.pricebook}: OK ({book.currency}, {len(book.rates)} rates, "
        f"{len(book.contracts)} tenant contracts)"
    )
    return 0


@_guard
def _run(args: argparse.Namespace, settings: Settings) -> int:
    from billing.period import Period
    from billing.pricebook import load_pricebook
    from billing.service import run_period

    book = load_pricebook(args.pricebook)
    result = run_period(_client(args, settings), book, Period.parse(args.period))
    for inv in result.drafted:
        adj = sum(1 for ln in inv.lines if ln.kind == "adjustment")
        print(
            f"draft  {inv.tenant:<16} {inv.gpu_hours:>12.3f} GPU-h  "
            f"{inv.total:>14} {inv.currency}" + (f"  ({adj} adjustment lines)" if adj else "")
        )
    for s in result.showback:
        print(
            f"showback {s.tenant:<13} {s.gpu_hours:>12.3f} GPU-h  {s.gpu_model}  "
            "(internal: showback, not invoiced; priced at cost by `gpumeter report`)"
        )
    for tenant in result.carried:
        print(
            f"carried {tenant}: {args.period} is finalized and {tenant} has no invoice there; "
            "its usage is billed as adjustments on its next invoice",
            file=sys.stderr,
        )
    for tenant, number in result.refused:
        print(
            f"refused {tenant}: invoice {number} for {args.period} is finalized and immutable; "
            "late usage goes onto the next period's invoice as adjustments",
            file=sys.stderr,
        )
    if not result.drafted and (result.refused or result.carried):
        return 1
    internal = len({s.tenant for s in result.showback})
    print(
        f"{len(result.drafted)} draft invoice(s) for {args.period}"
        + (f"; {internal} internal tenant(s) shown back, not invoiced" if internal else "")
    )
    return 0


@_guard
def _finalize(args: argparse.Namespace, settings: Settings) -> int:
    from billing.period import Period
    from billing.pricebook import load_pricebook
    from billing.service import finalize_period

    if args.force and not (args.reason and args.reason.strip()):
        print(
            "gpumeter invoices: --force needs --reason '...' (it is recorded with the close)",
            file=sys.stderr,
        )
        return 2
    done = finalize_period(
        _client(args, settings),
        Period.parse(args.period),
        force_reason=args.reason if args.force else None,
        internal=load_pricebook(args.pricebook).internal_tenants,
    )
    if not done:
        print(
            f"no draft invoices for {args.period} (already finalized, or run first)",
            file=sys.stderr,
        )
        return 1
    for inv in done:
        print(
            f"{inv.number}  {inv.tenant:<16} {inv.total:>14} {inv.currency}  "
            f"sha256 {inv.content_hash[:16]}"
        )
    return 0


@_guard
def _export(args: argparse.Namespace, settings: Settings) -> int:
    from billing.period import Period
    from billing.service import export_period

    paths = export_period(_client(args, settings), Period.parse(args.period), args.format, args.out)
    for p in paths:
        print(p)
    return 0


@_guard
def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from billing.period import Period
    from billing.pricebook import load_pricebook
    from billing.service import reconcile_with_showback

    internal = load_pricebook(args.pricebook).internal_tenants
    report, shown = reconcile_with_showback(
        _client(args, settings), Period.parse(args.period), internal
    )
    if shown:
        print(f"internal (showback, not invoiced): {', '.join(shown)}")
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


@_guard
def _show(args: argparse.Namespace, settings: Settings) -> int:
    from billing.period import Period
    from billing.service import summaries

    for s in summaries(_client(args, settings), Period.parse(args.period)):
        print(
            f"{s.number or '(draft)':<16} {s.tenant:<16} {s.status:<9} {s.gpu_hours:>12} "
            f"GPU-h {s.total:>14} {s.currency}"
        )
    return 0
