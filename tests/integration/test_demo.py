"""The README's main job, end to end, on a smaller fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def gpumeter(*args: str, data_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_runs_exact_and_leaves_queryable_data_invoices_and_report(tmp_path: Path) -> None:
    # when the demo runs on a small fleet (3 GPUs per node: a whole GPU, a GPU shared by
    # tenants in milli-GPU shares and a GPU in MIG mode) with nothing else running
    r = gpumeter(
        "demo",
        "--nodes",
        "2",
        "--gpus",
        "3",
        "--duration",
        "3h",
        "--start",
        "2026-11-20",
        data_dir=tmp_path,
    )

    # then it reports exact agreement with the simulator's ground truth and exits 0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "exact: yes" in r.stdout
    # and it produced finalized invoices in every format, and the report
    invoices = tmp_path / "demo" / "invoices"
    assert (
        list(invoices.rglob("*.pdf"))
        and list(invoices.rglob("*.csv"))
        and list(invoices.rglob("*.json"))
    )
    assert list((tmp_path / "demo" / "report").glob("*.html"))
    # and `gpumeter sql` reads the demo's data afterwards
    q = gpumeter(
        "sql",
        "SELECT sum(gpu_milli_seconds) AS s, uniqExact(gpu_uuid, mig_uuid) AS d "
        "FROM usage_minutely FINAL",
        "--format",
        "json",
        data_dir=tmp_path,
    )
    assert q.returncode == 0, q.stderr
    # 2 nodes x (a whole GPU, a shared GPU, the MIG GPU's 4 slices) = 12 devices, and every
    # device-second is 1000 milli-GPU-seconds held (allocations + idle), 3 hours long
    row = json.loads(q.stdout)[0]
    assert int(row["d"]) == 12
    assert int(row["s"]) == 1000 * 12 * 3 * 3600


def test_demo_refuses_to_replace_data_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "clickhouse").mkdir()
    (tmp_path / "clickhouse" / "precious").write_text("x")
    r = gpumeter("demo", "--duration", "1h", data_dir=tmp_path, timeout=60)
    assert r.returncode != 0
    assert "refusing to replace" in (r.stdout + r.stderr)
    assert (tmp_path / "clickhouse" / "precious").exists()


@pytest.mark.trace
def test_demo_replays_the_real_trace_exactly(tmp_path: Path, shared_data: Path) -> None:
    r = gpumeter(
        "demo",
        "--trace",
        "--max-gpus",
        "16",
        "--duration",
        "30m",
        "--start",
        "2026-11-20",
        "--no-report",
        data_dir=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "exact: yes" in r.stdout and "trace replay" in r.stdout
