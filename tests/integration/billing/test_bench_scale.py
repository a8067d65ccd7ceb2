"""Smoke test of the billing scale benchmark (bench/bench_billing_scale.py) on a tiny month:
it generates, runs every command as a process, and its totals check passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_billing_scale.py"


def test_the_benchmark_runs_and_its_totals_agree_with_the_sql_rating(tmp_path: Path) -> None:
    # Given a 2-GPU, 1-day month for 12 tenants; when the benchmark runs every command
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--gpus",
            "2",
            "--tenants",
            "12",
            "--days",
            "1",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it prints each figure beside the floor, and the invoices equal the SQL rating
    assert done.returncode == 0, done.stdout + done.stderr
    assert "floor: bare GROUP BY of the rating query" in done.stdout
    assert "invoices export --format pdf" in done.stdout
    assert "0 tenant(s) differ" in done.stdout
