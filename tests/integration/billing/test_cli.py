"""``gpumeter invoices`` end to end, in subprocesses (the embedded engine locks its directory
per process, so the CLI gets a data directory of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def gpumeter(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir)}
    env.pop("GPUMETER_CLICKHOUSE_DSN", None)
    return subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", "invoices", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_lists_every_problem_with_its_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (ROOT / "billing" / "pricebook.demo.toml")
        .read_text()
        .replace('currency = "USD"', 'currency = "USX"')
        .replace('price_per_gpu_hour = "1.80"', 'price_per_gpu_hour = "-1.80"')
    )
    r = gpumeter(tmp_path, "check", "--pricebook", str(bad))
    assert r.returncode == 1
    assert "2 problem(s)" in r.stderr and "currency: 'USX'" in r.stderr
    assert (
        "rates[1] (gpu_model='NVIDIA A100-SXM4-80GB', on_demand, from 2025-01-01): "
        "price_per_gpu_hour = -1.80 must not be negative" in r.stderr
    )


def test_run_finalize_refuse_rerun_reconcile(tmp_path: Path) -> None:
    # No usage: only umbrella's commitment and initech's minimum spend are invoiced
    r = gpumeter(tmp_path, "run", "--period", "2026-03")
    assert r.returncode == 0 and "umbrella" in r.stdout and "initech" in r.stdout, r.stderr
    r = gpumeter(tmp_path, "finalize", "--period", "2026-03")
    assert r.returncode == 0 and "-000002  umbrella" in r.stdout, r.stderr
    r = gpumeter(tmp_path, "run", "--period", "2026-03")
    assert r.returncode == 1 and "finalized and immutable" in r.stderr
    r = gpumeter(tmp_path, "reconcile", "--period", "2026-03")
    assert r.returncode == 0 and "OK: invoices match the ledger" in r.stdout
    r = gpumeter(
        tmp_path, "export", "--period", "2026-03", "--format", "csv", "--out", str(tmp_path / "out")
    )
    assert r.returncode == 0 and (tmp_path / "out" / "invoices-2026-03.csv").exists()
    assert (
        gpumeter(tmp_path, "run", "--period", "2026-13")
        .stderr.strip()
        .endswith("is not a month written YYYY-MM (e.g. 2026-01)")
    )


def test_finalize_of_the_open_month_needs_force_and_a_reason(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    open_month = datetime.now(UTC).strftime("%Y-%m")
    assert gpumeter(tmp_path, "run", "--period", open_month).returncode == 0
    r = gpumeter(tmp_path, "finalize", "--period", open_month)
    assert r.returncode == 1 and "has not ended" in r.stderr and "--force" in r.stderr
    r = gpumeter(tmp_path, "finalize", "--period", open_month, "--force")
    assert r.returncode == 2 and "--force needs --reason" in r.stderr
    r = gpumeter(
        tmp_path,
        "finalize",
        "--period",
        open_month,
        "--force",
        "--reason",
        "auditor asked for an early close",
    )
    assert r.returncode == 0 and "-000001" in r.stdout, r.stderr
