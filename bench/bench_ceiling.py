"""How fast could a Python worker on this machine be? The floor, the real processor, and a
*ceiling*: only the work no exact meter can skip, done column-wise, on the same records in one
run.

Issue 11 asks one ``gpumeter worker`` for at least 0.5x the bare floor (``bench_worker.py``'s
aiokafka + orjson + dict). The floor is little more than one ``orjson.loads`` per record, so
the goal leaves a worker one more parse's worth of time per device-second for everything else:
validating, counting each second once, archiving it and writing the ledger. This bench measures
what that everything-else costs at best, in memory (no Kafka, no Faust: both would only add):

- floor: ``orjson.loads`` and the floor's dict aggregate (:func:`bench.worker_data.floor_handler`);
- processor: the real :class:`streams.processor.UsageProcessor` into chDB, in the worker's
  chunks (what ``gpumeter worker`` runs per chunk);
- ceiling, a throw-away pipeline that keeps only the unavoidable steps and does each the
  cheapest way found on this machine, per chunk of records:

  1. parse: ``orjson.loads`` of every record (what the floor does);
  2. columns: each per-second reading of the chunk into one numpy array;
  3. checks: ranges and the energy-matches-power rule, vectorised over the chunk (no
     per-frame structure checks, no reasons: a ceiling only has to be fast on good data);
  4. count: per frame-minute, the seconds' mask against what is counted (a dict), and the
     rows of its claim (allocations and the idle remainder): Python per frame-minute, never
     per second;
  5. ledger: the rows, their per-second readings as the ledger's maps (numpy gathers), into
     ``usage_minutely`` through one Arrow insert;
  6. archive: one row per frame-minute with per-second arrays (Arrow, no JSON formatting),
     into a table shaped like ``usage_frames`` with array columns.

  It keeps no state across restarts, emits nothing, reloads nothing and names no bad input:
  it is an upper bound, not a design. Its totals are checked all the same (milli-GPU-seconds
  per tenant in its ledger equal the truth counted from the simulated device seconds).

Figures are device-seconds per second (median of ``--runs``) beside their ratio to the floor
of the same run; each ceiling step is also given in microseconds per device-second.

    python bench/bench_ceiling.py                 # 4 nodes x 8 GPUs x 12 h, 3 runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402  (chDB's dependency: installed with the embedded extra)
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench.worker_data import IDLE, floor_handler, make_records  # noqa: E402
from bench.worker_runs import ledger_milli_by_tenant, processor_for  # noqa: E402
from schemas.common import MAX_ENERGY_J, MAX_PERCENT, MAX_POWER_W  # noqa: E402
from schemas.rule import ENERGY_POWER_FACTOR, ENERGY_SLACK_J  # noqa: E402
from streams.app import WorkerConfig  # noqa: E402
from streams.records import SourceRecord  # noqa: E402

STEPS = ("parse", "columns", "checks", "count", "ledger", "archive")
NO_MERGE = {"optimize_on_insert": 0}
ARCHIVE_TABLE = """CREATE TABLE IF NOT EXISTS ceiling_frames
(
    minute DateTime('UTC'), gpu_uuid String, mig_uuid String, seconds_mask UInt64,
    gpu_model LowCardinality(String), node_id LowCardinality(String),
    tenants Array(LowCardinality(String)), jobs Array(String), share_milli Array(UInt16),
    sm_util Array(Float64), mem_util Array(Float64), mem_used Array(UInt64), mem_total UInt64,
    power_w Array(Float64), energy_j Array(Float64), temp_c Array(Nullable(Float64))
)
ENGINE = ReplacingMergeTree PARTITION BY toYYYYMMDD(minute)
ORDER BY (gpu_uuid, mig_uuid, minute, seconds_mask)"""
FLOATS = ("sm_util", "mem_util", "power_w", "energy_j")


class Ceiling:
    """The unavoidable steps, column-wise (see the module's docstring)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        client.command(ARCHIVE_TABLE)
        self.counted: dict[tuple[str, str, int], int] = {}
        self.seconds = {step: 0.0 for step in STEPS}

    def _tick(self, step: str, t0: float) -> float:
        t = time.perf_counter()
        self.seconds[step] += t - t0
        return t

    def process(self, values: list[bytes]) -> int:
        t = time.perf_counter()
        docs = [orjson.loads(v) for v in values]
        t = self._tick("parse", t)

        frames: list[dict[str, Any]] = []
        nodes: list[str] = []
        for d in docs:
            frames.extend(d["frames"])
            nodes.extend([d["node_id"]] * len(d["frames"]))
        lens = np.fromiter((len(f["sm_util"]) for f in frames), np.int64, len(frames))
        total = int(lens.sum())
        cols = {
            name: np.fromiter(chain.from_iterable(f[name] for f in frames), np.float64, total)
            for name in FLOATS
        }
        cols["mem_used"] = np.fromiter(
            chain.from_iterable(f["mem_used"] for f in frames), np.int64, total
        )
        temps = chain.from_iterable(f.get("temp_c") or [None] * len(f["sm_util"]) for f in frames)
        cols["temp_c"] = np.array(list(temps), dtype=np.float64)  # null -> NaN
        t = self._tick("columns", t)

        for name in ("mem_util", "mem_used", "power_w", "energy_j"):
            if any(len(f[name]) != len(f["sm_util"]) for f in frames):
                raise ValueError(f"{name}: not aligned")
        for name, high in (
            ("sm_util", MAX_PERCENT),
            ("mem_util", MAX_PERCENT),
            ("power_w", MAX_POWER_W),
            ("energy_j", MAX_ENERGY_J),
        ):
            a = cols[name]
            if not (a.min() >= 0 and a.max() <= high):
                raise ValueError(f"{name}: out of range")
        p, e = cols["power_w"], cols["energy_j"]
        if not (
            (e <= p * ENERGY_POWER_FACTOR + ENERGY_SLACK_J).all()
            and (p / ENERGY_POWER_FACTOR - ENERGY_SLACK_J <= e).all()
        ):
            raise ValueError("energy does not match power")
        t = self._tick("checks", t)

        offsets = np.concatenate(([0], np.cumsum(lens)))
        counted = self.counted
        rows: list[tuple[Any, ...]] = []
        pieces: list[tuple[Any, ...]] = []
        for i, f in enumerate(frames):
            start, n, o = f["start"], int(lens[i]), int(offsets[i])
            gpu, mig = f["gpu_uuid"], f["mig_uuid"] or ""
            shares = [(a["tenant"], a["job"], a["share_milli"]) for a in f["allocations"]]
            idle = 1000 - sum(s[2] for s in shares)
            claim = shares + [(IDLE, "", idle)] if idle else shares
            for minute in range(start - start % 60, start + n, 60):
                lo, hi = max(start, minute), min(start + n, minute + 60)
                mask = ((1 << (hi - lo)) - 1) << (lo - minute)
                key = (gpu, mig, minute)
                held = counted.get(key, 0)
                if held & mask:
                    raise ValueError("a second counted twice: the ceiling expects none")
                counted[key] = held | mask
                first, last, second = o + lo - start, o + hi - start, lo - minute
                model, node = f["gpu_model"], nodes[i]
                pieces.append((minute, gpu, mig, mask, model, node, shares, f, first, last))
                for tenant, job, milli in claim:
                    rows.append(
                        (
                            minute,
                            tenant,
                            job,
                            gpu,
                            mig,
                            milli,
                            model,
                            node,
                            mask,
                            first,
                            last,
                            second,
                        )
                    )
        t = self._tick("count", t)

        self._ledger(rows, cols)
        t = self._tick("ledger", t)
        self._archive(pieces, cols)
        self._tick("archive", t)
        return total

    def _ledger(self, rows: list[tuple[Any, ...]], cols: dict[str, np.ndarray]) -> None:
        lo = np.fromiter((r[9] for r in rows), np.int64, len(rows))
        n = np.fromiter((r[10] - r[9] for r in rows), np.int64, len(rows))
        first = np.fromiter((r[11] for r in rows), np.int64, len(rows))
        take, offsets, within = _gather(lo, n)
        energy_mj = np.rint(cols["energy_j"] * 1000).astype(np.uint64)  # round half to even
        keys = pa.ListArray.from_arrays(
            offsets, pa.array((within + np.repeat(first, n)), pa.uint8())
        )

        def as_map(values: np.ndarray) -> pa.Array:
            listed = pa.ListArray.from_arrays(offsets, pa.array(values[take]))
            return pa.StructArray.from_arrays([keys, listed], names=["1", "2"])

        mask = pa.array([r[8] for r in rows], pa.uint64())
        table = pa.table(
            {
                "minute": pa.array([r[0] for r in rows], pa.uint32()),
                "tenant": pa.array([r[1] for r in rows]),
                "job": pa.array([r[2] for r in rows]),
                "billing_class": pa.array([""] * len(rows)),
                "gpu_uuid": pa.array([r[3] for r in rows]),
                "mig_uuid": pa.array([r[4] for r in rows]),
                "shared_milli": pa.array([0 if r[5] == 1000 else r[5] for r in rows], pa.uint16()),
                "gpu_model": pa.array([r[6] for r in rows]),
                "node_id": pa.array([r[7] for r in rows]),
                "claimed_mask": mask,
                "released_mask": pa.array(np.zeros(len(rows), np.uint64)),
                "claimed_active": mask,
                "sm_util_map": as_map(cols["sm_util"]),
                "mem_util_map": as_map(cols["mem_util"]),
                "energy_map": as_map(energy_mj),
                "peak_mem_used": pa.array(np.zeros(len(rows), np.uint64)),
                "version": pa.array(np.ones(len(rows), np.uint64)),
            }
        )
        self.client.insert_arrow("usage_minutely", table, settings=NO_MERGE)

    def _archive(self, pieces: list[tuple[Any, ...]], cols: dict[str, np.ndarray]) -> None:
        lo = np.fromiter((p[8] for p in pieces), np.int64, len(pieces))
        n = np.fromiter((p[9] - p[8] for p in pieces), np.int64, len(pieces))
        take, offsets, _ = _gather(lo, n)

        def listed(name: str) -> pa.Array:
            return pa.ListArray.from_arrays(offsets, pa.array(cols[name][take], from_pandas=True))

        table = pa.table(
            {
                "minute": pa.array([p[0] for p in pieces], pa.uint32()),
                "gpu_uuid": pa.array([p[1] for p in pieces]),
                "mig_uuid": pa.array([p[2] for p in pieces]),
                "seconds_mask": pa.array([p[3] for p in pieces], pa.uint64()),
                "gpu_model": pa.array([p[4] for p in pieces]),
                "node_id": pa.array([p[5] for p in pieces]),
                "tenants": pa.array([[s[0] for s in p[6]] for p in pieces], pa.list_(pa.string())),
                "jobs": pa.array([[s[1] for s in p[6]] for p in pieces], pa.list_(pa.string())),
                "share_milli": pa.array(
                    [[s[2] for s in p[6]] for p in pieces], pa.list_(pa.uint16())
                ),
                "sm_util": listed("sm_util"),
                "mem_util": listed("mem_util"),
                "mem_used": listed("mem_used"),
                "mem_total": pa.array([p[7]["mem_total"] for p in pieces], pa.uint64()),
                "power_w": listed("power_w"),
                "energy_j": listed("energy_j"),
                "temp_c": listed("temp_c"),
            }
        )
        self.client.insert_arrow("ceiling_frames", table, settings=NO_MERGE)


def _gather(lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Indices of the runs ``lo[k] .. lo[k] + n[k] - 1`` concatenated, the list offsets of the
    runs, and each index's position within its run."""
    ends = np.cumsum(n)
    starts = ends - n
    within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(starts, n)
    offsets = pa.array(np.concatenate(([0], ends)).astype(np.int32))
    return np.repeat(lo, n) + within, offsets, within


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=12.0, help="simulated hours (default 12)")
    ap.add_argument("--runs", type=int, default=3)
    chunk_default = WorkerConfig.chunk_records
    ap.add_argument("--chunk-records", type=int, default=chunk_default)
    args = ap.parse_args(argv)
    seconds = int(args.hours * 3600)
    start = (int(time.time()) // 3600 - 2) * 3600 - (seconds + 3599) // 3600 * 3600
    data = make_records(args.nodes, args.gpus, seconds, start, 60)
    n = data.seconds
    values = [v for _, v, _ in data.records]
    chunks = [values[i : i + args.chunk_records] for i in range(0, len(values), args.chunk_records)]
    truth = dict(data.milli_by_tenant)
    print(
        f"{len(values):,} records, {n:,} device-seconds, {data.bytes / 1e6:.1f} MB JSON; "
        f"chunks of {args.chunk_records} records; median of {args.runs} runs, in memory"
    )
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-ceiling-"))
    dsn = f"chdb://{tmp / 'clickhouse'}"
    records = [SourceRecord(v, "bench", 0, i) for i, v in enumerate(values)]
    floor, processor, ceiling = [], [], []
    steps: list[dict[str, float]] = []
    for run in range(args.runs):
        handle, state = floor_handler()
        t = time.perf_counter()
        handle(records)  # a SourceRecord has the .value the floor reads from a Kafka message
        floor.append(n / (time.perf_counter() - t))
        _check(state["seconds"] == n, "floor: device-seconds differ from the records'")

        proc, client = processor_for(dsn, f"ceiling_proc_{run}")
        t = time.perf_counter()
        for i in range(0, len(records), args.chunk_records):
            proc.process(records[i : i + args.chunk_records])
        processor.append(n / (time.perf_counter() - t))
        _check(ledger_milli_by_tenant(client) == truth, "processor: totals differ from truth")
        client.close()

        _, client = processor_for(dsn, f"ceiling_{run}")  # the real ledger table
        pipeline = Ceiling(client)
        t = time.perf_counter()
        counted = sum(pipeline.process(c) for c in chunks)
        ceiling.append(n / (time.perf_counter() - t))
        _check(counted == n, "ceiling: device-seconds differ from the records'")
        got = Counter(ledger_milli_by_tenant(client))
        _check(got == Counter(truth), "ceiling: totals differ from truth")
        steps.append({k: v / n * 1e6 for k, v in pipeline.seconds.items()})
        client.close()

    f = statistics.median(floor)
    print(f"\n{'':44} {'GPU-s/s':>12} {'vs floor':>9} {'us/GPU-s':>9}")
    for name, rates in (
        ("floor: orjson + dict (in memory)", floor),
        ("processor: UsageProcessor + chDB", processor),
        ("ceiling: unavoidable steps, columnar", ceiling),
    ):
        r = statistics.median(rates)
        print(f"{name:44} {r:12,.0f} {r / f:9.3f} {1e6 / r:9.2f}")
    print("\nceiling by step (us per device-second, median):")
    for step in STEPS:
        print(f"  {step:10} {statistics.median(s[step] for s in steps):6.2f}")
    without = statistics.median(sum(s[k] for k in STEPS[:4]) for s in steps)
    print(
        f"  without the two inserts: {without:.2f} us = {1e6 / without:,.0f} GPU-s/s "
        f"= {1e6 / without / f:.3f} x floor"
    )
    print("totals = truth in every run (milli-GPU-seconds per tenant)")
    return 0


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_ceiling: {what}")


if __name__ == "__main__":
    raise SystemExit(main())
