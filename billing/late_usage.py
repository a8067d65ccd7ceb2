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

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from billing.adjustment import Delta, adjustment_lines, differences
from billing.invoice import Invoice, InvoiceLine, invoice_id_for
from billing.period import Period
from billing.preemptions import PreemptionRecords
from billing.pricebook import PriceBook
from billing.pricing import TenantPricing
from billing.rating import UsageRow, rate_invoice
from billing.reservation import closed_periods
from billing.store import (
    CLOCK_SLACK,
    BillingStore,
    InvoiceState,
    StoredInvoice,
    lines_correcting,
    with_tenants,
)


def pending_adjustments(
    store: BillingStore, book: PriceBook, period: Period
) -> dict[str, list[InvoiceLine]]:
    """Adjustment lines that belong on ``period``'s invoices, per tenant.

    Bulk: per earlier period with finalized invoices, one query for the ledger's write times,
    one for the late invoices' documents, one for adjustments already written and one stream of
    the late tenants' usage; never a query per tenant."""
    out: dict[str, list[InvoiceLine]] = {}
    targets = {t: st.invoice_id for t, st in store.states(period).items()}
    heads: dict[str, list[InvoiceState]] = {}
    for h in store.finalized_heads(before=period):
        heads.setdefault(h.period, []).append(h)
    for p in sorted(heads):
        ref = Period.parse(p)
        records = PreemptionRecords(store.client)
        # a preemption stored after rating changes the invoice too (a waived minimum)
        writes = _latest(store.last_ledger_writes(ref), records.last_ingested(ref))
        late = {
            h.tenant
            for h in heads[p]
            if h.tenant in writes
            and h.created_at is not None
            and writes[h.tenant] >= h.created_at - CLOCK_SLACK
        }
        if not late:
            continue  # nothing written since rating: cannot differ
        originals = {
            s.invoice.tenant: s
            for s in store.invoices(period=ref, status="finalized", tenants=late)
        }
        holders = store.adjustment_holders_by_tenant(p, tenants=late)
        preempted = records.preempted_jobs(ref, tenants=late)
        for tenant, rows in with_tenants(store.usage_by_tenant(ref, tenants=late), late):
            inv = originals[tenant].invoice
            already = lines_correcting(
                holders.get(tenant, []), p, exclude_invoice=targets.get(tenant)
            )
            again = _rate_again(inv, rows, preempted.get(tenant, frozenset()))
            deltas = differences(inv, again, already)
            if deltas:
                out.setdefault(tenant, []).extend(adjustment_lines(inv, deltas))
    for closed in closed_periods(store.client, before=period):
        for tenant, deltas, empty in carried_forward(store, book, closed, period):
            out.setdefault(tenant, []).extend(adjustment_lines(empty, deltas))
    return out


def carried_forward(
    store: BillingStore, book: PriceBook, closed: Period, target: Period | None = None
) -> list[tuple[str, list[Delta], Invoice]]:
    """(tenant, deltas, empty original) for tenants with usage but no invoice in ``closed``."""
    invoiced = set(store.states(closed))
    candidates = store.tenants_with_usage(closed) - invoiced
    if not candidates:
        return []
    targets = {t: st.invoice_id for t, st in store.states(target).items()} if target else {}
    holders = store.adjustment_holders_by_tenant(str(closed), tenants=candidates)
    preempted = PreemptionRecords(store.client).preempted_jobs(closed, tenants=candidates)
    list_rates = book.rates_for_period(closed)
    out = []
    for tenant, rows in with_tenants(store.usage_by_tenant(closed, tenants=candidates), candidates):
        pricing = TenantPricing.from_pricebook(book, tenant, closed, list_rates=list_rates)
        rated = rate_invoice(
            pricing, tenant, closed, rows, preempted=preempted.get(tenant, frozenset())
        )
        empty = Invoice(
            invoice_id_for(book.issuer.number_prefix, tenant, str(closed)),
            tenant,
            str(closed),
            book.currency,
            book.minor_unit,
            pricing,
            (),
            (),
        )
        already = lines_correcting(
            holders.get(tenant, []), str(closed), exclude_invoice=targets.get(tenant)
        )
        deltas = differences(empty, rated, already)
        if deltas:
            out.append((tenant, deltas, empty))
    return out


def rerate(store: BillingStore, original: Invoice) -> Invoice:
    """The original's period rated again from today's ledger with the original's prices."""
    period = Period.parse(original.period)
    tenant = original.tenant
    preempted = PreemptionRecords(store.client).preempted_jobs(period, tenants=[tenant])
    rows = store.usage_rows(period, tenants=[tenant])
    return _rate_again(original, rows, preempted.get(tenant, frozenset()))


def _rate_again(original: Invoice, rows: Sequence[UsageRow], preempted: Collection[str]) -> Invoice:
    period = Period.parse(original.period)
    return rate_invoice(original.pricing, original.tenant, period, rows, preempted=preempted)


def _latest(*writes: Mapping[str, datetime]) -> dict[str, datetime]:
    """Per tenant, the latest of several "last written" maps."""
    out: dict[str, datetime] = {}
    for w in writes:
        for tenant, at in w.items():
            out[tenant] = max(at, out.get(tenant, at))
    return out


def rerate_differences(
    store: BillingStore, original: StoredInvoice, *, exclude_invoice: str | None = None
) -> list[Delta]:
    inv = original.invoice
    already = store.adjustment_lines(inv.tenant, inv.period, exclude_invoice=exclude_invoice)
    return differences(inv, rerate(store, inv), already)
