"""PDF export at operator scale: seconds per 10 invoices, with 1 and 2 rendering processes,
beside the previous renderer (reportlab platypus, kept in bench/pdf_baseline.py) in the same run.

The invoices are those of the billing scale benchmark's month (bench/billing_month.py): the
same price book and contracts (plans, discounts, minimums, energy, credits, commitments, tax),
and per tenant the jobs a tenant of the 2,240-GPU month holds, about 444 (one per (GPU, 3-hour
slot) allocated to it, 20 % spot, GPU models by GPU). Each invoice is rated by
``billing.rating.rate_invoice`` from one aggregate usage row per job and finalized with a
number; ``write_pdfs`` gets the stored documents (canonical JSON text), as ``invoices export
--format pdf`` does. No ClickHouse is involved: the figure is the rendering alone.

    python bench/bench_pdf.py                     # 100 invoices of 444 jobs, 1 and 2 processes
    python bench/bench_pdf.py --jobs 7            # the 37-GPU month's size (about 7 jobs)
    python bench/bench_pdf.py --no-baseline --processes 2
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.billing_month import MODELS, pricebook  # noqa: E402
from billing.export_pdf import write_pdfs  # noqa: E402
from billing.invoice import Invoice  # noqa: E402
from billing.period import Period  # noqa: E402
from billing.pricebook import load_pricebook  # noqa: E402
from billing.pricing import TenantPricing  # noqa: E402
from billing.rating import UsageRow, rate_invoice  # noqa: E402

#: Jobs per tenant in the 2,240-GPU month: 2,240 GPUs x 248 slots x 80 % allocated / 1,000.
BIG_MONTH_JOBS = 444
GPUS = 2240
SLOTS = 31 * 8
MONTH = datetime(2026, 1, 1, tzinfo=UTC)
NOW, BASELINE = "billing (now)", "platypus (before)"
_PAGE = re.compile(rb"/Type\s*/Page\b")


def usage(tenant: str, jobs: int, seed: int) -> list[UsageRow]:
    """One aggregate row per job: a whole 3-hour slot on one GPU (as the generated month)."""
    rnd = random.Random(seed)
    rows = []
    for k in sorted(rnd.sample(range(GPUS * SLOTS), jobs)):
        g, slot = divmod(k, SLOTS)
        start = MONTH + timedelta(hours=3 * slot)
        rows.append(
            UsageRow(
                tenant=tenant,
                job=f"job-{g}-{slot}",
                billing_class="spot" if rnd.random() < 0.2 else "",
                gpu_model=MODELS[g % 3],
                gpu_uuid=f"GPU-{g:05d}",
                start=start,
                gpu_seconds=10_800,
                energy_mj=10_800 * (300_000 + (g % 7) * 25_000),
                last=start + timedelta(minutes=179),
            )
        )
    return rows


def invoices(count: int, jobs: int) -> list[Invoice]:
    path = Path(tempfile.mkdtemp(prefix="bench-pdf-book-")) / "pricebook.toml"
    path.write_text(pricebook(count))
    book = load_pricebook(path)
    period = Period(2026, 1)
    out = []
    for i in range(count):
        tenant = f"t{i:04d}"
        pricing = TenantPricing.from_pricebook(book, tenant, period)
        inv = rate_invoice(pricing, tenant, period, usage(tenant, jobs, seed=i))
        out.append(inv.finalized(f"BN-2026-{i + 1:06d}", date(2026, 2, 1)))
    return out


def _export(render: Callable[..., list[Path]], docs: list[str], out: Path, procs: int) -> None:
    paths = render(docs, out, processes=procs)
    if len(paths) != len(docs):
        raise SystemExit(f"{len(paths)} PDFs for {len(docs)} invoices")


def check(inv: Invoice, out: Path) -> None:
    """The first invoice's PDF holds every job, every line's amount and the totals."""
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(out / f"{inv.number}.pdf").pages)
    missing = [j.job for j in inv.jobs if j.job not in text] + [
        str(a)
        for a in (*(ln.amount for ln in inv.lines), inv.subtotal, inv.tax, inv.total)
        if f"{a:,.{inv.minor_unit}f}" not in text
    ]
    if missing:
        raise SystemExit(f"{inv.number}.pdf lacks {missing[:5]} ({len(missing)} in all)")
    print(f"  checked: {inv.number}.pdf shows its {len(inv.jobs)} jobs, lines and totals")


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (the rendering itself with
    one process; with a pool, the workers' CPU is not in it)."""
    walls, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--invoices", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=BIG_MONTH_JOBS, help="jobs per invoice")
    ap.add_argument("--processes", default="1,2", help="comma-separated pool sizes")
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs")
    ap.add_argument("--no-baseline", action="store_true", help="skip the platypus renderer")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    invs = invoices(args.invoices, args.jobs)
    docs = [inv.canonical_json().decode() for inv in invs]
    lines = statistics.mean(len(inv.lines) for inv in invs)
    print(
        f"{len(invs)} invoices, {args.jobs} jobs and {lines:.1f} lines each on average, "
        f"{sum(map(len, docs)) / len(docs) / 1024:.0f} KiB of JSON each "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )
    renderers: list[tuple[str, Callable[..., list[Path]]]] = [(NOW, write_pdfs)]
    if not args.no_baseline:
        from bench.pdf_baseline import write_pdfs as baseline

        renderers.append((BASELINE, baseline))
    per10: dict[tuple[str, int], float] = {}
    out_dirs: dict[str, Path] = {}
    for procs in (int(p) for p in args.processes.split(",")):
        for name, render in renderers:
            out = out_dirs[name] = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
            wall, cpu = timed(functools.partial(_export, render, docs, out, procs), args.runs)
            per10[name, procs] = wall / len(docs) * 10
            pages = sum(len(_PAGE.findall(p.read_bytes())) for p in out.glob("*.pdf"))
            size = sum(p.stat().st_size for p in out.glob("*.pdf")) / len(docs) / 1024
            cpu_note = f", {cpu / len(docs) * 1000:.0f} ms CPU per invoice" if procs == 1 else ""
            print(
                f"{name:<18} {procs} process(es): {per10[name, procs]:6.3f} s per 10 invoices "
                f"({wall:.2f} s for {len(docs)}{cpu_note}; {pages / len(docs):.1f} pages, "
                f"{size:.0f} KiB per PDF)",
                flush=True,
            )
        check(invs[0], out_dirs[NOW])
        if (BASELINE, procs) in per10:
            print(f"  speed-up with {procs}: {per10[BASELINE, procs] / per10[NOW, procs]:.1f}x")


if __name__ == "__main__":
    main()
