"""CSV export for accounting: one row per invoice line, columns documented in billing/README.md.

Amounts are written with exactly the currency's minor-unit digits, quantities and unit prices
with 6 decimals, dates ISO 8601; the rows of one invoice sum to its total.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from billing.invoice import Invoice
from billing.money import fmt_money

COLUMNS = [
    "invoice_number",
    "invoice_id",
    "status",
    "tenant",
    "customer_name",
    "period",
    "issued_on",
    "due_on",
    "currency",
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
]


def rows(inv: Invoice) -> list[dict[str, str]]:
    return [
        {
            "invoice_number": inv.number,
            "invoice_id": inv.invoice_id,
            "status": inv.status,
            "tenant": inv.tenant,
            "customer_name": inv.pricing.contract.customer.name,
            "period": inv.period,
            "issued_on": inv.issued_on.isoformat() if inv.issued_on else "",
            "due_on": inv.due_on.isoformat() if inv.due_on else "",
            "currency": inv.currency,
            "line_no": str(ln.line_no),
            "kind": ln.kind,
            "gpu_model": ln.gpu_model,
            "billing_class": ln.billing_class,
            "description": ln.description,
            "quantity": f"{ln.quantity:.6f}",
            "unit": ln.unit,
            "unit_price": f"{ln.unit_price:.6f}",
            "amount": fmt_money(ln.amount, inv.minor_unit),
            "reference": ln.reference,
            "ref_period": ln.ref_period,
        }
        for ln in inv.lines
    ]


def write_csv(invoices: Sequence[Invoice], path: Path) -> Path:
    return write_csv_sorted(sorted(invoices, key=lambda i: (i.number or "~", i.tenant)), path)


def write_csv_sorted(invoices: Iterable[Invoice], path: Path) -> Path:
    """Invoices already in the file's order (numbers, then drafts, by tenant), one at a time."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for inv in invoices:
            w.writerows(rows(inv))
    return path
