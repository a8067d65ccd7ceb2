"""Billing against the embedded ClickHouse: run, finalize, late usage, reconcile, export."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.errors import InvoiceFinalizedError
from billing.invoice import Invoice
from billing.period import Period
from billing.reconcile import LEDGER, RAW, reconcile_period
from billing.service import export_period, finalize_period, invoice_month, run_period
from billing.store import BillingStore
from tests.unit.billing.builders import A100, H100, make_book

pytestmark = pytest.mark.integration

JAN, FEB = Period(2026, 1), Period(2026, 2)
FULL = (1 << 60) - 1
COLS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "gpu_model",
    "node_id",
    "seconds_mask",
    "gpu_seconds",
    "energy_mj",
    "version",
]
BOOK = make_book(
    tenants={
        "t": {"name": "Tenant T", "plan": "flat", "tax_rate": "0.10"},
        "u": {
            "name": "Umbrella",
            "plan": "flat",
            "default_class": "reserved",
            "starts_on": "2025-01-01",
            "commitments": [
                {
                    "gpu_model": A100,
                    "gpu_hours_per_month": 1,
                    "rate": "1.00",
                    "overage_rate": "2.00",
                }
            ],
        },
    }
)
DEMO_BOOK = Path(__file__).resolve().parents[3] / "billing" / "pricebook.demo.toml"


#: The ledger that merges by union (migration 0003): masks and per-second readings are stored,
#: gpu_seconds / energy_mj are ALIAS columns computed from them.
UNION_COLS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "gpu_model",
    "node_id",
    "claimed_mask",
    "released_mask",
    "energy_map",
    "version",
]


def insert(
    client: Any,
    tenant: str,
    job: str,
    start: str,
    count: int,
    *,
    gpu: str = "g0",
    model: str = H100,
    mask: int = FULL,
    klass: str = "",
) -> None:
    """``count`` full minutes of ledger rows, written directly into usage_minutely (1000 mJ
    per counted second), in whichever ledger layout the migrations created."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    secs = bin(mask).count("1")
    union = client.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'usage_minutely' AND name = 'claimed_mask'"
    ).result_rows[0][0]
    if union:
        first = (mask & -mask).bit_length() - 1  # the energy is read at a counted second
        client.insert(
            "usage_minutely",
            [
                [
                    t0 + timedelta(minutes=i),
                    tenant,
                    job,
                    klass,
                    gpu,
                    model,
                    "n1",
                    mask,
                    0,
                    ([first], [secs * 1000]),
                    secs,
                ]
                for i in range(count)
            ],
            column_names=UNION_COLS,
        )
        return
    client.insert(
        "usage_minutely",
        [
            [
                t0 + timedelta(minutes=i),
                tenant,
                job,
                klass,
                gpu,
                model,
                "n1",
                mask,
                secs,
                secs * 1000,
                secs,
            ]
            for i in range(count)
        ],
        column_names=COLS,
    )


def test_late_usage_becomes_an_adjustment_and_reconciles(clickhouse: Any) -> None:
    # Given January: t ran 60 minutes on H100 (1 GPU-h x 3.60 = 3.60, tax 10% -> 3.96)
    insert(clickhouse, "t", "train", "2026-01-10T00:00", 60)
    insert(clickhouse, "__idle__", "", "2026-01-10T01:00", 30)
    run_period(clickhouse, BOOK, JAN)
    (jan,) = [i for i in finalize_period(clickhouse, JAN) if i.tenant == "t"]
    assert jan.total == Decimal("3.96") and jan.number.endswith("-000001")
    assert reconcile_period(clickhouse, JAN).ok

    # When 30 more minutes of January usage arrive after finalization
    insert(clickhouse, "t", "train", "2026-01-31T23:00", 30, gpu="g1")
    stale = reconcile_period(clickhouse, JAN)
    assert not stale.ok and "+1.80 USD (+1800 GPU-s)" in stale.differences[0]
    # ...and the finalized invoice refuses a re-run
    with pytest.raises(InvoiceFinalizedError, match="is finalized and immutable"):
        BillingStore(clickhouse).save(jan, created_at=datetime.now(UTC))
    assert run_period(clickhouse, BOOK, JAN).refused[0][0] == "t"

    # Then February's invoice (no February usage) carries an adjustment line for it
    insert(clickhouse, "t", "eval", "2026-02-02T00:00", 10)  # 600 s x 0.001 = 0.60
    run_period(clickhouse, BOOK, FEB)
    feb = BillingStore(clickhouse).invoice("t", FEB)
    assert feb is not None
    adj = [ln for ln in feb.invoice.lines if ln.kind == "adjustment"]
    assert [
        (ln.reference, ln.ref_period, ln.ref_kind, ln.seconds, str(ln.amount)) for ln in adj
    ] == [(jan.number, "2026-01", "usage", 1800, "1.80")]
    # 0.60 + 1.80 = 2.40; tax 0.24; total 2.64
    assert (feb.invoice.subtotal, feb.invoice.total) == (Decimal("2.40"), Decimal("2.64"))
    # The January invoice was not touched
    assert (
        BillingStore(clickhouse).invoice("t", JAN).invoice.canonical_json() == jan.canonical_json()
    )

    # And reconcile is clean (the adjustment is pending on February's draft) ...
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.lines()
    assert report.pending and jan.number in report.pending[0]
    # ... a re-run of February neither drops nor duplicates the adjustment
    run_period(clickhouse, BOOK, FEB)
    feb2 = BillingStore(clickhouse).invoice("t", FEB)
    assert feb2.invoice.canonical_json() == feb.invoice.canonical_json()
    finalize_period(clickhouse, FEB)
    assert reconcile_period(clickhouse, JAN).ok and reconcile_period(clickhouse, FEB).ok
    # A later month has nothing left to adjust
    assert not [
        ln
        for i in run_period(clickhouse, BOOK, Period(2026, 3)).drafted
        for ln in i.lines
        if ln.kind == "adjustment"
    ]


def test_commitment_tenant_is_invoiced_without_usage_and_numbers_are_gapless(
    clickhouse: Any,
) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 5)
    run_period(clickhouse, BOOK, JAN)
    jan = finalize_period(clickhouse, JAN)
    assert [(i.tenant, i.total) for i in jan] == [("t", Decimal("0.33")), ("u", Decimal("1.00"))]
    insert(clickhouse, "t", "b", "2026-02-03T00:00", 5)
    run_period(clickhouse, BOOK, FEB)
    feb = finalize_period(clickhouse, FEB)
    year = jan[0].issued_on.year  # numbered by issue year
    assert [i.number for i in jan + feb] == [f"GM-{year}-{n:06d}" for n in (1, 2, 3, 4)]
    assert finalize_period(clickhouse, FEB) == []  # nothing left to finalize


def test_draft_rerun_replaces_lines_exactly(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 5)
    insert(clickhouse, "t", "b", "2026-01-03T00:00", 5, model=A100, gpu="g9")
    run_period(clickhouse, BOOK, JAN)
    # With a price book that bills t without tax, the draft shrinks from 3 lines to 2
    smaller = make_book(tenants={"t": {"plan": "flat"}})
    run_period(clickhouse, smaller, JAN)
    stored = clickhouse.query(
        "SELECT line_no, kind FROM invoice_lines FINAL WHERE tenant = 't' ORDER BY line_no"
    ).result_rows
    assert stored == [(1, "usage"), (2, "usage")]
    (row,) = clickhouse.query("SELECT count() FROM invoices FINAL WHERE tenant='t'").result_rows
    assert row[0] == 1


def test_conservation_detects_a_second_billed_twice(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 2)
    insert(clickhouse, "__idle__", "", "2026-01-03T00:01", 1, mask=0b1)  # overlaps second 0
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert not report.ok
    assert report.gpus[0].source == LEDGER
    assert (
        "GPU g0: billed 120 + idle 1 = 121 GPU-seconds, but 120 observed" in report.differences[-1]
    )


def test_conservation_uses_the_raw_archive_when_it_covers_the_period(clickhouse: Any) -> None:
    insert(clickhouse, "t", "a", "2026-01-03T00:00", 1)
    t0 = datetime(2026, 1, 3, tzinfo=UTC)
    clickhouse.insert(
        "usage_seconds",
        [
            [
                t0 + timedelta(seconds=s),
                "g0",
                H100,
                "n1",
                "t",
                "a",
                "",
                f"00000000-0000-0000-0000-{s:012d}",
            ]
            for s in range(60)
        ],
        column_names=[
            "ts",
            "gpu_uuid",
            "gpu_model",
            "node_id",
            "tenant",
            "job",
            "billing_class",
            "event_id",
        ],
    )
    run_period(clickhouse, BOOK, JAN)
    finalize_period(clickhouse, JAN)
    report = reconcile_period(clickhouse, JAN)
    assert report.ok, report.lines()
    assert report.gpus[0].source == RAW and report.gpus[0].observed == 60


def test_exports_csv_json_pdf(clickhouse: Any, tmp_path: Path) -> None:
    insert(clickhouse, "acme", "train-7", "2026-01-10T00:00", 90)
    insert(clickhouse, "hooli", "spot-1", "2026-01-10T00:00", 60, gpu="g1", klass="spot")
    insert(clickhouse, "umbrella", "sim", "2026-01-10T00:00", 60, gpu="g2", model=A100)
    summaries = invoice_month(clickhouse, DEMO_BOOK, "2026-01", tmp_path)
    # initech: no usage, but its minimum monthly spend is invoiced
    assert [s.tenant for s in summaries] == ["acme", "hooli", "initech", "umbrella"]
    invoices = {s.invoice.tenant: s.invoice for s in BillingStore(clickhouse).invoices(period=JAN)}

    # CSV: one row per line; each invoice's rows sum to its total
    with (tmp_path / "invoices-2026-01.csv").open() as f:
        rows = list(csv.DictReader(f))
    for inv in invoices.values():
        mine = [r for r in rows if r["invoice_number"] == inv.number]
        assert len(mine) == len(inv.lines)
        assert sum(Decimal(r["amount"]) for r in mine) == inv.total

    # JSON: the canonical document, whose sha256 is the content hash
    for inv in invoices.values():
        data = (tmp_path / f"{inv.number}.json").read_bytes()
        assert hashlib.sha256(data).hexdigest() == inv.content_hash
        assert Invoice.from_document(json.loads(data)).canonical_json() == data
        _check_schema(json.loads(data))

    # PDF: the numbers a customer reads are the invoice's numbers
    from pypdf import PdfReader

    acme = invoices["acme"]
    text = "\n".join(p.extract_text() for p in PdfReader(tmp_path / f"{acme.number}.pdf").pages)
    for expected in [
        acme.number,
        "Acme Corporation",
        "GPU Meter Cloud, Inc.",
        "2026-01-01 to 2026-01-31",
        f"{acme.total:,.2f}",
        f"{acme.subtotal:,.2f}",
        f"{acme.tax:,.2f}",
        "train-7",
        "Usage summary by job",
        "1.500",
    ]:
        assert expected in text, expected
    for ln in acme.lines:
        assert f"{ln.amount:,.2f}" in text

    # Running the month again changes nothing and exports the same documents
    again = invoice_month(clickhouse, DEMO_BOOK, "2026-01", tmp_path / "again")
    assert again == summaries
    assert (tmp_path / "again" / f"{acme.number}.json").read_bytes() == (
        tmp_path / f"{acme.number}.json"
    ).read_bytes()


def test_pdf_renders_to_png_when_poppler_is_available(clickhouse: Any, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    insert(clickhouse, "acme", "train-7", "2026-01-10T00:00", 90)
    run_period(clickhouse, make_book(tenants={"acme": {"plan": "flat"}}), JAN)
    (pdf,) = export_period(clickhouse, JAN, "pdf", tmp_path)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
    )
    assert list(tmp_path.glob("page*.png"))


SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "json" / "invoice.v1.schema.json"


def _check_schema(doc: Any) -> None:
    """Required keys and types of the published schema (jsonschema is not a dependency)."""
    schema = json.loads(SCHEMA.read_text())
    types = {"string": str, "integer": int, "array": list, "object": dict, "null": type(None)}

    def walk(node: dict[str, Any], value: Any, where: str) -> None:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        allowed = node.get("type")
        if allowed:
            allowed = allowed if isinstance(allowed, list) else [allowed]
            assert isinstance(value, tuple(types[t] for t in allowed)), (where, value)
        if "enum" in node:
            assert value in node["enum"], (where, value)
        if "pattern" in node and isinstance(value, str):
            import re

            assert re.fullmatch(node["pattern"], value), (where, value)
        if isinstance(value, dict):
            for key in node.get("required", []):
                assert key in value, f"{where}.{key} missing"
            for key, sub in node.get("properties", {}).items():
                if key in value:
                    walk(sub, value[key], f"{where}.{key}")
        if isinstance(value, list) and "items" in node:
            for i, item in enumerate(value):
                walk(node["items"], item, f"{where}[{i}]")

    walk(schema, doc, "$")
