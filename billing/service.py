"""Billing application services: load, compute (pure rating), save. The CLI and the demo call these.

- :func:`run_period`: draft invoices for a period (re-runnable until finalized).
- :func:`finalize_period`: number, hash and freeze the period's drafts.
- :func:`export_period`: CSV / JSON / PDF files.
- :func:`invoice_month`: all of the above in one call, for the demo.

Internal tenants (``kind = "internal"`` in the price book) get no invoice and no number: a run
reports their usage per GPU model as showback (:mod:`billing.showback`), finalization does not
wait for them, and reconcile does not count them as uninvoiced.

All or nothing: a run rates every tenant in memory first and writes only when all succeeded,
with one insert per table (``BillingStore.save_all``); finalization numbers every draft of the
period and writes them the same way. Runs and finalizations each hold the billing reservation
(``billing.reservation``), so they never overlap one another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from billing.errors import BillingError
from billing.invoice import Invoice
from billing.late_usage import pending_adjustments, rerate, rerate_differences
from billing.numbering import next_numbers
from billing.period import INGEST_GRACE, Period
from billing.preemptions import PreemptionRecords
from billing.pricebook import PriceBook, load_pricebook
from billing.pricing import TenantPricing
from billing.rating import rate_invoice
from billing.reconcile import ReconcileReport, reconcile_period
from billing.reservation import Reservation, closed_periods, closes, record_close
from billing.showback import ShowbackUsage, invoiceable, reconcile_internal, showback_usage
from billing.store import BillingStore, QueryClient, with_tenants

__all__ = [
    "rerate",
    "rerate_differences",
    "run_period",
    "finalize_period",
    "export_period",
    "invoice_month",
    "pending_adjustments",
    "reconcile_with_showback",
]

ExportFormat = Literal["csv", "json", "pdf"]
#: The reason ``invoice_month`` (the demo's one-call path) records when it finalizes a period
#: that has not ended yet: the demo bills the simulated fleet's still-open month.
DEMO_FORCE_REASON = "demo: invoice_month on a simulated fleet's open month"


class PeriodOpenError(BillingError):
    def __init__(self, period: Period, closes_at: datetime) -> None:
        self.period, self.closes_at = period, closes_at
        super().__init__(
            f"{period} has not ended (plus the ingest grace): it can be finalized from "
            f"{closes_at:%Y-%m-%d %H:%M} UTC. To finalize earlier, force it with a reason "
            "(`--force --reason '...'`); the reason is recorded with the close"
        )


@dataclass(frozen=True)
class InvoiceSummary:
    """One printable row per tenant."""

    tenant: str
    number: str
    status: str
    gpu_hours: Decimal
    total: Decimal
    currency: str


@dataclass
class RunResult:
    period: Period
    drafted: list[Invoice] = field(default_factory=list)
    #: (tenant, number) of invoices left alone because they are finalized.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: tenants with usage in a closed period and no invoice there: carried forward instead.
    carried: list[str] = field(default_factory=list)
    #: internal tenants' usage per GPU model: shown back at cost, not invoiced.
    showback: list[ShowbackUsage] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def summarize(inv: Invoice) -> InvoiceSummary:
    return InvoiceSummary(
        inv.tenant,
        inv.number,
        inv.status,
        (inv.gpu_hours).quantize(Decimal("0.001")),
        inv.total,
        inv.currency,
    )


# -- run -------------------------------------------------------------------------------------


def run_period(
    client: QueryClient, book: PriceBook, period: Period, *, now: Callable[[], datetime] = _now
) -> RunResult:
    """Draft (or re-draft) the invoice of every tenant with usage, a commitment or minimum spend
    in force, or pending adjustments in ``period``. Finalized invoices are never touched (they
    are reported in ``refused``); a closed period gets no new drafts (``carried``)."""
    at = now()
    if period.start > at:
        raise BillingError(f"{period} has not started yet ({at:%Y-%m-%d} UTC): nothing to run")
    # Runs and finalizations exclude each other: a run that read "draft" must not write after
    # a finalizer froze the invoice.
    with Reservation(client, now=now):
        return _run(client, book, period, at)


def _run(client: QueryClient, book: PriceBook, period: Period, at: datetime) -> RunResult:
    # Every read is one query for all tenants (never one per tenant): the run's cost follows
    # the ledger, not the number of tenants.
    store = BillingStore(client)
    internal = book.internal_tenants
    pending = invoiceable(pending_adjustments(store, book, period), internal)
    existing = store.states(period)
    closed = period in closed_periods(client, before=period.next())
    credits = store.credits_used_by_tenant(exclude_period=period)
    preempted = PreemptionRecords(client).preempted_jobs(period)
    list_rates = book.rates_for_period(period)
    always = {
        t
        for t, c in book.contracts.items()
        if (c.commitments or c.minimum_monthly_spend) and c.days_in(period)
    }
    result = RunResult(period)
    stale: list[str] = []
    # Usage streams in tenant order; each tenant is rated as soon as its rows are complete.
    for tenant, rows in with_tenants(store.usage_by_tenant(period), set(pending) | always):
        current = existing.get(tenant)
        if tenant in internal:
            # Shown back, never invoiced; only corrections of invoices it was issued as an
            # external tenant still need an invoice (rated without its usage).
            result.showback += showback_usage(tenant, rows)
            rows = []
            if tenant not in pending:
                if current is not None and current.status == "draft":
                    stale.append(tenant)
                continue
        if current is not None and current.status == "finalized":
            result.refused.append((tenant, current.number))
            continue
        if closed and current is None:
            result.carried.append(tenant)  # billed as adjustments on its next invoice
            continue
        pricing = TenantPricing.from_pricebook(
            book, tenant, period, credits.get(tenant, {}), list_rates=list_rates
        )
        result.drafted.append(
            rate_invoice(
                pricing,
                tenant,
                period,
                rows,
                adjustments=pending.get(tenant, []),
                preempted=preempted.get(tenant, frozenset()),
            )
        )
    if stale:
        # A draft cannot be withdrawn (there is no tombstone for an invoice header), and
        # finalize would number it: refuse before writing anything.
        raise BillingError(
            f"{period}: {', '.join(stale)} are internal in the price book but have a draft "
            "invoice for the period (drafted while external); internal tenants are shown back, "
            "never invoiced. Keep them external for this period, or run it with the book that "
            "drafted them. Nothing was written"
        )
    # Every tenant rated without error: only now write, all in one commit.
    store.save_all([(inv, at, None) for inv in result.drafted])
    return result


# -- finalize --------------------------------------------------------------------------------


def finalize_period(
    client: QueryClient,
    period: Period,
    *,
    now: Callable[[], datetime] = _now,
    grace: timedelta = INGEST_GRACE,
    force_reason: str | None = None,
    reservation: Reservation | None = None,
    internal: Collection[str] = frozenset(),
) -> list[Invoice]:
    """Number, hash and freeze every draft of the period, all or none. Numbers: gapless per
    issuer and issue year, allocated in tenant order, under the finalize reservation.

    Refuses a period before ``period.end + grace`` unless ``force_reason`` is given (recorded
    in ``billing_period_closes``), and refuses while a tenant with usage has no invoice, except
    ``internal`` tenants (the price book's ``internal_tenants``: shown back, never invoiced)."""
    at = now()
    if at < period.closes_at(grace) and not (force_reason and force_reason.strip()):
        raise PeriodOpenError(period, period.closes_at(grace))
    store = BillingStore(client)
    with reservation or Reservation(client, now=now) as held:
        stored = store.invoices(period=period)
        drafts = [s for s in stored if s.status == "draft"]
        if not drafts:
            return []
        invoiced = {s.invoice.tenant for s in stored}
        missing = sorted(store.tenants_with_usage(period, excluding=invoiced | set(internal)))
        if missing and not closes(client, period):
            raise BillingError(
                f"{period}: tenants {', '.join(missing)} have usage but no draft "
                f"invoice; run `gpumeter invoices run --period {period}` first (an internal "
                "tenant needs the price book that marks it: --pricebook). Nothing was finalized"
            )
        batch = []
        for prefix in sorted({d.invoice.pricing.issuer.number_prefix for d in drafts}):
            mine = [d for d in drafts if d.invoice.pricing.issuer.number_prefix == prefix]
            numbers = next_numbers(store.finalized_numbers(prefix), prefix, at.year, len(mine))
            batch += [
                (s.invoice.finalized(n, at.date()), s.created_at, at)
                for s, n in zip(mine, numbers, strict=True)
            ]
        if not held.still_held():  # expired while we worked: another may have taken over
            raise BillingError(
                "the finalize reservation expired before the write; nothing "
                "was finalized; run finalize again"
            )
        store.save_all(batch)
        forced = at < period.closes_at(grace)
        record_close(
            client,
            period,
            at=at,
            forced=forced,
            reason=(force_reason or "").strip() if forced else "",
            invoices=len(batch),
            holder=held.token,
        )
    return [inv for inv, _, _ in batch]


# -- reconcile -------------------------------------------------------------------------------


def reconcile_with_showback(
    client: QueryClient, period: Period, internal: Collection[str] = frozenset()
) -> tuple[ReconcileReport, list[str]]:
    """``billing.reconcile.reconcile_period``, where an ``internal`` tenant's usage without an
    invoice is showback, not a difference; also returns the internal tenants found."""
    return reconcile_internal(reconcile_period(client, period), internal)


# -- export ----------------------------------------------------------------------------------


def export_period(
    client: QueryClient,
    period: Period,
    fmt: ExportFormat,
    out_dir: Path,
    *,
    processes: int | None = None,
) -> list[Path]:
    """Write the period's invoices. Documents stream from ClickHouse (one block in memory);
    PDFs are rendered by a pool of ``processes`` (default: one per available core)."""
    from billing import export_csv, export_json, export_pdf

    store = BillingStore(client)
    if not store.states(period):
        raise BillingError(
            f"no invoices for {period}: run `gpumeter invoices run --period {period}` first"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        invoices = (
            Invoice.from_document(json.loads(d)) for d in store.documents(period, by_number=True)
        )
        return [export_csv.write_csv_sorted(invoices, out_dir / f"invoices-{period}.csv")]
    if fmt == "json":
        return [export_json.write_document(d, out_dir) for d in store.documents(period)]
    return export_pdf.write_pdfs(store.documents(period), out_dir, processes=processes)


# -- the whole month -------------------------------------------------------------------------


def invoice_month(
    client: QueryClient,
    pricebook_path: Path | str,
    period: str,
    out_dir: Path,
    *,
    force_reason: str | None = DEMO_FORCE_REASON,
) -> list[InvoiceSummary]:
    """Run, finalize and export (csv, json, pdf) one month; one summary row per tenant.

    The demo's path: it bills the simulated fleet's month while it is still open, so it
    finalizes with ``force_reason`` recorded (pass None to refuse an open month instead).
    Safe to call again for a finalized month: finalized invoices are left as they are and
    exported again."""
    book = load_pricebook(pricebook_path)
    p = Period.parse(period)
    run_period(client, book, p)
    finalize_period(client, p, force_reason=force_reason, internal=book.internal_tenants)
    for fmt in ("csv", "json", "pdf"):
        export_period(client, p, fmt, Path(out_dir))  # type: ignore[arg-type]
    return [summarize(s.invoice) for s in BillingStore(client).invoices(period=p)]


def summaries(client: QueryClient, period: Period) -> Sequence[InvoiceSummary]:
    return [summarize(s.invoice) for s in BillingStore(client).invoices(period=period)]
