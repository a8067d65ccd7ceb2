"""``gpumeter invoices run|finalize|reconcile`` with an internal tenant in the price book: the
handlers in process, on the test's ledger (the client is the session's embedded engine)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from billing import cli
from tests.integration.billing.test_internal_tenants import ledger

pytestmark = pytest.mark.integration

BOOK = """
currency = "USD"
[issuer]
name = "GPU Meter Cloud"
[[rates]]
gpu_model = "NVIDIA H100 80GB HBM3"
billing_class = "on_demand"
price_per_gpu_hour = "3.60"
effective_from = 2026-01-01
[[rates]]
gpu_model = "NVIDIA A100-SXM4-80GB"
billing_class = "on_demand"
price_per_gpu_hour = "1.80"
effective_from = 2026-01-01
[plans.flat]
[tenants.t]
name = "Tenant T"
plan = "flat"
[tenants.lab]
name = "Research lab"
plan = "flat"
kind = "internal"
"""


def test_run_shows_internal_usage_back_and_finalize_and_reconcile_know_it(
    clickhouse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # given the ledger of test_internal_tenants (lab: 0.3 GPU-h of H100, 0.5 of A100)
    ledger(clickhouse)
    book = tmp_path / "book.toml"
    book.write_text(BOOK, encoding="utf-8")
    monkeypatch.setattr(cli, "_client", lambda args, settings: clickhouse)

    def call(handler: Any, **kw: Any) -> tuple[int, str, str]:
        args = argparse.Namespace(period="2026-01", pricebook=book, database=None, **kw)
        rc = handler(args, None)
        out = capsys.readouterr()
        return rc, out.out, out.err

    # when run
    rc, out, _ = call(cli._run)
    # then t is drafted (1.6 GPU-h, 5.76) and lab is stated per model, not invoiced
    assert rc == 0
    assert "draft  t" in out and "1.600 GPU-h" in out and "5.76 USD" in out
    assert "showback lab" in out and "0.500 GPU-h  NVIDIA A100-SXM4-80GB" in out
    assert "0.300 GPU-h  NVIDIA H100 80GB HBM3" in out
    assert "1 draft invoice(s) for 2026-01; 1 internal tenant(s) shown back, not invoiced" in out
    rc, out, err = call(cli._finalize, force=False, reason=None)
    assert rc == 0 and "GM-2026-000001  t" in out and "lab" not in out, err
    rc, out, _ = call(cli._reconcile)
    assert rc == 0
    assert "internal (showback, not invoiced): lab" in out
    assert "OK: invoices match the ledger" in out
