"""Smoke test of the worker's ceiling benchmark (bench/bench_ceiling.py) on a tiny fleet: it
runs the floor, the real processor and the columnar ceiling on the same records, and each
one's ledger totals equal the truth counted from the simulated device seconds (the bench
asserts that, and exits non-zero when they differ)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_ceiling.py"


def test_the_ceiling_benchmark_runs_and_its_totals_equal_the_truth() -> None:
    # Given 1 node x 3 GPUs (whole, shared and MIG devices) over 20 minutes, in 5-record chunks
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--nodes",
            "1",
            "--gpus",
            "3",
            "--hours",
            "0.34",
            "--runs",
            "1",
            "--chunk-records",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then every figure is printed beside the floor, and the totals checks passed
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("floor: orjson + dict", "processor: UsageProcessor", "ceiling: unavoidable"):
        assert line in done.stdout
    assert "totals = truth in every run" in done.stdout
    assert "differ" not in done.stdout + done.stderr
