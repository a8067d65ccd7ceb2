"""The rows billing writes for an invoice: ``invoices`` (one header, the document) and
``invoice_lines`` (its lines, a projection for SQL and analytics; tombstones for lines a
shorter re-run no longer has). Columns in migrations 0010, 0011 and 0032."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.invoice import Invoice

#: Revisions of finalized versions start here (see ``BillingStore.save_all``); UInt64 leaves
#: ample room.
FINALIZED_REVISION = 1 << 62

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
    "gpu_milli_seconds",
]


def header_row(
    inv: Invoice, created_at: datetime, finalized_at: datetime | None, doc: str, revision: int
) -> list[Any]:
    return [
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


def invoice_line_rows(inv: Invoice, revision: int, previous_count: int) -> list[list[Any]]:
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
            ln.gpu_milli_seconds,
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
                0,
            ]
        )
    return rows
