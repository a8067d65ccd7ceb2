"""Smoke test of the PDF benchmark (bench/bench_pdf.py) on a few small invoices: both
renderers, one and two processes, and its check of the first PDF's content passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_pdf.py"


def test_the_pdf_benchmark_runs_both_renderers_and_checks_a_pdf() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--invoices", "3", "--jobs", "30", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("billing (now)", "platypus (before)"):
        for procs in (1, 2):
            assert f"{name:<18} {procs} process(es):" in done.stdout, done.stdout
    assert done.stdout.count("shows its 30 jobs, lines and totals") == 2
