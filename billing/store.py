"""ClickHouse persistence for billing: read the ledger, read and write invoices.

Every read of ``usage_minutely``, ``invoices`` and ``invoice_lines`` uses FINAL (all three are
ReplacingMergeTree; see migrations 0001 and 0010). Writes insert new row versions; the one rule
ClickHouse cannot enforce, "a finalized invoice is never rewritten", is enforced here in
:meth:`BillingStore.save` before any insert.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from billing.errors import BillingError, InvoiceFinalizedError
from billing.invoice import Invoice, InvoiceLine
from billing.period import Period
from billing.pricebook import IDLE_TENANT
from billing.rating import UsageRow

INVOICE_COLUMNS = [
    "invoice_id", "tenant", "period", "status", "number", "issuer", "currency", "subtotal",
    "tax", "total", "gpu_seconds", "created_at", "finalized_at", "content_hash", "document",
    "revision",
]
LINE_COLUMNS = [
    "invoice_id", "tenant", "period", "line_no", "kind", "gpu_model", "billing_class",
    "description", "quantity", "unit", "unit_price", "amount", "reference", "ref_period",
    "ref_kind", "gpu_seconds", "status", "revision", "is_deleted",
]


class QueryClient(Protocol):
    """The part of clickhouse-connect's Client billing uses (so fakes type-check)."""

    def query(self, query: str, parameters: dict[str, Any] | None = ...) -> Any: ...
    def insert(self, table: str, data: Sequence[Sequence[Any]],
               column_names: Sequence[str] = ...) -> Any: ...
    def command(self, cmd: str, parameters: dict[str, Any] | None = ...) -> Any: ...


@dataclass(frozen=True)
class StoredInvoice:
    invoice: Invoice
    created_at: datetime
    finalized_at: datetime | None
    content_hash: str
    document: str
    revision: int

    @property
    def status(self) -> str:
        return self.invoice.status


class BillingStore:
    def __init__(self, client: QueryClient) -> None:
        self.client = client

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql, parameters=params).result_rows)
        except Exception as exc:  # surface the server's message, keep the cause
            raise BillingError(f"ClickHouse query failed: {exc}") from exc

    # -- the ledger ------------------------------------------------------------------------

    def usage_rows(self, period: Period, tenants: Iterable[str] | None = None) -> list[UsageRow]:
        """The period's allocated usage, aggregated per (tenant, job, class, GPU, UTC day).

        A day is the finest grain prices change at, so this aggregate rates exactly like the
        minute rows while moving ~1/1440 as many rows into Python.
        """
        where = ""
        params: dict[str, Any] = {"start": period.start, "end": period.end, "idle": IDLE_TENANT}
        if tenants is not None:
            where = "AND tenant IN {tenants:Array(String)}"
            params["tenants"] = sorted(tenants)
        rows = self._query(
            f"""SELECT tenant, job, billing_class, gpu_model,
                      if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid)) AS gpu,
                      min(minute), max(minute), sum(gpu_seconds), sum(energy_mj)
               FROM usage_minutely FINAL
               WHERE minute >= {{start:DateTime('UTC')}} AND minute < {{end:DateTime('UTC')}}
                 AND tenant != {{idle:String}} {where}
               GROUP BY tenant, job, billing_class, gpu_model, gpu, toDate(minute)
               ORDER BY tenant, job, gpu, min(minute)""",
            **params,
        )
        return [
            UsageRow(t, j, c, m, g, _utc(first), int(s), int(e), last=_utc(last))
            for t, j, c, m, g, first, last, s, e in rows
        ]

    def tenants_with_usage(self, period: Period) -> set[str]:
        rows = self._query(
            """SELECT DISTINCT tenant FROM usage_minutely FINAL
               WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
                 AND tenant != {idle:String} AND gpu_seconds > 0""",
            start=period.start, end=period.end, idle=IDLE_TENANT)
        return {r[0] for r in rows}

    def last_ledger_write(self, tenant: str, period: Period) -> datetime | None:
        """When the tenant's ledger rows for the period were last written (late-usage probe)."""
        rows = self._query(
            """SELECT max(updated_at), count() FROM usage_minutely FINAL
               WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
                 AND tenant = {tenant:String}""",
            start=period.start, end=period.end, tenant=tenant)
        return _utc(rows[0][0]) if rows and rows[0][1] else None

    # -- invoices ----------------------------------------------------------------------------

    def invoices(self, *, period: Period | None = None, tenant: str | None = None,
                 status: str | None = None, before: Period | None = None) -> list[StoredInvoice]:
        conds, params = ["1"], {}
        if period is not None:
            conds.append("period = {period:String}")
            params["period"] = str(period)
        if before is not None:
            conds.append("period < {before:String}")  # 'YYYY-MM' sorts as text
            params["before"] = str(before)
        if tenant is not None:
            conds.append("tenant = {tenant:String}")
            params["tenant"] = tenant
        if status is not None:
            conds.append("status = {status:String}")
            params["status"] = status
        rows = self._query(
            "SELECT created_at, finalized_at, content_hash, document, revision FROM invoices "
            f"FINAL WHERE {' AND '.join(conds)} ORDER BY period, tenant", **params)
        return [
            StoredInvoice(Invoice.from_document(json.loads(doc)), _utc(c),
                          _utc(f) if f else None, h, doc, int(r))
            for c, f, h, doc, r in rows
        ]

    def invoice(self, tenant: str, period: Period) -> StoredInvoice | None:
        found = self.invoices(period=period, tenant=tenant)
        return found[0] if found else None

    def adjustment_lines(self, reference: str, *,
                         exclude_invoice: str | None = None) -> list[InvoiceLine]:
        """Adjustment lines already written anywhere for the original invoice ``reference``."""
        found = []
        for stored in self.invoices_with_adjustments(reference):
            if stored.invoice.invoice_id == exclude_invoice:
                continue
            found.extend(ln for ln in stored.invoice.lines
                         if ln.kind == "adjustment" and ln.reference == reference)
        return found

    def invoices_with_adjustments(self, reference: str) -> list[StoredInvoice]:
        ids = [r[0] for r in self._query(
            """SELECT DISTINCT invoice_id FROM invoice_lines FINAL
               WHERE kind = 'adjustment' AND reference = {ref:String}""", ref=reference)]
        if not ids:
            return []
        rows = self._query(
            "SELECT created_at, finalized_at, content_hash, document, revision FROM invoices FINAL "
            "WHERE invoice_id IN {ids:Array(String)} ORDER BY period, tenant", ids=ids)
        return [StoredInvoice(Invoice.from_document(json.loads(d)), _utc(c),
                              _utc(f) if f else None, h, d, int(r)) for c, f, h, d, r in rows]

    def credits_used(self, tenant: str, *, exclude_period: Period) -> dict[str, Decimal]:
        """Credit consumed by the tenant's finalized invoices of other periods, per credit id."""
        rows = self._query(
            """SELECT reference, sum(amount) FROM invoice_lines FINAL
               WHERE tenant = {tenant:String} AND kind = 'credit' AND status = 'finalized'
                 AND period != {period:String}
               GROUP BY reference""", tenant=tenant, period=str(exclude_period))
        return {ref: -Decimal(total) for ref, total in rows}

    def finalized_numbers(self, issuer: str) -> list[str]:
        rows = self._query(
            """SELECT number FROM invoices FINAL
               WHERE issuer = {issuer:String} AND status = 'finalized'""", issuer=issuer)
        return [r[0] for r in rows]

    def save(self, invoice: Invoice, *, created_at: datetime,
             finalized_at: datetime | None = None) -> StoredInvoice:
        """Write a new version of the invoice and its lines; refuse if it is already final."""
        current = self.invoice(invoice.tenant, Period.parse(invoice.period))
        if current is not None and current.status == "finalized":
            raise InvoiceFinalizedError(invoice.tenant, invoice.period, current.invoice.number)
        revision = max(time.time_ns(), (current.revision + 1) if current else 0)
        doc = invoice.canonical_json().decode()
        issuer = invoice.pricing.issuer.number_prefix
        # Lines first, then the header: a crash in between leaves the previous header as the
        # visible state (its status still draft), and the re-run rewrites both.
        line_rows: list[list[Any]] = [
            [invoice.invoice_id, invoice.tenant, invoice.period, ln.line_no, ln.kind,
             ln.gpu_model, ln.billing_class, ln.description, ln.quantity, ln.unit,
             ln.unit_price, ln.amount, ln.reference, ln.ref_period, ln.ref_kind, ln.seconds,
             invoice.status, revision, 0]
            for ln in invoice.lines
        ]
        previous_count = len(current.invoice.lines) if current else 0
        for line_no in range(len(invoice.lines) + 1, previous_count + 1):  # tombstones
            line_rows.append([invoice.invoice_id, invoice.tenant, invoice.period, line_no, "",
                              "", "", "", Decimal(0), "", Decimal(0), Decimal(0), "", "", "", 0,
                              invoice.status, revision, 1])
        try:
            if line_rows:
                self.client.insert("invoice_lines", line_rows, column_names=LINE_COLUMNS)
            self.client.insert("invoices", [[
                invoice.invoice_id, invoice.tenant, invoice.period, invoice.status,
                invoice.number, issuer, invoice.currency, invoice.subtotal, invoice.tax,
                invoice.total, invoice.gpu_seconds, created_at, finalized_at,
                invoice.content_hash, doc, revision,
            ]], column_names=INVOICE_COLUMNS)
        except Exception as exc:
            raise BillingError(f"writing invoice {invoice.tenant} {invoice.period} failed: "
                               f"{exc}") from exc
        return StoredInvoice(invoice, created_at, finalized_at, invoice.content_hash, doc,
                             revision)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


#: Slack when comparing ledger write times (ClickHouse clock) with invoice times (our clock).
CLOCK_SLACK = timedelta(minutes=5)
