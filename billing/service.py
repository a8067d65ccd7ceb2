"""Billing application services: load, compute (pure rating), save. The CLI and the demo call these.

- :func:`run_period`: draft invoices for a period (re-runnable until finalized).
- :func:`finalize_period`: number, hash and freeze the period's drafts.
- :func:`export_period`: CSV / JSON / PDF files.
- :func:`invoice_month`: all of the above in one call, for the demo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from billing.adjustment import Delta, adjustment_lines, differences
from billing.errors import BillingError
from billing.invoice import Invoice, InvoiceLine
from billing.numbering import next_numbers
from billing.period import Period
from billing.pricebook import PriceBook, load_pricebook
from billing.pricing import TenantPricing
from billing.rating import UsageRow, rate_invoice
from billing.store import CLOCK_SLACK, BillingStore, QueryClient, StoredInvoice

ExportFormat = Literal["csv", "json", "pdf"]


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


def _now() -> datetime:
    return datetime.now(UTC)


def summarize(inv: Invoice) -> InvoiceSummary:
    return InvoiceSummary(inv.tenant, inv.number, inv.status,
                          (inv.gpu_hours).quantize(Decimal("0.001")), inv.total, inv.currency)


# -- run -------------------------------------------------------------------------------------


def run_period(client: QueryClient, book: PriceBook, period: Period, *,
               now: Callable[[], datetime] = _now) -> RunResult:
    """Draft (or re-draft) the invoice of every tenant with usage, a commitment or pending
    adjustments in ``period``. Finalized invoices are never touched: they are reported in
    ``refused``."""
    store = BillingStore(client)
    usage = store.usage_rows(period)
    pending = pending_adjustments(store, period)
    tenants = {r.tenant for r in usage} | set(pending)
    tenants |= {t for t, c in book.contracts.items() if c.commitments}
    existing = {s.invoice.tenant: s for s in store.invoices(period=period)}
    result = RunResult(period)
    by_tenant: dict[str, list[UsageRow]] = {}
    for r in usage:
        by_tenant.setdefault(r.tenant, []).append(r)
    for tenant in sorted(tenants):
        current = existing.get(tenant)
        if current is not None and current.status == "finalized":
            result.refused.append((tenant, current.invoice.number))
            continue
        pricing = TenantPricing.from_pricebook(
            book, tenant, period, store.credits_used(tenant, exclude_period=period))
        inv = rate_invoice(pricing, tenant, period, by_tenant.get(tenant, []),
                           adjustments=pending.get(tenant, []))
        store.save(inv, created_at=now())
        result.drafted.append(inv)
    return result


def pending_adjustments(store: BillingStore, period: Period) -> dict[str, list[InvoiceLine]]:
    """Adjustment lines that belong on ``period``'s invoices: for every finalized invoice of an
    earlier period whose ledger was written after it was rated, re-rate with its own prices."""
    out: dict[str, list[InvoiceLine]] = {}
    for original in store.invoices(status="finalized", before=period):
        inv = original.invoice
        last = store.last_ledger_write(inv.tenant, Period.parse(inv.period))
        if last is None or last < original.created_at - CLOCK_SLACK:
            continue  # nothing written since rating: cannot differ
        target = store.invoice(inv.tenant, period)
        deltas = rerate_differences(store, original,
                                    exclude_invoice=target.invoice.invoice_id if target else None)
        if deltas:
            out.setdefault(inv.tenant, []).extend(adjustment_lines(inv, deltas))
    return out


def rerate(store: BillingStore, original: Invoice) -> Invoice:
    """The original's period rated again from today's ledger with the original's prices."""
    period = Period.parse(original.period)
    return rate_invoice(original.pricing, original.tenant, period,
                        store.usage_rows(period, tenants=[original.tenant]))


def rerate_differences(store: BillingStore, original: StoredInvoice, *,
                       exclude_invoice: str | None = None) -> list[Delta]:
    inv = original.invoice
    already = store.adjustment_lines(inv.number, exclude_invoice=exclude_invoice)
    return differences(inv, rerate(store, inv), already)


# -- finalize --------------------------------------------------------------------------------


def finalize_period(client: QueryClient, period: Period, *,
                    now: Callable[[], datetime] = _now) -> list[Invoice]:
    """Number, hash and freeze every draft of the period. Numbers: gapless per issuer and issue
    year, allocated in tenant order."""
    store = BillingStore(client)
    drafts = [s for s in store.invoices(period=period) if s.status == "draft"]
    if not drafts:
        return []
    at = now()
    done = []
    for prefix in sorted({d.invoice.pricing.issuer.number_prefix for d in drafts}):
        mine = [d for d in drafts if d.invoice.pricing.issuer.number_prefix == prefix]
        numbers = next_numbers(store.finalized_numbers(prefix), prefix, at.year, len(mine))
        for stored, number in zip(mine, numbers, strict=True):
            final = stored.invoice.finalized(number, at.date())
            store.save(final, created_at=stored.created_at, finalized_at=at)
            done.append(final)
        # Check after write: a concurrent finalizer would show up as a gap or duplicate here.
        next_numbers(store.finalized_numbers(prefix), prefix, at.year, 0)
    return done


# -- export ----------------------------------------------------------------------------------


def export_period(client: QueryClient, period: Period, fmt: ExportFormat,
                  out_dir: Path) -> list[Path]:
    from billing import export_csv, export_json, export_pdf

    invoices = [s.invoice for s in BillingStore(client).invoices(period=period)]
    if not invoices:
        raise BillingError(f"no invoices for {period}: run `gpumeter invoices run --period "
                           f"{period}` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return [export_csv.write_csv(invoices, out_dir / f"invoices-{period}.csv")]
    writer = export_json.write_json if fmt == "json" else export_pdf.write_pdf
    return [writer(inv, out_dir) for inv in invoices]


# -- the whole month -------------------------------------------------------------------------


def invoice_month(client: QueryClient, pricebook_path: Path | str, period: str,
                  out_dir: Path) -> list[InvoiceSummary]:
    """Run, finalize and export (csv, json, pdf) one month; one summary row per tenant.

    Safe to call again for a finalized month: finalized invoices are left as they are and
    exported again."""
    book = load_pricebook(pricebook_path)
    p = Period.parse(period)
    run_period(client, book, p)
    finalize_period(client, p)
    for fmt in ("csv", "json", "pdf"):
        export_period(client, p, fmt, Path(out_dir))  # type: ignore[arg-type]
    return [summarize(s.invoice) for s in BillingStore(client).invoices(period=p)]


def summaries(client: QueryClient, period: Period) -> Sequence[InvoiceSummary]:
    return [summarize(s.invoice) for s in BillingStore(client).invoices(period=period)]
