"""Invoice exports against the embedded ClickHouse: CSV, JSON (the published schema) and PDF."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.invoice import Invoice
from billing.service import export_period, invoice_month, run_period
from billing.store import BillingStore
from tests.integration.billing.test_invoicing import DEMO_BOOK, JAN, insert
from tests.unit.billing.builders import A100, make_book

pytestmark = pytest.mark.integration


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
