"""How long an invoice run takes on a month of ledger, next to a plain scan of the same rows.

The ledger is generated inside ClickHouse (INSERT ... SELECT FROM numbers()): GPUs x minutes of
the month, each minute of each GPU allocated to one of the demo tenants (or idle) by hour,
with spot and reserved jobs, so every price-book feature is exercised. Baseline: a plain
``SELECT count(), sum(gpu_seconds) FROM usage_minutely FINAL`` over the same period, in the
same run (shared, noisy machine). Each figure is the median of 3 runs.

    python bench/bench_invoices.py               # 32 GPUs x 30 days = 1,382,400 rows
    python bench/bench_invoices.py --gpus 8
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from billing.period import Period  # noqa: E402
from billing.pricebook import load_pricebook  # noqa: E402
from billing.reconcile import reconcile_period  # noqa: E402
from billing.service import export_period, finalize_period, run_period  # noqa: E402
from kernel.clickhouse import connect  # noqa: E402
from schemas.clickhouse.migrate import migrate  # noqa: E402

RUNS = 3
BOOK = Path(__file__).resolve().parents[1] / "billing" / "pricebook.demo.toml"


def timed(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def generate(client: Any, gpus: int, days: int) -> int:
    # Tenant by (gpu, hour): 6 slots -> acme, globex, initech, umbrella, hooli, idle.
    # A job lasts 3 hours on a GPU; hooli's odd jobs are spot; umbrella runs on A100s.
    client.command(f"""
        INSERT INTO usage_minutely (minute, tenant, job, billing_class, gpu_uuid, gpu_model,
                                    node_id, claimed_mask, energy_map, version)
        SELECT toDateTime('2026-01-01 00:00:00', 'UTC') + toIntervalMinute(intDiv(number, {gpus})) AS minute,
               ['acme', 'globex', 'initech', 'umbrella', 'hooli', '__idle__'][
                   (intDiv(toHour(minute) + number % {gpus}, 3) % 6) + 1] AS tenant,
               if(tenant = '__idle__', '', concat(tenant, '-', toString(number % {gpus}), '-',
                  toString(intDiv(toUInt32(minute), 10800)))) AS job,
               if(tenant = 'hooli' AND intDiv(toUInt32(minute), 10800) % 2 = 1, 'spot', '') AS billing_class,
               concat('gpu-', toString(number % {gpus})) AS gpu_uuid,
               if(number % {gpus} < {gpus} / 2, 'NVIDIA H100 80GB HBM3', 'NVIDIA A100-SXM4-80GB') AS gpu_model,
               concat('node-', toString(intDiv(number % {gpus}, 8))) AS node_id,
               toUInt64(1152921504606846975) AS claimed_mask,
               ([toUInt8(0)], [toUInt64(60 * 550000)]) AS energy_map, 1  -- the minute's energy on its first second
        FROM numbers({gpus * days * 1440})
    """)
    return gpus * days * 1440


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gpus", type=int, default=32)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    client = connect(f"chdb://{tempfile.mkdtemp(prefix='bench-inv-')}", database="bench")
    migrate(client)
    t0 = time.perf_counter()
    rows = generate(client, args.gpus, args.days)
    print(f"generated {rows:,} ledger rows in {time.perf_counter() - t0:.1f} s")
    book, period = load_pricebook(BOOK), Period(2026, 1)

    base = timed(
        lambda: (
            client.query(
                "SELECT count(), sum(gpu_seconds) FROM usage_minutely FINAL WHERE minute >= "
                "'2026-01-01 00:00:00' AND minute < '2026-02-01 00:00:00'"
            ).result_rows
        )
    )
    agg = timed(
        lambda: (
            client.query(
                "SELECT tenant, job, billing_class, gpu_model, gpu_uuid, toDate(minute), "
                "sum(gpu_seconds), sum(energy_mj) FROM usage_minutely FINAL WHERE minute >= "
                "'2026-01-01 00:00:00' AND minute < '2026-02-01 00:00:00' AND tenant != '__idle__' "
                "GROUP BY ALL"
            ).result_rows
        )
    )
    run = timed(lambda: run_period(client, book, period))
    t0 = time.perf_counter()
    finalize_period(client, period)
    fin = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="bench-inv-out-"))
    exports = {
        fmt: timed(functools.partial(export_period, client, period, fmt, out), runs=1)
        for fmt in ("csv", "json", "pdf")
    }
    rec = timed(lambda: reconcile_period(client, period), runs=1)
    print(f"baseline  SELECT count/sum FINAL over the month       {base:7.3f} s")
    print(f"baseline  GROUP BY of the rating query (no Python)     {agg:7.3f} s")
    print(f"run       draft invoices, all tenants (median of {RUNS})  {run:7.3f} s")
    print(f"finalize                                               {fin:7.3f} s")
    for fmt, s in exports.items():
        print(f"export    {fmt:<4}                                         {s:7.3f} s")
    print(f"reconcile (re-rate + conservation)                     {rec:7.3f} s")


if __name__ == "__main__":
    main()
