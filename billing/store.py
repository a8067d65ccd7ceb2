"""ClickHouse persistence for billing: read and write invoices (the ledger reads are
:class:`billing.ledger_usage.LedgerUsage`, which :class:`BillingStore` extends; the rows written
are built in :mod:`billing.invoice_rows`).

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.errors import InvoiceFinalizedError
from billing.invoice import Invoice, InvoiceLine
from billing.invoice_rows import (
    FINALIZED_REVISION,
    INVOICE_COLUMNS,
    LINE_COLUMNS,
    header_row,
    invoice_line_rows,
)
from billing.ledger_usage import RATING_QUERY, LedgerUsage, with_tenants
from billing.period import Period
from billing.store_client import _DRIVER_ERRORS, QueryClient, _store_error, _utc

__all__ = [
    "CLOCK_SLACK",
    "FINALIZED_REVISION",
    "RATING_QUERY",
    "BillingStore",
    "InvoiceState",
    "QueryClient",
    "StoredInvoice",
    "lines_correcting",
    "with_tenants",
]


@dataclass(frozen=True)
class InvoiceState:
    """A stored invoice's header without its document."""

    tenant: str
    period: str
    invoice_id: str
    status: str
    number: str
    revision: int
    lines: int  # line count of the current version (tombstones for a shorter re-run)
    created_at: datetime | None = None


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


class BillingStore(LedgerUsage):
    """Billing's tables in ClickHouse: the ledger reads (:class:`LedgerUsage`) and invoices."""

    # -- invoices ----------------------------------------------------------------------------

    def invoices(
        self,
        *,
        period: Period | None = None,
        tenant: str | None = None,
        status: str | None = None,
        before: Period | None = None,
        after: Period | None = None,
        tenants: Iterable[str] | None = None,
        containing: str | None = None,
    ) -> list[StoredInvoice]:
        """Stored invoices (documents parsed). ``containing``: only documents with that exact
        text (a cheap pre-filter in ClickHouse; callers still check the parsed document)."""
        conds: list[str] = ["1"]
        params: dict[str, Any] = {}
        if tenants is not None:
            conds.append("tenant IN {tenants:Array(String)}")
            params["tenants"] = sorted(tenants)
        if containing is not None:
            conds.append("position(document, {containing:String}) > 0")
            params["containing"] = containing
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
            f"FINAL WHERE {' AND '.join(conds)} ORDER BY period, tenant",
            **params,
        )
        return [
            StoredInvoice(
                Invoice.from_document(json.loads(doc)),
                _utc(c),
                _utc(f) if f else None,
                h,
                doc,
                int(r),
            )
            for c, f, h, doc, r in rows
        ]

    def documents(self, period: Period, *, by_number: bool = False) -> Iterator[str]:
        """The period's stored documents, streamed (exports hold one block at a time), in
        tenant order or in the CSV's order (numbers, then drafts, by tenant)."""
        order = "if(number = '', '~', number), tenant" if by_number else "tenant"
        for (doc,) in self._stream(
            "SELECT document FROM invoices FINAL WHERE period = {period:String} "
            f"ORDER BY {order}",
            period=str(period),
        ):
            yield doc

    def invoice(self, tenant: str, period: Period) -> StoredInvoice | None:
        found = self.invoices(period=period, tenant=tenant)
        return found[0] if found else None

    def states(self, period: Period) -> dict[str, InvoiceState]:
        """Each tenant's invoice of the period without its document (status, number, revision,
        line count): what writes and runs decide from, read in one light query."""
        rows = self._query(
            """SELECT tenant, invoice_id, status, number, revision, JSONLength(document, 'lines')
               FROM invoices FINAL WHERE period = {period:String}""",
            period=str(period),
        )
        return {
            t: InvoiceState(t, str(period), i, st, n, int(r), int(lc))
            for t, i, st, n, r, lc in rows
        }

    def finalized_heads(self, *, before: Period) -> list[InvoiceState]:
        """Finalized invoices of earlier periods, without documents, with their rating time."""
        rows = self._query(
            """SELECT tenant, period, invoice_id, number, revision, created_at FROM invoices FINAL
               WHERE status = 'finalized' AND period < {before:String}
               ORDER BY period, tenant""",
            before=str(before),
        )
        return [
            InvoiceState(t, p, i, "finalized", n, int(r), 0, _utc(c)) for t, p, i, n, r, c in rows
        ]

    def adjustment_lines(
        self, tenant: str, ref_period: str, *, exclude_invoice: str | None = None
    ) -> list[InvoiceLine]:
        """Adjustment lines already written (on any later invoice of the tenant, draft or
        finalized) that correct ``ref_period``."""
        return lines_correcting(
            self.adjustment_holders(tenant, ref_period), ref_period, exclude_invoice=exclude_invoice
        )

    def adjustment_holders(self, tenant: str, ref_period: str) -> list[StoredInvoice]:
        return self.adjustment_holders_by_tenant(ref_period, tenants=[tenant]).get(tenant, [])

    def adjustment_holders_by_tenant(
        self, ref_period: str, *, tenants: Iterable[str] | None = None
    ) -> dict[str, list[StoredInvoice]]:
        """Later invoices (draft or finalized) carrying adjustment lines that correct
        ``ref_period``, per tenant, for every tenant in one query."""
        out: dict[str, list[StoredInvoice]] = {}
        for s in self.invoices(
            after=Period.parse(ref_period),
            tenants=tenants,
            containing=f'"ref_period":"{ref_period}"',
        ):
            if any(
                ln.kind == "adjustment" and ln.ref_period == ref_period for ln in s.invoice.lines
            ):
                out.setdefault(s.invoice.tenant, []).append(s)
        return out

    def credits_used(self, tenant: str, *, exclude_period: Period) -> dict[str, Decimal]:
        """Credit consumed by the tenant's finalized invoices of other periods, per credit id
        (from the documents, in the invoice's own minor units)."""
        return self.credits_used_by_tenant(exclude_period=exclude_period, tenants=[tenant]).get(
            tenant, {}
        )

    def credits_used_by_tenant(
        self, *, exclude_period: Period, tenants: Iterable[str] | None = None
    ) -> dict[str, dict[str, Decimal]]:
        """:meth:`credits_used` of every tenant in one query (only documents with a credit line
        are read and parsed)."""
        conds = [
            "status = 'finalized'",
            "period != {exclude:String}",
            'position(document, \'"kind":"credit"\') > 0',
        ]
        params: dict[str, Any] = {"exclude": str(exclude_period)}
        if tenants is not None:
            conds.append("tenant IN {tenants:Array(String)}")
            params["tenants"] = sorted(tenants)
        used: dict[str, dict[str, Decimal]] = {}
        for tenant, doc in self._query(
            f"SELECT tenant, document FROM invoices FINAL WHERE {' AND '.join(conds)}", **params
        ):
            mine = used.setdefault(tenant, {})
            for ln in json.loads(doc)["lines"]:
                if ln["kind"] == "credit":
                    ref = ln["reference"]
                    mine[ref] = mine.get(ref, Decimal(0)) - Decimal(ln["amount"])
        return used

    def finalized_numbers(self, issuer: str) -> list[str]:
        rows = self._query(
            """SELECT number FROM invoices FINAL
               WHERE issuer = {issuer:String} AND status = 'finalized'""",
            issuer=issuer,
        )
        return [r[0] for r in rows]

    def save(
        self, invoice: Invoice, *, created_at: datetime, finalized_at: datetime | None = None
    ) -> StoredInvoice:
        return self.save_all([(invoice, created_at, finalized_at)])[0]

    def save_all(
        self, batch: Sequence[tuple[Invoice, datetime, datetime | None]]
    ) -> list[StoredInvoice]:
        """Write a new version of every invoice and its lines in one insert per table (the
        header insert commits them all); refuse before writing anything if any is final."""
        if not batch:
            return []
        current: dict[tuple[str, str], InvoiceState] = {}
        for p in sorted({inv.period for inv, _, _ in batch}):
            current.update({(t, p): st for t, st in self.states(Period.parse(p)).items()})
        line_rows: list[list[Any]] = []
        header_rows: list[list[Any]] = []
        out = []
        base = time.time_ns()
        for inv, created_at, finalized_at in batch:
            cur = current.get((inv.tenant, inv.period))
            if cur is not None and cur.status == "finalized":
                raise InvoiceFinalizedError(inv.tenant, inv.period, cur.number)
            revision = max(base, (cur.revision + 1) if cur else 0)
            if inv.status == "finalized":
                # By construction a finalized version outranks any draft version ever written
                # (drafts use wall-clock nanoseconds, < 2**62 until the year 2116), so even a
                # draft written by a racing run cannot replace it in ReplacingMergeTree.
                revision = max(revision, FINALIZED_REVISION)
            doc = inv.canonical_json().decode()
            line_rows += invoice_line_rows(inv, revision, cur.lines if cur else 0)
            header_rows.append(header_row(inv, created_at, finalized_at, doc, revision))
            out.append(
                StoredInvoice(inv, created_at, finalized_at, inv.content_hash, doc, revision)
            )
        try:
            # Lines first, then the headers: a crash in between leaves the previous headers
            # (and so the previous documents) as the state billing reads; a re-run rewrites both.
            if line_rows:
                self.client.insert("invoice_lines", line_rows, column_names=LINE_COLUMNS)
            self.client.insert("invoices", header_rows, column_names=INVOICE_COLUMNS)
        except _DRIVER_ERRORS as exc:  # infrastructure error: converted at the boundary
            raise _store_error(
                f"writing {len(batch)} invoice(s) failed; the previous state stands", exc
            ) from exc
        return out


def lines_correcting(
    holders: Iterable[StoredInvoice], ref_period: str, *, exclude_invoice: str | None = None
) -> list[InvoiceLine]:
    """The adjustment lines of ``holders`` that correct ``ref_period`` (``exclude_invoice``:
    the invoice about to be re-rated, whose own earlier lines are being replaced)."""
    return [
        ln
        for s in holders
        if s.invoice.invoice_id != exclude_invoice
        for ln in s.invoice.lines
        if ln.kind == "adjustment" and ln.ref_period == ref_period
    ]


#: Slack when comparing ledger write times (ClickHouse clock) with invoice times (our clock).
CLOCK_SLACK = timedelta(minutes=5)
