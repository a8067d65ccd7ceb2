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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import Error as DriverError

from billing.errors import BillingStoreError, InvoiceFinalizedError
from billing.invoice import Invoice, InvoiceLine
from billing.period import Period
from billing.pricebook import IDLE_TENANT
from billing.rating import UsageRow

INVOICE_COLUMNS = [
    "invoice_id",
    "tenant",
    "period",
    "status",
    "number",
    "issuer",
    "currency",
    "subtotal",
    "tax",
    "total",
    "gpu_seconds",
    "created_at",
    "finalized_at",
    "content_hash",
    "document",
    "revision",
]
LINE_COLUMNS = [
    "invoice_id",
    "tenant",
    "period",
    "line_no",
    "kind",
    "gpu_model",
    "billing_class",
    "description",
    "quantity",
    "unit",
    "unit_price",
    "amount",
    "reference",
    "ref_period",
    "ref_kind",
    "gpu_seconds",
    "status",
    "revision",
    "is_deleted",
]


class QueryClient(Protocol):
    """The part of clickhouse-connect's Client billing uses (so fakes type-check)."""

    def query(self, query: str, parameters: dict[str, Any] | None = ...) -> Any: ...
    def insert(
        self, table: str, data: Sequence[Sequence[Any]], column_names: Sequence[str] = ...
    ) -> Any: ...
    def command(self, cmd: str, parameters: dict[str, Any] | None = ...) -> Any: ...


#: The rating query: the period's allocated usage per (tenant, job, class, GPU, UTC day), for
#: every tenant at once, ordered by tenant so it can be rated one tenant at a time as it
#: streams. It reads the ledger only through FINAL and the columns minute, tenant, job,
#: billing_class, gpu_model, gpu_uuid, mig_uuid, gpu_seconds, energy_mj. ``{where}``: an
#: optional tenant filter. The benchmark's floor is this GROUP BY (bench/bench_billing_scale.py).
RATING_QUERY = """SELECT tenant, job, billing_class, gpu_model,
       if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid)) AS gpu,
       min(minute), max(minute), sum(gpu_seconds), sum(energy_mj)
FROM usage_minutely FINAL
WHERE minute >= {{start:DateTime('UTC')}} AND minute < {{end:DateTime('UTC')}}
  AND tenant != {{idle:String}} {where}
GROUP BY tenant, job, billing_class, gpu_model, gpu, toDate(minute)
ORDER BY tenant, job, gpu, min(minute)"""


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


class BillingStore:
    def __init__(self, client: QueryClient) -> None:
        self.client = client

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql, parameters=params).result_rows)
        except _DRIVER_ERRORS as exc:  # surface the server's code and message, keep the cause
            raise _store_error("ClickHouse query failed", exc) from exc

    # -- the ledger ------------------------------------------------------------------------

    def usage_rows(self, period: Period, tenants: Iterable[str] | None = None) -> list[UsageRow]:
        """The period's allocated usage (see :data:`RATING_QUERY`) as one list."""
        return [r for _, rows in self.usage_by_tenant(period, tenants) for r in rows]

    def usage_by_tenant(
        self, period: Period, tenants: Iterable[str] | None = None
    ) -> Iterator[tuple[str, list[UsageRow]]]:
        """The period's allocated usage, aggregated per (tenant, job, class, GPU, UTC day),
        one tenant at a time in ascending tenant order, streamed from ClickHouse in blocks.

        A day is the finest grain prices change at, so this aggregate rates exactly like the
        minute rows while moving ~1/1440 as many rows into Python. One query serves every
        tenant of the period (the cost follows the ledger, not the tenant count), and only one
        tenant's rows are held at a time.
        """
        where = ""
        params: dict[str, Any] = {"start": period.start, "end": period.end, "idle": IDLE_TENANT}
        if tenants is not None:
            where = "AND tenant IN {tenants:Array(String)}"
            params["tenants"] = sorted(tenants)
        current: str | None = None
        rows: list[UsageRow] = []
        for t, j, c, m, g, first, last, sec, e in self._stream(
            RATING_QUERY.format(where=where), **params
        ):
            if t != current:
                if current is not None:
                    yield current, rows
                current, rows = t, []
            rows.append(UsageRow(t, j, c, m, g, _utc(first), int(sec), int(e), last=_utc(last)))
        if current is not None:
            yield current, rows

    def _stream(self, sql: str, **params: Any) -> Iterator[tuple[Any, ...]]:
        """Rows of a query block by block (clickhouse-connect's row block stream when the client
        has one, so memory holds one block, not the result)."""
        stream = getattr(self.client, "query_row_block_stream", None)
        if stream is None:
            yield from self._query(sql, **params)
            return
        try:
            with stream(sql, parameters=params) as blocks:
                for block in blocks:
                    yield from block
        except _DRIVER_ERRORS as exc:  # surface the server's code and message, keep the cause
            raise _store_error("ClickHouse query failed", exc) from exc

    def tenants_with_usage(self, period: Period) -> set[str]:
        rows = self._query(
            """SELECT DISTINCT tenant FROM usage_minutely FINAL
               WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
                 AND tenant != {idle:String} AND gpu_seconds > 0""",
            start=period.start,
            end=period.end,
            idle=IDLE_TENANT,
        )
        return {r[0] for r in rows}

    def last_ledger_writes(self, period: Period) -> dict[str, datetime]:
        """When each tenant's ledger rows for the period were last written (late-usage probe),
        for every tenant in one query."""
        rows = self._query(
            """SELECT tenant, max(updated_at) FROM usage_minutely FINAL
               WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
               GROUP BY tenant""",
            start=period.start,
            end=period.end,
        )
        return {t: _utc(at) for t, at in rows}

    def last_ledger_write(self, tenant: str, period: Period) -> datetime | None:
        return self.last_ledger_writes(period).get(tenant)

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
            line_rows += _line_rows(inv, revision, cur.lines if cur else 0)
            header_rows.append(
                [
                    inv.invoice_id,
                    inv.tenant,
                    inv.period,
                    inv.status,
                    inv.number,
                    inv.pricing.issuer.number_prefix,
                    inv.currency,
                    inv.subtotal,
                    inv.tax,
                    inv.total,
                    inv.gpu_seconds,
                    created_at,
                    finalized_at,
                    inv.content_hash,
                    doc,
                    revision,
                ]
            )
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


def with_tenants(
    stream: Iterable[tuple[str, list[UsageRow]]], tenants: Iterable[str]
) -> Iterator[tuple[str, list[UsageRow]]]:
    """(tenant, rows) for every tenant of ``stream`` (ascending, as :meth:`usage_by_tenant`
    yields them) and of ``tenants``, in ascending order; a tenant without usage gets []."""
    extra = sorted(set(tenants), reverse=True)  # pop() from the end: ascending
    for tenant, rows in stream:
        while extra and extra[-1] < tenant:
            yield extra.pop(), []
        if extra and extra[-1] == tenant:
            extra.pop()
        yield tenant, rows
    while extra:
        yield extra.pop(), []


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


def _line_rows(inv: Invoice, revision: int, previous_count: int) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            inv.invoice_id,
            inv.tenant,
            inv.period,
            ln.line_no,
            ln.kind,
            ln.gpu_model,
            ln.billing_class,
            ln.description,
            ln.quantity,
            ln.unit,
            ln.unit_price,
            ln.amount,
            ln.reference,
            ln.ref_period,
            ln.ref_kind,
            ln.seconds,
            inv.status,
            revision,
            0,
        ]
        for ln in inv.lines
    ]
    for line_no in range(len(inv.lines) + 1, previous_count + 1):  # tombstones
        rows.append(
            [
                inv.invoice_id,
                inv.tenant,
                inv.period,
                line_no,
                "",
                "",
                "",
                "",
                Decimal(0),
                "",
                Decimal(0),
                Decimal(0),
                "",
                "",
                "",
                0,
                inv.status,
                revision,
                1,
            ]
        )
    return rows


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


#: Revisions of finalized versions start here (see ``save_all``); UInt64 leaves ample room.
FINALIZED_REVISION = 1 << 62

#: Slack when comparing ledger write times (ClickHouse clock) with invoice times (our clock).
CLOCK_SLACK = timedelta(minutes=5)


#: What a ClickHouse call can raise: the driver's errors, chDB's RuntimeError, the socket's
#: OSError. Anything else is a bug and is left to propagate as itself.
_DRIVER_ERRORS = (DriverError, OSError, RuntimeError)


def _store_error(what: str, exc: BaseException) -> BillingStoreError:
    from kernel.clickhouse import ClickHouseError

    err = ClickHouseError.from_driver(exc if isinstance(exc, Exception) else Exception(exc))
    return BillingStoreError(f"{what}: {err.render()}", code=err.code, name=err.name)
