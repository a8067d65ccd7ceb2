"""The worker's growth table: throughput and memory as the number of active devices grows.

For each size (1k, 10k and 100k active devices: GPUs and MIG slices) one child process
runs :class:`streams.processor.UsageProcessor` in memory (no Kafka, no ClickHouse: a sink that
encodes the ledger's columns, as the ClickHouse sink does before inserting, and keeps nothing)
over ``--minutes`` minutes of contract-v2 records, one per node per minute of 60-second frames
(each node: 5 whole GPUs, 2 GPUs shared by two jobs and idle, 1 GPU in MIG mode metered through
2 slices), and reports:

- GPU-seconds/s through the processor (building the records excluded);
- worker RSS at the end and its peak (VmRSS, VmHWM), beside the RSS before the run;
- state bytes per device: the aggregator's state (every object reachable from its GPU-minutes
  and watermarks, counted once; of the first 300 nodes' devices, scaled) per device;
- what bounds it: the GPU-minutes held per device at the end (open, in grace, and kept closed
  ``keep_closed_s`` before eviction) and the rows and readings held.

Each size runs twice, in separate processes so that memory does not carry over: ``drop``
(the processor as it is: readings leave memory once written) and ``keep`` (every reading kept,
as before: ``Aggregator.forget_written`` disabled). Every run checks its totals: the
milli-GPU-seconds per tenant of the closed minutes plus the open ones equal the input's.

    python bench/bench_growth.py                              # 1k and 10k, 15 minutes: ~5 min
    python bench/bench_growth.py --sizes 100000 --minutes 5   # ~15 min, keep arm ~7 GB

15 minutes reach the plateau with the defaults (a device holds 13 GPU-minutes: the open one,
2 in grace, 10 kept closed); 100k devices over 15 minutes take ~25 min per arm and the keep
arm ~17 GB, so 100k runs 5 minutes (5 GPU-minutes held) unless asked otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

ROOT = Path(__file__).resolve().parents[1]
IDLE = "__idle__"
DEVICES_PER_NODE = 9  # 5 whole + 2 shared + 2 MIG slices
CHUNK_RECORDS = 100  # the chunk size the growth figures were measured at (the default is now 400)
SAMPLE_NODES = 300  # nodes whose state is walked object by object (scaled to all)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,10000", help="active devices per run")
    ap.add_argument("--minutes", type=int, default=15, help="simulated minutes (default 15)")
    ap.add_argument("--arms", default="drop,keep", help="drop (as is), keep (readings kept)")
    ap.add_argument("--keep-closed-s", type=int, default=600)
    ap.add_argument("--grace-s", type=int, default=120)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child's run
    ap.add_argument("--devices", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--arm", default="drop", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("GROWTH " + json.dumps(run_one(args.devices, args.arm, args)))
        return 0

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for arm in args.arms.split(","):
            cmd = [sys.executable, __file__, "--one", "--devices", str(size), "--arm", arm]
            cmd += ["--minutes", str(args.minutes), "--keep-closed-s", str(args.keep_closed_s)]
            cmd += ["--grace-s", str(args.grace_s)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("GROWTH ")]
            if proc.returncode != 0 or not line:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"run {size} {arm} failed: rc {proc.returncode}")
            r = json.loads(line[0].removeprefix("GROWTH "))
            results.append(r)
            print(_row(r), flush=True)
    print(
        f"\n{args.minutes} simulated minutes per run, grace {args.grace_s} s, keep_closed_s "
        f"{args.keep_closed_s}; totals = input in every run"
    )
    print(_HEADER)
    for r in results:
        print(_row(r))
    return 0


_HEADER = (
    f"{'devices':>8} {'arm':>5} {'GPU-s/s':>9} {'RSS MB':>8} {'peak MB':>8} {'base MB':>8} "
    f"{'state B/dev':>11} {'RSS B/dev':>10} {'min/dev':>7} {'rows/dev':>8} {'readings':>10}"
)


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['devices']:>8,} {r['arm']:>5} {r['rate']:>9,.0f} {r['rss_mb']:>8,.0f} "
        f"{r['peak_mb']:>8,.0f} {r['base_mb']:>8,.0f} {r['state_per_device']:>11,.0f} "
        f"{r['rss_per_device']:>10,.0f} {r['minutes_per_device']:>7.1f} "
        f"{r['rows_per_device']:>8.1f} {r['readings']:>10,}"
    )


def run_one(devices: int, arm: str, args: argparse.Namespace) -> dict[str, Any]:
    from streams.processor import UsageProcessor
    from streams.records import SourceRecord

    nodes = -(-devices // DEVICES_PER_NODE)
    minutes = args.minutes
    # whole minutes ending an hour ago: the validator rejects seconds in the future
    start = (int(time.time()) // 60 - minutes - 60) * 60
    gc.collect()
    base = _rss_kb()
    sink = NullSink()
    proc = UsageProcessor(sink, grace_s=args.grace_s, keep_closed_s=args.keep_closed_s)
    if arm == "keep":
        proc.aggregator.forget_written = lambda: 0  # type: ignore[method-assign]
    truth: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    busy = build = 0.0
    seconds = offset = 0
    for m in range(minutes):
        t0 = time.perf_counter()
        records = minute_records(nodes, start + 60 * m, m, truth)
        build += time.perf_counter() - t0
        recs = [SourceRecord(v, "bench.usage", 0, offset + i) for i, v in enumerate(records)]
        offset += len(recs)
        del records
        t0 = time.perf_counter()
        for i in range(0, len(recs), CHUNK_RECORDS):
            out = proc.process(recs[i : i + CHUNK_RECORDS])
            for row in out.closed:
                counted[row.tenant] += row.gpu_milli_seconds
        busy += time.perf_counter() - t0
        seconds += nodes * DEVICES_PER_NODE * 60
        del recs
    stats = proc.stats
    assert stats.rejected_records == stats.rejected_samples == 0, stats
    assert stats.new_seconds == seconds and stats.late == 0, stats
    agg = proc.aggregator
    for group in agg._groups.values():  # minutes still open: counted, not yet closed
        for gm in group.values():
            if not gm.closed:
                for row in gm.rows.values():
                    counted[row.tenant] += row.gpu_milli_seconds
    assert counted == truth, ("totals differ from the input", counted, truth)
    gc.collect()
    rss = _rss_kb()
    n_dev = nodes * DEVICES_PER_NODE
    held = sum(len(g) for g in agg._groups.values())
    rows = [r for g in agg._groups.values() for gm in g.values() for r in gm.rows.values()]
    # the state of the first SAMPLE_NODES nodes' devices (all their minutes), scaled: every
    # node's state is alike, and walking 100k devices' objects would need gigabytes itself
    sample = min(nodes, SAMPLE_NODES)
    groups = {k: v for k, v in agg._groups.items() if int(k[0][4:10]) < sample}
    marks = {k: v for k, v in agg._watermark.items() if int(k[5:]) < sample}
    state = deep_size([groups, marks]) * nodes / sample
    return {
        "devices": n_dev,
        "arm": arm,
        "minutes": minutes,
        "rate": seconds / busy,
        "build_s": build,
        "busy_s": busy,
        "base_mb": base / 1024,
        "rss_mb": rss / 1024,
        "peak_mb": _hwm_kb() / 1024,
        "rss_per_device": (rss - base) * 1024 / n_dev,
        "state_per_device": state / n_dev,
        "minutes_per_device": held / n_dev,
        "rows_per_device": len(rows) / n_dev,
        "readings": sum(len(r.readings) for r in rows),
        "milli_seconds": sum(truth.values()),
    }


def minute_records(nodes: int, minute: int, seq: int, truth: Counter[str]) -> list[bytes]:
    """One v2 record per node for one minute: 60-second frames of 9 devices, readings varied
    per device and second, and the milli-GPU-seconds each tenant holds (``truth``)."""
    from schemas.frame import Frame, Share, encode_frames

    sm = [[float((d * 7 + s * 3) % 101) for s in range(60)] for d in range(17)]
    mem = [[float((d * 5 + s) % 97) for s in range(60)] for d in range(17)]
    used = [[1000 + d * 10 + s for s in range(60)] for d in range(17)]
    power = [[250.0 + (d + s) % 50 for s in range(60)] for d in range(17)]
    energy = [[250.5 + (d * 3 + s) % 50 for s in range(60)] for d in range(17)]
    out = []
    for n in range(nodes):
        node = f"node-{n:06d}"
        frames = []
        for g in range(8):
            k = (n * 8 + g) % 17
            gpu = f"GPU-{n:06d}-{g}"
            if g < 5:
                shares: tuple[Share, ...] = (Share(f"t{(n + g) % 50}", f"j{n}-{g}"),)
                devs: list[tuple[str | None, tuple[Share, ...]]] = [(None, shares)]
            elif g < 7:
                shares = (Share(f"t{n % 50}", "infer", 600), Share(f"t{(n + 1) % 50}", "b", 300))
                devs = [(None, shares)]
            else:  # MIG mode: metered through its slices only
                devs = [
                    (f"MIG-{n:06d}-a", (Share(f"t{(n + 2) % 50}", "mig", 1000),)),
                    (f"MIG-{n:06d}-b", ()),
                ]
            for mig, shares in devs:
                frames.append(
                    Frame(
                        gpu,
                        mig,
                        "H100",
                        minute,
                        shares,
                        sm[k],
                        mem[k],
                        used[k],
                        80_000,
                        power[k],
                        energy[k],
                    )
                )
                held = 0
                for s in shares:
                    truth[s.tenant] += s.milli * 60
                    held += s.milli
                if held < 1000:
                    truth[IDLE] += (1000 - held) * 60
        out.append(encode_frames(node, f"agent-{node}", seq, frames, []))
    return out


class NullSink:
    """The sink port, keeping nothing: it encodes the ledger's columns (what the ClickHouse
    sink builds before inserting) and reloads nothing (the data only moves forward)."""

    def __init__(self) -> None:
        self.cells = 0

    def load(self, keys: Iterable[Any]) -> list[Any]:
        return []

    def node_watermarks(self, nodes: Iterable[str]) -> dict[str, int]:
        return {}

    def load_parked(self, topic: str) -> list[Any]:
        return []

    def write_raw(self, spans: Sequence[Any]) -> None:
        pass

    def write_ledger(self, rows: Sequence[Any]) -> None:
        from streams.clickhouse.codec import ledger_columns

        self.cells += sum(len(c) for c in ledger_columns(rows))

    def write_conflicts(self, conflicts: Sequence[Any]) -> None:
        assert not conflicts, "the bench's fleet has no conflicting claims"

    def write_rejected(self, records: Sequence[Any]) -> None:
        pass

    def mark_readmitted(self, records: Sequence[Any]) -> None:
        pass

    def write_work_units(self, rows: Sequence[Sequence[Any]]) -> None:
        pass


def deep_size(roots: list[Any]) -> int:
    """Bytes of every object reachable from ``roots``, each counted once (classes, functions
    and modules excluded: they are shared code, not state)."""
    import types

    skip = (type, types.FunctionType, types.ModuleType, types.BuiltinFunctionType)
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    getsize, referents = sys.getsizeof, gc.get_referents
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += getsize(obj)
        stack.extend(referents(obj))
    return total


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _rss_kb() -> int:
    return _status_kb("VmRSS")


def _hwm_kb() -> int:
    return _status_kb("VmHWM")


if __name__ == "__main__":
    raise SystemExit(main())
