"""Billing at operator scale: a generated month for 1,000 tenants, every billing command run as
a whole process (``gpumeter invoices run|finalize|export|reconcile``), each beside the floor.

The month (2026-01, 31 days; :mod:`bench.billing_month`) is generated inside ClickHouse by one
``INSERT ... SELECT FROM numbers()`` into the ledger (``usage_minutely``), with a price book of
a contract per tenant beside it (list rates with a price change on 2026-01-16, negotiated
rates, per-minute plans with a minimum, graduated tiers, discounts, tax, energy pass-through,
commitments with overage, minimum spend, credits). The ledger is left as inserted (its parts
are not merged beforehand): every command reads it with ``FINAL``, as billing does.

The floor is the bare GROUP BY of the rating query (``billing.store.RATING_QUERY``) run as a
process through ``gpumeter sql`` (start-up included), wrapped in ``count()/sum()`` so that only
the aggregation, not the printing of its rows, is measured. The totals check rates the ledger
again in SQL, independently of billing/ (:mod:`bench.billing_sql_rating`), and compares every
tenant's invoice total with it to the minor unit.

This module runs it: generation and the check in their own processes, the commands as
processes, and the report.

    python bench/bench_billing_scale.py                 # 37 GPUs: 1.65M rows, 99M GPU-seconds
    python bench/bench_billing_scale.py --gpus 2240     # 100M rows, 6.0B GPU-seconds (~15 min)
    python bench/bench_billing_scale.py --gpus 4 --tenants 20 --days 2   # smoke size

Peak memory of each process is its maximum resident set (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from bench.billing_month import (  # noqa: E402
    PER_SECOND_ENERGY,
    PERIOD,
    ledger_insert,
    ledger_layout,
    pricebook,
)
from bench.billing_sql_rating import LEDGER_JOBS, sql_rating  # noqa: E402


@dataclass
class Figure:
    name: str
    seconds: float
    peak_mb: float
    note: str = ""


def gpumeter(data_dir: Path, name: str, *args: str, out: Path | None = None) -> Figure:
    """One CLI command as a whole process: wall time (start-up included) and its peak RSS
    (wait4's maximum resident set: the process and the children it waited for)."""
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir)}
    env.pop("GPUMETER_CLICKHOUSE_DSN", None)
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpumeter.cli", *args], env=env, cwd=ROOT, stdout=so, stderr=se
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise SystemExit(
            f"gpumeter {' '.join(args)} exited {proc.returncode}:\n{stderr.decode()[-3000:]}"
        )
    if out is not None:
        out.write_bytes(stdout)
    return Figure(name, seconds, usage.ru_maxrss / 1024)


def floor_query() -> str:
    """The rating query's GROUP BY, its parameters bound, wrapped so that only the aggregation
    runs (no rows printed). The outer query uses every aggregate: an unused one would be pruned
    from the subquery, and energy (the readings merged under FINAL) is the costliest of them."""
    from billing.store import RATING_QUERY

    q = RATING_QUERY.format(where="")
    for k, v in {
        "{start:DateTime('UTC')}": "toDateTime('2026-01-01 00:00:00', 'UTC')",
        "{end:DateTime('UTC')}": "toDateTime('2026-02-01 00:00:00', 'UTC')",
        "{idle:String}": "'__idle__'",
    }.items():
        q = q.replace(k, v)
    q = q[: q.rindex("ORDER BY")]
    return (
        "SELECT count(), sum(`sum(gpu_seconds)`), sum(`sum(energy_mj)`), min(`min(minute)`), "
        f"max(`max(minute)`) FROM ({q})"
    )


def generate(data_dir: Path, gpus: int, days: int, tenants: int, per_second: bool) -> None:
    """Runs in its own process (the embedded engine admits one process per data directory)."""
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate

    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrate(client)
    layout = dict(ledger_layout(client))
    if per_second:
        layout["energy_map"] = PER_SECOND_ENERGY
    t0 = time.perf_counter()
    # Generated keys are unique, so merging rows of a block on insert would find nothing.
    client.command(ledger_insert(layout, gpus, days, tenants) + " SETTINGS optimize_on_insert = 0")
    rows, seconds, parts = client.query(
        "SELECT sum(rows), sum(rows) * 60, count() FROM system.parts "
        "WHERE table = 'usage_minutely' AND active AND database = currentDatabase()"
    ).result_rows[0]
    print(
        f"generated {rows:,} ledger rows ({seconds:,} GPU-seconds, {parts} parts) in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    (data_dir / "pricebook.toml").write_text(pricebook(tenants))


def check_totals(data_dir: Path, tenants: int) -> None:
    """Runs in its own process: invoices vs the SQL rating, tenant by tenant, to the cent."""
    from kernel.clickhouse import connect

    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    t0 = time.perf_counter()
    client.command("DROP TABLE IF EXISTS bench_ledger_jobs")
    client.command(LEDGER_JOBS)
    want = {t: Decimal(c) / 100 for t, c in client.query(sql_rating(tenants)).result_rows}
    client.command("DROP TABLE bench_ledger_jobs")
    got = {
        t: Decimal(v)
        for t, v in client.query(
            "SELECT tenant, total FROM invoices FINAL WHERE period = {p:String}",
            parameters={"p": PERIOD},
        ).result_rows
    }
    bad = [t for t in sorted(set(want) | set(got)) if want.get(t) != got.get(t)]
    print(
        f"totals: {len(got)} invoices sum to {sum(got.values())} USD; the SQL rating of the "
        f"ledger gives {sum(want.values())} USD over {len(want)} tenants "
        f"({time.perf_counter() - t0:.1f} s); {len(bad)} tenant(s) differ",
        flush=True,
    )
    for t in bad[:10]:
        print(f"  DIFFERENCE {t}: invoice {got.get(t)}, SQL rating {want.get(t)}")
    if bad:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gpus", type=int, default=37, help="GPUs in the fleet (default 37)")
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--days", type=int, default=31, help="days of 2026-01 with usage")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to generate (default: a temporary directory, removed after)",
    )
    ap.add_argument(
        "--per-second-energy",
        action="store_true",
        help="60 energy readings per ledger row as the worker writes them (the "
        "energy_mj ALIAS then sums 60 readings per row: generation and every read "
        "of energy are several times slower)",
    )
    ap.add_argument("--skip-pdf", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep a month already generated in --data-dir (and not yet invoiced)",
    )
    ap.add_argument("--_generate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._generate:
        return generate(args.data_dir, args.gpus, args.days, args.tenants, args.per_second_energy)
    if args._check:
        return check_totals(args.data_dir, args.tenants)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-billing-"))
    own = [
        sys.executable,
        __file__,
        "--data-dir",
        str(data_dir),
        "--gpus",
        str(args.gpus),
        "--days",
        str(args.days),
        "--tenants",
        str(args.tenants),
    ]
    try:
        if not (args.reuse and (data_dir / "pricebook.toml").exists()):
            subprocess.run(
                [*own, "--_generate"] + (["--per-second-energy"] if args.per_second_energy else []),
                check=True,
            )
        book = str(data_dir / "pricebook.toml")
        floor = gpumeter(data_dir, "floor", "sql", "--format", "csv", floor_query())
        floor.name = "floor: bare GROUP BY of the rating query (gpumeter sql)"
        figures = [
            gpumeter(
                data_dir, "invoices run", "invoices", "run", "--period", PERIOD, "--pricebook", book
            ),
            gpumeter(
                data_dir,
                "invoices finalize",
                "invoices",
                "finalize",
                "--period",
                PERIOD,
                "--force",
                "--reason",
                "benchmark",
            ),
            gpumeter(
                data_dir,
                "invoices reconcile",
                "invoices",
                "reconcile",
                "--period",
                PERIOD,
                out=data_dir / "reconcile.txt",
            ),
            gpumeter(
                data_dir,
                "invoices export --format json",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "json",
                "--out",
                str(data_dir / "out" / "json"),
            ),
            gpumeter(
                data_dir,
                "invoices export --format csv",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "csv",
                "--out",
                str(data_dir / "out" / "csv"),
            ),
        ]
        if not args.skip_pdf:
            pdf = gpumeter(
                data_dir,
                "invoices export --format pdf",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "pdf",
                "--out",
                str(data_dir / "out" / "pdf"),
            )
            n = len(list((data_dir / "out" / "pdf").glob("*.pdf")))
            pdf.note = f"{pdf.seconds / n * 10:.2f} s per 10 invoices ({n} PDFs)"
            figures.append(pdf)
        floor2 = gpumeter(data_dir, "floor", "sql", "--format", "csv", floor_query())
        floor.seconds = min(floor.seconds, floor2.seconds)  # the floor at its best
        print(f"\n{'command (whole process)':<58} {'seconds':>8} {'x floor':>8} {'peak MB':>8}")
        print(f"{floor.name:<58} {floor.seconds:8.2f} {1:8.2f} {floor.peak_mb:8.0f}")
        for f in figures:
            print(
                f"gpumeter {f.name:<49} {f.seconds:8.2f} {f.seconds / floor.seconds:8.2f} "
                f"{f.peak_mb:8.0f}  {f.note}"
            )
        print(
            "(peak MB: maximum resident set of the command's process; PDF workers are "
            "separate processes, each holding one invoice at a time)"
        )
        # reconcile exits non-zero on a difference (the run stops above); its verdict and the
        # conservation line show what it proved
        for line in (data_dir / "reconcile.txt").read_text().splitlines():
            if line.startswith(("reconcile ", "conservation ", "OK", "FAILED")):
                print(line)
        print(flush=True)
        subprocess.run([*own, "--_check"], check=True)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
