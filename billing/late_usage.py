"""Late usage: what the ledger says now about finalized periods, as adjustment lines.

Two sources, both re-rated and differenced against what was already invoiced and adjusted
(:func:`billing.adjustment.differences`):

1. A finalized invoice whose ledger was written after it was rated: re-rated with the prices
   the invoice carries (never with today's price book).
2. A tenant with usage in a closed period but no invoice there (its usage arrived after the
   period was finalized): "carried forward", rated with the rates the price book has in force
   for that period (the book is dated; no invoice snapshot exists to use instead), against an
   empty original. A closed period never gets a new draft (``service.run_period``).
"""

from __future__ import annotations

from billing.adjustment import Delta, adjustment_lines, differences
from billing.invoice import Invoice, InvoiceLine, invoice_id_for
from billing.period import Period
from billing.pricebook import PriceBook
from billing.pricing import TenantPricing
from billing.rating import rate_invoice
from billing.reservation import closed_periods
from billing.store import CLOCK_SLACK, BillingStore, StoredInvoice


def pending_adjustments(store: BillingStore, book: PriceBook,
                        period: Period) -> dict[str, list[InvoiceLine]]:
    """Adjustment lines that belong on ``period``'s invoices, per tenant."""
    out: dict[str, list[InvoiceLine]] = {}
    for original in store.invoices(status="finalized", before=period):
        inv = original.invoice
        last = store.last_ledger_write(inv.tenant, Period.parse(inv.period))
        if last is None or last < original.created_at - CLOCK_SLACK:
            continue  # nothing written since rating: cannot differ
        deltas = rerate_differences(store, original, exclude_invoice=_target(store, inv.tenant,
                                                                             period))
        if deltas:
            out.setdefault(inv.tenant, []).extend(adjustment_lines(inv, deltas))
    for closed in closed_periods(store.client, before=period):
        for tenant, deltas, empty in carried_forward(store, book, closed, period):
            out.setdefault(tenant, []).extend(adjustment_lines(empty, deltas))
    return out


def carried_forward(store: BillingStore, book: PriceBook, closed: Period,
                    target: Period | None = None) -> list[tuple[str, list[Delta], Invoice]]:
    """(tenant, deltas, empty original) for tenants with usage but no invoice in ``closed``."""
    invoiced = {s.invoice.tenant for s in store.invoices(period=closed)}
    out = []
    for tenant in sorted(store.tenants_with_usage(closed) - invoiced):
        pricing = TenantPricing.from_pricebook(book, tenant, closed)
        rated = rate_invoice(pricing, tenant, closed, store.usage_rows(closed, tenants=[tenant]))
        empty = Invoice(invoice_id_for(book.issuer.number_prefix, tenant, str(closed)), tenant,
                        str(closed), book.currency, book.minor_unit, pricing, (), ())
        exclude = _target(store, tenant, target) if target else None
        already = store.adjustment_lines(tenant, str(closed), exclude_invoice=exclude)
        deltas = differences(empty, rated, already)
        if deltas:
            out.append((tenant, deltas, empty))
    return out


def rerate(store: BillingStore, original: Invoice) -> Invoice:
    """The original's period rated again from today's ledger with the original's prices."""
    period = Period.parse(original.period)
    return rate_invoice(original.pricing, original.tenant, period,
                        store.usage_rows(period, tenants=[original.tenant]))


def rerate_differences(store: BillingStore, original: StoredInvoice, *,
                       exclude_invoice: str | None = None) -> list[Delta]:
    inv = original.invoice
    already = store.adjustment_lines(inv.tenant, inv.period, exclude_invoice=exclude_invoice)
    return differences(inv, rerate(store, inv), already)


def _target(store: BillingStore, tenant: str, period: Period) -> str | None:
    """The invoice the adjustments will sit on: its own earlier lines are being replaced."""
    target = store.invoice(tenant, period)
    return target.invoice.invoice_id if target else None
