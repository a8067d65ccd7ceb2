"""ClickHouse persistence for billing: read the ledger, read and write invoices.

Every read of ``usage_minutely``, ``invoices`` and ``invoice_lines`` uses FINAL (all three are
ReplacingMergeTree; see migrations 0001 and 0010). Writes insert new row versions; the one rule
ClickHouse cannot enforce, "a finalized invoice is never rewritten", is enforced here in
:meth:`BillingStore.save_all` before any insert.

All or nothing: :meth:`save_all` writes every invoice of a run or finalization with one insert
into ``invoice_lines`` and then one into ``invoices``. A single insert into an unpartitioned
MergeTree becomes one part, visible entirely or not at all, so the header insert is the commit
point. Billing decides from the headers' documents only (credit balances, adjustments already
written), never from ``invoice_lines``, which is the lines' projection for SQL and analytics.
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
                 status: str | None = None, before: Period | None = None,
                 after: Period | None = None) -> list[StoredInvoice]:
        conds, params = ["1"], {}
        if after is not None:
            conds.append("period > {after:String}")
            params["after"] = str(after)
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

    def adjustment_lines(self, tenant: str, ref_period: str, *,
                         exclude_invoice: str | None = None) -> list[InvoiceLine]:
        """Adjustment lines already written (on any later invoice of the tenant, draft or
        finalized) that correct ``ref_period``."""
        return [ln for s in self.adjustment_holders(tenant, ref_period)
                if s.invoice.invoice_id != exclude_invoice
                for ln in s.invoice.lines
                if ln.kind == "adjustment" and ln.ref_period == ref_period]

    def adjustment_holders(self, tenant: str, ref_period: str) -> list[StoredInvoice]:
        return [s for s in self.invoices(tenant=tenant, after=Period.parse(ref_period))
                if any(ln.kind == "adjustment" and ln.ref_period == ref_period
                       for ln in s.invoice.lines)]

    def credits_used(self, tenant: str, *, exclude_period: Period) -> dict[str, Decimal]:
        """Credit consumed by the tenant's finalized invoices of other periods, per credit id
        (from the documents, in the invoice's own minor units)."""
        used: dict[str, Decimal] = {}
        for s in self.invoices(tenant=tenant, status="finalized"):
            if s.invoice.period == str(exclude_period):
                continue
            for ln in s.invoice.lines:
                if ln.kind == "credit":
                    used[ln.reference] = used.get(ln.reference, Decimal(0)) - ln.amount
        return used

    def finalized_numbers(self, issuer: str) -> list[str]:
        rows = self._query(
            """SELECT number FROM invoices FINAL
               WHERE issuer = {issuer:String} AND status = 'finalized'""", issuer=issuer)
        return [r[0] for r in rows]

    def save(self, invoice: Invoice, *, created_at: datetime,
             finalized_at: datetime | None = None) -> StoredInvoice:
        return self.save_all([(invoice, created_at, finalized_at)])[0]

    def save_all(self, batch: Sequence[tuple[Invoice, datetime, datetime | None]]
                 ) -> list[StoredInvoice]:
        """Write a new version of every invoice and its lines in one insert per table (the
        header insert commits them all); refuse before writing anything if any is final."""
        if not batch:
            return []
        current: dict[tuple[str, str], StoredInvoice] = {}
        for p in sorted({inv.period for inv, _, _ in batch}):
            current.update({(s.invoice.tenant, p): s for s in self.invoices(period=Period.parse(p))})
        line_rows: list[list[Any]] = []
        header_rows: list[list[Any]] = []
        out = []
        base = time.time_ns()
        for inv, created_at, finalized_at in batch:
            cur = current.get((inv.tenant, inv.period))
            if cur is not None and cur.status == "finalized":
                raise InvoiceFinalizedError(inv.tenant, inv.period, cur.invoice.number)
            revision = max(base, (cur.revision + 1) if cur else 0)
            if inv.status == "finalized":
                # By construction a finalized version outranks any draft version ever written
                # (drafts use wall-clock nanoseconds, < 2**62 until the year 2116), so even a
                # draft written by a racing run cannot replace it in ReplacingMergeTree.
                revision = max(revision, FINALIZED_REVISION)
            doc = inv.canonical_json().decode()
            line_rows += _line_rows(inv, revision, len(cur.invoice.lines) if cur else 0)
            header_rows.append([
                inv.invoice_id, inv.tenant, inv.period, inv.status, inv.number,
                inv.pricing.issuer.number_prefix, inv.currency, inv.subtotal, inv.tax,
                inv.total, inv.gpu_seconds, created_at, finalized_at, inv.content_hash, doc,
                revision])
            out.append(StoredInvoice(inv, created_at, finalized_at, inv.content_hash, doc,
                                     revision))
        try:
            # Lines first, then the headers: a crash in between leaves the previous headers
            # (and so the previous documents) as the state billing reads; a re-run rewrites both.
            if line_rows:
                self.client.insert("invoice_lines", line_rows, column_names=LINE_COLUMNS)
            self.client.insert("invoices", header_rows, column_names=INVOICE_COLUMNS)
        except Exception as exc:  # infrastructure error: converted at the boundary, cause kept
            raise BillingError(f"writing {len(batch)} invoice(s) failed; the previous state "
                               f"stands: {exc}") from exc
        return out


def _line_rows(inv: Invoice, revision: int, previous_count: int) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [inv.invoice_id, inv.tenant, inv.period, ln.line_no, ln.kind, ln.gpu_model,
         ln.billing_class, ln.description, ln.quantity, ln.unit, ln.unit_price, ln.amount,
         ln.reference, ln.ref_period, ln.ref_kind, ln.seconds, inv.status, revision, 0]
        for ln in inv.lines
    ]
    for line_no in range(len(inv.lines) + 1, previous_count + 1):  # tombstones
        rows.append([inv.invoice_id, inv.tenant, inv.period, line_no, "", "", "", "",
                     Decimal(0), "", Decimal(0), Decimal(0), "", "", "", 0, inv.status,
                     revision, 1])
    return rows


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


#: Revisions of finalized versions start here (see ``save_all``); UInt64 leaves ample room.
FINALIZED_REVISION = 1 << 62

#: Slack when comparing ledger write times (ClickHouse clock) with invoice times (our clock).
CLOCK_SLACK = timedelta(minutes=5)
