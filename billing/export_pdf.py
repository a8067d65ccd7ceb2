"""PDF export: one invoice per file, the document a customer receives.

Laid out by reportlab platypus (parties, dates, totals, terms, page footer); the charges and
the per-job usage tables, which hold a line per job of the month, are
:class:`billing.pdf_table.GridTable` flowables that write their text as PDF operators in one
go (hundreds of jobs per tenant made platypus tables most of the rendering time).

Numbers on the page are the invoice's own rounded line amounts and totals, never recomputed,
so the PDF, the CSV and the JSON always agree.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table

from billing.export_json import file_stem
from billing.invoice import Invoice
from billing.pdf_table import Cell, Columns, GridTable
from billing.period import Period
from billing.pricebook import Party

_STYLES = getSampleStyleSheet()
_SMALL = ParagraphStyle("small", parent=_STYLES["Normal"], fontSize=8, leading=10)
_LINE_HEADER = ("#", "Description", "Quantity", "Unit", "Unit price", "Amount")
_JOB_HEADER = (
    "Job",
    "GPU model",
    "Class",
    "GPUs",
    "First minute (UTC)",
    "Last minute (UTC)",
    "GPU-hours",
    "Billed GPU-h",
)


#: After a job preempted in the period (the JSON export's ``"preempted": true``), and the note
#: under the job table that says what it means for the bill.
PREEMPTED_MARK = "(preempted)"
PREEMPTED_NOTE = (
    "(preempted): the job was preempted by the provider during this period. Unless the "
    "contract's plan says otherwise (preempted_minimum = charged), no minimum duration was "
    "applied to it: it is billed for the time it held, in the plan's increments."
)


def money(amount: Decimal, inv: Invoice) -> str:
    return f"{amount:,.{inv.minor_unit}f}"


def _party(title: str, p: Party, extra: list[str]) -> Paragraph:
    lines = [f"<b>{title}</b>", f"<b>{_esc(p.name)}</b>", *map(_esc, p.address)]
    if p.tax_id:
        lines.append(f"Tax ID: {_esc(p.tax_id)}")
    if p.email:
        lines.append(_esc(p.email))
    return Paragraph("<br/>".join(lines + extra), _SMALL)


def _trim(d: Decimal, min_places: int) -> str:
    """Up to 6 decimals as stored, trailing zeros dropped but at least ``min_places``."""
    text = f"{d:,.6f}"
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(min_places, "0")
    return f"{whole}.{frac}" if frac else whole


#: Columns of the charges table and of the per-job usage table (a month can hold hundreds of
#: jobs per tenant); numbers right-aligned from the third column on, as before.
_LINE_COLS = Columns((8 * mm, 84 * mm, 22 * mm, 16 * mm, 24 * mm, 28 * mm), right_from=2)
_JOB_COLS = Columns(
    (30 * mm, 34 * mm, 18 * mm, 10 * mm, 26 * mm, 26 * mm, 18 * mm, 20 * mm), right_from=2
)


def _minute(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


@lru_cache(maxsize=4096)  # jobs of a month share durations
def _hours(amount: int, per_hour: int) -> str:
    return f"{Decimal(amount) / per_hour:,.3f}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def story(inv: Invoice) -> list[Any]:
    p = Period.parse(inv.period)
    issuer, customer = inv.pricing.issuer, inv.pricing.contract.customer
    title = f"Invoice {inv.number}" if inv.number else "DRAFT invoice (not valid for payment)"
    meta = [
        ["Invoice number", inv.number or "(draft)"],
        ["Issue date", inv.issued_on.isoformat() if inv.issued_on else "-"],
        ["Due date", inv.due_on.isoformat() if inv.due_on else "-"],
        ["Billing period", f"{p.first_day} to {p.last_day} (UTC)"],
        ["Currency", inv.currency],
    ]
    head = Table(
        [
            [
                _party("From", issuer, []),
                _party("Bill to", customer, [f"Account: {_esc(inv.tenant)}"]),
                Table(
                    meta,
                    style=[
                        ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                        ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 8),
                    ],
                ),
            ]
        ],
        colWidths=[60 * mm, 60 * mm, 62 * mm],
        style=[("VALIGN", (0, 0), (-1, -1), "TOP")],
    )
    charges: list[list[Cell]] = [
        [
            (str(ln.line_no),),
            _LINE_COLS.wrap(1, ln.description),
            (_trim(ln.quantity, 0) if ln.unit else "",),
            (ln.unit,),
            (_trim(ln.unit_price, inv.minor_unit) if ln.unit else "",),
            (money(ln.amount, inv),),
        ]
        for ln in inv.lines
        if ln.kind != "tax"
    ]
    table = GridTable(_LINE_COLS, _LINE_HEADER, charges)
    tax_label = next((ln.description for ln in inv.lines if ln.kind == "tax"), "Tax")
    totals = Table(
        [
            ["Subtotal", money(inv.subtotal, inv)],
            [tax_label, money(inv.tax, inv)],
            [f"Total due ({inv.currency})", money(inv.total, inv)],
        ],
        colWidths=[50 * mm, 32 * mm],
        hAlign="RIGHT",
        style=[
            ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
            ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 10),
            ("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black),
            ("ALIGN", (1, 0), (1, -1), "RIGHT"),
        ],
    )
    jobs: list[list[Cell]] = [
        [
            _JOB_COLS.wrap(0, f"{j.job} {PREEMPTED_MARK}" if j.preempted else j.job),
            _JOB_COLS.wrap(1, j.gpu_model),
            (j.billing_class,),
            (str(j.gpus),),
            (_minute(j.first_minute),),
            (_minute(j.last_minute),),
            (_hours(j.gpu_milli_seconds, 3_600_000),),
            (_hours(j.billable_seconds, 3600),),
        ]
        for j in inv.jobs
    ]
    preempted = any(j.preempted for j in inv.jobs)
    billed = Decimal(sum(j.billable_seconds for j in inv.jobs)) / 3600
    total: list[Cell] = [("Total",), ("",), ("",), ("",), ("",), ("",)]
    jobs.append([*total, (f"{inv.gpu_hours:,.3f}",), (f"{billed:,.3f}",)])
    job_table = GridTable(_JOB_COLS, _JOB_HEADER, jobs, bold_last=True)
    terms = (
        f"Payment due within {issuer.payment_terms_days} days of the issue date. Prices are "
        "per GPU-hour, metered per second of allocation; each line is rounded half-even "
        "to the currency's minor unit and totals are sums of lines."
    )
    if inv.number:
        terms += f" Document hash (SHA-256): {inv.content_hash}"
    return [
        Paragraph(_esc(issuer.name), _STYLES["Title"]),
        Paragraph(title, _STYLES["Heading2"]),
        head,
        Spacer(1, 6 * mm),
        Paragraph("Charges", _STYLES["Heading3"]),
        table,
        Spacer(1, 3 * mm),
        totals,
        Spacer(1, 6 * mm),
        Paragraph("Usage summary by job", _STYLES["Heading3"]),
        job_table if inv.jobs else Paragraph("No metered usage in this period.", _SMALL),
        *([Spacer(1, 2 * mm), Paragraph(PREEMPTED_NOTE, _SMALL)] if preempted else []),
        Spacer(1, 6 * mm),
        Paragraph(terms, _SMALL),
    ]


def write_pdf(inv: Invoice, out_dir: Path) -> Path:
    path = out_dir / f"{file_stem(inv)}.pdf"
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=14 * mm,
        rightMargin=14 * mm,
        topMargin=12 * mm,
        bottomMargin=14 * mm,
        title=f"Invoice {inv.number or 'draft'} {inv.tenant} {inv.period}",
        author=inv.pricing.issuer.name,
        invariant=1,
    )

    def footer(canvas: Any, d: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(14 * mm, 8 * mm, f"{inv.number or 'DRAFT'} - {inv.tenant} - {inv.period}")
        canvas.drawRightString(A4[0] - 14 * mm, 8 * mm, f"page {d.page}")
        if not inv.number:
            canvas.setFont("Helvetica-Bold", 60)
            canvas.setFillColor(colors.Color(0.85, 0.2, 0.2, alpha=0.15))
            canvas.translate(A4[0] / 2, A4[1] / 2)
            canvas.rotate(35)
            canvas.drawCentredString(0, 0, "DRAFT")
        canvas.restoreState()

    doc.build(story(inv), onFirstPage=footer, onLaterPages=footer)
    return path


def write_pdfs(
    documents: Iterable[str], out_dir: Path, *, processes: int | None = None
) -> list[Path]:
    """One PDF per stored document, rendered by ``processes`` worker processes (default: one
    per available core), in the documents' order. Rendering is pure CPU (reportlab), so the
    pool is what uses every core; documents are handed over as their JSON text.

    Workers come from a fork server that has imported this module once (no ClickHouse engine
    in it: a fork of the caller would copy an engine's threads' locks)."""
    n = processes or len(os.sched_getaffinity(0))
    if n <= 1:
        return [_render(doc, str(out_dir)) for doc in documents]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ctx.Pool(n) as pool:
        return list(pool.imap(_render_in, ((doc, str(out_dir)) for doc in documents), chunksize=4))


def _render_in(args: tuple[str, str]) -> Path:
    return _render(*args)


def _render(document: str, out_dir: str) -> Path:
    return write_pdf(Invoice.from_document(json.loads(document)), Path(out_dir))
