"""The invoice PDF holds every charge line and every job row of a long month, once each and in
order, whatever the page breaks; text a reader extracts is the text that was drawn (PDF
delimiters and characters outside ASCII included); the pool renders the same bytes as one
process. Ground truth is the usage the test builds (job names, hours, times), not the renderer.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader

from billing import export_pdf
from billing.invoice import Invoice
from billing.pdf_table import PAD_Y, Columns, GridTable
from billing.rating import UsageRow
from tests.unit.billing.builders import A100, H100, make_book, rate

START = datetime(2026, 1, 1, tzinfo=UTC)


def _jobs(n: int) -> list[tuple[str, str, datetime, int]]:
    """(job, model, first minute, whole hours) per job: the usage behind the invoice."""
    return [
        (f"job-{i:04d}", (H100, A100)[i % 2], START + timedelta(hours=2 * i), i % 5 + 1)
        for i in range(n)
    ]


def _invoice(
    jobs: list[tuple[str, str, datetime, int]], *, number: str = "GM-2026-000001"
) -> Invoice:
    rows = [
        UsageRow(
            "t",
            job,
            "",
            model,
            f"g{i}",
            start,
            hours * 3600,
            last=start + timedelta(minutes=hours * 60 - 1),
        )
        for i, (job, model, start, hours) in enumerate(jobs)
    ]
    inv = rate(make_book(), rows)
    return inv.finalized(number, date(2026, 2, 1)) if number else inv


def _pages(path: Path) -> list[str]:
    return [p.extract_text() for p in PdfReader(path).pages]


def test_every_job_row_once_and_in_order_across_pages(tmp_path: Path) -> None:
    jobs = _jobs(260)
    inv = _invoice(jobs)
    pages = _pages(export_pdf.write_pdf(inv, tmp_path))
    assert len(pages) >= 5
    text = "\n".join(pages)
    where = []
    for job, model, start, hours in jobs:
        assert text.count(job) == 1, job
        # the row's first line, whole: name, model (first line), class, GPUs, times, hours
        (row,) = [ln for ln in text.splitlines() if job in ln]
        for cell in (
            start.strftime("%Y-%m-%d %H:%M"),
            (start + timedelta(minutes=hours * 60 - 1)).strftime("%Y-%m-%d %H:%M"),
            f"{hours}.000",
            "on_demand",
            model.split()[0],
        ):
            assert cell in row, (job, cell, row)
        where.append(text.index(job))
    assert where == sorted(where)
    total_hours = sum(h for *_, h in jobs)
    assert f"Total {total_hours:,.3f} {total_hours:,.3f}" in text
    for n, page in enumerate(pages, start=1):
        assert f"page {n}" in page
        assert f"{inv.number} - t - 2026-01" in page
    # the job table's header on every page after the first that holds jobs
    assert all("Billed GPU-h" in p for p in pages[1:])
    for ln in inv.lines:
        assert f"{ln.amount:,.2f}" in text
    for amount in (inv.subtotal, inv.tax, inv.total):
        assert f"{amount:,.2f}" in text


def test_delimiters_and_characters_outside_ascii_are_extracted_as_drawn(tmp_path: Path) -> None:
    names = ["train(7)", "back\\slash", "Zürich-é", "naïve)(", "crème brûlée", "α-β", "€-2"]
    jobs = [(n, H100, START + timedelta(hours=i), 1) for i, n in enumerate(names)]
    text = "\n".join(_pages(export_pdf.write_pdf(_invoice(jobs), tmp_path)))
    for name in names:
        assert name in text, name


def test_draft_is_marked_and_has_no_number(tmp_path: Path) -> None:
    inv = _invoice(_jobs(3), number="")
    text = "\n".join(_pages(export_pdf.write_pdf(inv, tmp_path)))
    assert "DRAFT invoice (not valid for payment)" in text
    assert "DRAFT - t - 2026-01" in text


def test_pool_writes_the_same_bytes_in_the_documents_order(tmp_path: Path) -> None:
    invs = [_invoice(_jobs(40 + i), number=f"GM-2026-{i + 1:06d}") for i in range(5)]
    docs = [inv.canonical_json().decode() for inv in invs]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = export_pdf.write_pdfs(docs, tmp_path / "one", processes=1)
    two = export_pdf.write_pdfs(docs, tmp_path / "two", processes=2)
    assert [p.name for p in one] == [p.name for p in two] == [f"{i.number}.pdf" for i in invs]
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]


@pytest.mark.parametrize("seed", range(20))
def test_grid_table_splits_keep_every_row_once_within_the_room(seed: int) -> None:
    rnd = random.Random(seed)
    cols = Columns((40.0, 60.0, 50.0), right_from=1)
    rows = [
        [tuple(f"r{i}c{c}l{n}" for n in range(rnd.randint(1, 3))) for c in range(3)]
        for i in range(rnd.randint(1, 120))
    ]
    room = rnd.uniform(60, 400)
    parts, rest = [], GridTable(cols, ["a", "b", "c"], rows, bold_last=True)
    while True:
        _, h = rest.wrap(150, room)
        if h <= room:
            parts.append(rest)
            break
        split = rest.split(150, room)
        assert len(split) == 2
        first, rest = split
        assert first.wrap(150, room)[1] <= room + 1e-6
        assert not first.bold_last
        parts.append(first)
    assert [r for p in parts for r in p.rows] == rows
    assert parts[-1].bold_last
    # each part's height: its header and its rows' lines, 10 points a line, 3 above and below
    for p in parts:
        lines = sum(max(len(c) for c in r) for r in p.rows)
        assert p.height == pytest.approx((1 + len(p.rows)) * 2 * PAD_Y + (1 + lines) * 10)


def test_invoice_without_usage_says_so(tmp_path: Path) -> None:
    text = "\n".join(_pages(export_pdf.write_pdf(_invoice([]), tmp_path)))
    assert "No metered usage in this period." in text
    assert "Total due (USD)" in text and "Billed GPU-h" not in text


def test_long_descriptions_wrap_inside_their_column(tmp_path: Path) -> None:
    # a model name far wider than its column: every word is on the page, on several lines
    model = "NVIDIA " + " ".join(f"Part{i}" for i in range(40))
    jobs = [("j", model, START, 1)]
    book = make_book(
        rates=[
            {
                "gpu_model": model,
                "billing_class": "on_demand",
                "price_per_gpu_hour": "2.00",
                "effective_from": "2026-01-01",
            }
        ],
        extra_gpu_models=[model],
    )
    rows = [UsageRow("t", "j", "", model, "g0", START, 3600, last=START + timedelta(minutes=59))]
    inv = rate(book, rows).finalized("GM-2026-000009", date(2026, 2, 1))
    lines = "\n".join(_pages(export_pdf.write_pdf(inv, tmp_path))).splitlines()
    words = model.split()
    assert all(any(w in ln.split() for ln in lines) for w in words)
    holding = [ln for ln in lines if "Part" in ln]
    assert len(holding) > 4  # wrapped in the charges line and in the job row
    assert jobs[0][0] in "\n".join(lines)


def test_a_preempted_job_is_marked_and_the_mark_explained(tmp_path: Path) -> None:
    from billing.pricing import TenantPricing
    from billing.rating import rate_invoice
    from tests.unit.billing.builders import JAN

    # given two jobs, one preempted in the period
    rows = [
        UsageRow("t", job, "", H100, "g0", START + timedelta(hours=i), 1800)
        for i, job in enumerate(("kept-job", "spot-job"))
    ]
    pricing = TenantPricing.from_pricebook(make_book(), "t", JAN, None)
    inv = rate_invoice(pricing, "t", JAN, rows, preempted={"spot-job"})
    text = "\n".join(_pages(export_pdf.write_pdf(inv, tmp_path)))
    # then the preempted one carries the mark (wrapped under its id in the narrow column), the
    # other does not, and a note says what it means
    lines = text.splitlines()
    mark = [i for i, ln in enumerate(lines) if ln.startswith("(preempted)")]
    assert len(mark) == 2  # the mark and the note
    assert lines[mark[0] - 1].startswith("spot-job") and "kept-job (preempted)" not in text
    assert "preempted by the provider" in " ".join(text.split())
    # and an invoice without preemptions has no note
    plain = rate_invoice(pricing, "t", JAN, rows)
    other = tmp_path / "plain"
    other.mkdir()
    assert "preempted" not in "\n".join(_pages(export_pdf.write_pdf(plain, other)))
