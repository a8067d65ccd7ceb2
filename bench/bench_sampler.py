"""Samples per second of the simulated fleet and of trace replay, next to a baseline.

The baseline is what building the same number of ``GpuSecond`` objects with
``model_construct`` and constant values costs: the floor any sampler pays, measured in the same
run so the numbers compare on a shared, noisy machine. Each figure is the median of 3 runs.

    python bench/bench_sampler.py               # 1 hour of 4 x 8 GPUs per run
    python bench/bench_sampler.py --seconds 600 --data ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from agents.sampler import Sampler  # noqa: E402
from agents.simulator import DAY_S, DEFAULT_START, SimulatedFleet  # noqa: E402
from agents.trace import DEFAULT_DATA_DIR, DLRM_CSV, TraceFleet  # noqa: E402
from schemas.usage import GpuSecond  # noqa: E402

RUNS = 3


def median_rate(run: Callable[[], int]) -> tuple[float, float]:
    """(median samples/s, median seconds) over RUNS runs of ``run`` (which returns its count)."""
    rates, times = [], []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        n = run()
        dt = time.perf_counter() - t0
        rates.append(n / dt)
        times.append(dt)
    return statistics.median(rates), statistics.median(times)


def baseline(n: int) -> int:
    construct = GpuSecond.model_construct
    for i in range(n):
        construct(
            gpu_uuid="GPU-00000000-0000-0000-0000-000000000000",
            mig_uuid=None,
            gpu_model="NVIDIA H100 80GB HBM3",
            ts=DEFAULT_START + i,
            tenant="acme",
            job="acme-j0001",
            billing_class=None,
            sm_util=50.0,
            mem_util=27.5,
            mem_used=1 << 30,
            mem_total=80 << 30,
            power_w=385.0,
            energy_j=385.0,
            temp_c=53.5,
            flags=(),
        )
    return n


def sweep(samplers: list[Sampler], start: int, seconds: int) -> int:
    n = 0
    for ts in range(start, start + seconds):
        for sampler in samplers:
            n += len(sampler.sample(ts))
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=int, default=3600, help="simulated seconds per run (default 3600)"
    )
    ap.add_argument("--nodes", type=int, default=4, help="nodes of 8 GPUs (default 4)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the traces' folder")
    args = ap.parse_args(argv)
    gpus = args.nodes * 8
    n = gpus * args.seconds

    build = time.perf_counter()
    fleet = SimulatedFleet(nodes=args.nodes, duration_s=DAY_S)
    build = time.perf_counter() - build
    rows: list[tuple[str, float, float]] = []
    rows.append(("baseline: model_construct, constant values", *median_rate(lambda: baseline(n))))
    # fresh samplers per run: every run starts with cold cursors, as an agent would
    rows.append(
        (
            "simulated fleet",
            *median_rate(lambda: sweep(fleet.samplers(), fleet.start, args.seconds)),
        )
    )
    trace_build = None
    if (args.data / DLRM_CSV).is_file():
        t0 = time.perf_counter()
        trace = TraceFleet(
            args.data, duration_s=args.seconds, window_offset_s=86_400, max_gpus=gpus
        )
        trace_build = time.perf_counter() - t0
        rows.append(
            (
                "trace replay",
                *median_rate(lambda: sweep(trace.samplers(), trace.start, args.seconds)),
            )
        )
    else:
        print(f"trace replay skipped: no traces at {args.data}")

    print(f"{n:,} samples per run ({gpus} GPUs x {args.seconds} s), median of {RUNS} runs")
    print(f"{'':44} {'samples/s':>12} {'s/run':>8} {'vs baseline':>12} {'1 day, 32 GPUs':>15}")
    base = rows[0][1]
    for name, rate, secs in rows:
        print(f"{name:44} {rate:12,.0f} {secs:8.2f} {rate / base:12.2f} {32 * DAY_S / rate:14.1f}s")
    print(f"schedule build: simulated day {build:.3f} s", end="")
    print(f", trace fleet {trace_build:.2f} s" if trace_build is not None else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
