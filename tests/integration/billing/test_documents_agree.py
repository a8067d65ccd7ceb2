"""JSON, CSV, PDF and the database agree to the cent, for every golden case.

Every invoice that the golden tests (tests/unit/billing/test_golden.py and test_integrity.py)
rate is recorded by running those tests with a recording ``rate``; each is then saved to
ClickHouse and exported in the three formats, and every line amount and total is compared.
New golden tests are picked up without editing this file.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from billing import export_csv, export_json, export_pdf
from billing.invoice import Invoice, invoice_id_for
from billing.store import BillingStore
from tests.unit.billing import test_golden, test_integrity

pytestmark = pytest.mark.integration


def _record(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Invoice]]:
    seen: list[tuple[str, Invoice]] = []
    original: Callable[..., Invoice] = module.rate
    name = ""

    def recording(*a: Any, **kw: Any) -> Invoice:
        inv = original(*a, **kw)
        seen.append((name, inv))
        return inv

    monkeypatch.setattr(module, "rate", recording)
    for fname, fn in sorted(vars(module).items()):
        if not fname.startswith("test_") or not inspect.isfunction(fn):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        cases = (
            [()] if not marks else [v if isinstance(v, tuple) else (v,) for v in marks[0].args[1]]
        )
        for i, args in enumerate(cases):
            name = f"{module.__name__.rsplit('.', 1)[-1]}::{fname}[{i}]"
            fn(*args)
    return seen


def _money(d: Decimal, minor: int) -> str:
    return f"{d:,.{minor}f}"


def test_json_csv_pdf_and_database_agree_for_every_golden_case(
    clickhouse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pypdf import PdfReader

    recorded = _record(test_golden, monkeypatch) + _record(test_integrity, monkeypatch)
    assert len(recorded) >= 30
    store = BillingStore(clickhouse)
    invoices = []
    for i, (_, inv) in enumerate(recorded):  # one tenant per case, so each keeps its own row
        tenant = f"case{i:03d}"
        invoices.append(
            dataclasses.replace(
                inv, tenant=tenant, invoice_id=invoice_id_for("GM", tenant, inv.period)
            )
        )
    store.save_all([(inv, datetime.now(UTC), None) for inv in invoices])
    with (export_csv.write_csv(invoices, tmp_path / "all.csv")).open() as f:
        csv_rows = list(csv.DictReader(f))
    for (case, _), inv in zip(recorded, invoices, strict=True):
        minor = inv.minor_unit
        want = [ln.amount for ln in inv.lines]
        assert all(a == a.quantize(Decimal(1).scaleb(-minor)) for a in want), case
        db = clickhouse.query(
            "SELECT line_no, amount FROM invoice_lines FINAL WHERE "
            "invoice_id = {i:String} AND is_deleted = 0 ORDER BY line_no",
            parameters={"i": inv.invoice_id},
        ).result_rows
        assert [Decimal(a) for _, a in db] == want, case
        (total,) = clickhouse.query(
            "SELECT total FROM invoices FINAL WHERE invoice_id = {i:String}",
            parameters={"i": inv.invoice_id},
        ).result_rows
        assert Decimal(total[0]) == inv.total, case
        doc = json.loads(export_json.write_json(inv, tmp_path).read_bytes())
        assert [Decimal(ln["amount"]) for ln in doc["lines"]] == want, case
        assert Decimal(doc["total"]) == inv.total, case
        mine = [r for r in csv_rows if r["invoice_id"] == inv.invoice_id]
        assert [r["amount"] for r in mine] == [f"{a:.{minor}f}" for a in want], case
        assert sum(Decimal(r["amount"]) for r in mine) == inv.total, case
        text = "\n".join(
            p.extract_text() for p in PdfReader(export_pdf.write_pdf(inv, tmp_path)).pages
        )
        for ln in inv.lines:
            if ln.kind != "tax":
                assert _money(ln.amount, minor) in text, (case, ln)
            if ln.unit:  # the price on the page is the price used, all its digits
                assert f"{ln.unit_price:,.6f}".rstrip("0").rstrip(".") in text, (case, ln)
        for amount in (inv.subtotal, inv.tax, inv.total):
            assert _money(amount, minor) in text, case
