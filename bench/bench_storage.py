"""Storage per device-second on contract v2: the usage topic, the raw archive and the ledger.

The inputs of ``infra/sizing.py`` (and infra/OPERATIONS.md "Measured inputs"). Builds a
simulated fleet's v2 records (default 2 nodes x 8 GPUs x 6 h; each node has whole GPUs,
shared GPUs and a MIG GPU metered through its 4 slices, as ``gpumeter agent --simulate
--shares`` sends them) twice: one record per node per 10 s (the NVML agent's default flush)
and per 60 s (the simulated default). For each it measures:

- Kafka: each record's JSON and its lz4 compression on its own (``kafka.codec.lz4_encode``,
  what kafka-python's lz4 producer uses), in bytes per device-second. The broker stores
  compressed producer batches of several records, so per record is an upper bound;
- ClickHouse: the records through :class:`streams.processor.UsageProcessor` and
  :class:`streams.clickhouse.sink.LedgerSink` into an embedded chDB, in chunks of
  ``WorkerConfig.chunk_records`` (the worker's path without Kafka and Faust), then
  ``OPTIMIZE TABLE ... FINAL`` and ``system.parts`` (active parts): compressed bytes of the raw
  archive (``usage_frames``) per device-second and per row, of the ledger (``usage_minutely``)
  per row, and ledger rows per device-minute, for whole GPUs, shared GPUs and MIG slices apart.

Every run checks its totals: the ledger's milli-GPU-seconds per tenant (idle included) equal
those counted from the simulated device seconds, and the processor counted every device-second
once and rejected nothing; otherwise it exits non-zero.

    python bench/bench_storage.py                  # 2 x 8 GPUs x 6 h, ~1-2 min on 2 cores
    python bench/bench_storage.py --hours 1        # quicker
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.worker_data import BenchData, make_records  # noqa: E402
from bench.worker_runs import ledger_milli_by_tenant, processor_for  # noqa: E402
from streams.app import WorkerConfig  # noqa: E402

CHUNK_RECORDS = WorkerConfig.chunk_records
FLUSHES = (10, 60)  # the NVML agent's default flush; the simulated agent's

#: Ledger rows and device-minutes per kind of device: MIG slice (mig_uuid set), shared GPU (a
#: row at a share below a whole GPU in the run), whole GPU (everything else).
LEDGER_BY_KIND = """
SELECT kind, sum(rows) AS rows, sum(minutes) AS minutes FROM
(
    SELECT gpu_uuid, mig_uuid,
           multiIf(mig_uuid != '', 'MIG slices', max(shared_milli) > 0, 'shared GPUs',
                   'whole GPUs') AS kind,
           count() AS rows, uniqExact(minute) AS minutes
    FROM usage_minutely FINAL GROUP BY gpu_uuid, mig_uuid
)
GROUP BY kind ORDER BY kind
"""


def kafka_sizes(data: BenchData) -> dict[str, float]:
    from kafka.codec import lz4_encode

    n = data.seconds
    lz4 = sum(len(lz4_encode(v)) for _, v, _ in data.records)
    return {
        "json": data.bytes / n,
        "lz4": lz4 / n,
        "record_kb": data.bytes / len(data.records) / 1000,
    }


def store(data: BenchData, dsn: str, database: str) -> dict[str, Any]:
    """Run the records through the processor into chDB; check totals; sizes after merges."""
    from streams.records import SourceRecord

    proc, client = processor_for(dsn, database)
    try:
        recs = [SourceRecord(v, "bench.usage", 0, i) for i, (_, v, _) in enumerate(data.records)]
        for i in range(0, len(recs), CHUNK_RECORDS):
            proc.process(recs[i : i + CHUNK_RECORDS])
        st = proc.stats
        if st.new_seconds != data.seconds or st.rejected_records or st.rejected_samples:
            raise SystemExit(f"{database}: processor counted {st}, expected {data.seconds} s")
        got = ledger_milli_by_tenant(client)
        if got != dict(data.milli_by_tenant):
            raise SystemExit(
                f"{database}: ledger milli-GPU-seconds per tenant {got} "
                f"!= simulated truth {dict(data.milli_by_tenant)}"
            )
        for table in ("usage_frames", "usage_minutely"):
            # Wide parts, as a production server writes parts over 10 MB (ours are smaller):
            # the same compression, and per-column sizes in system.parts_columns.
            client.command(f"ALTER TABLE {table} MODIFY SETTING min_bytes_for_wide_part = 0")
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        parts = client.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), "
            "count() FROM system.parts WHERE active AND database = {db:String} "
            "AND table IN ('usage_frames', 'usage_minutely') GROUP BY table",
            parameters={"db": database},
        ).result_rows
        sizes = {t: (int(r), int(c), int(u), int(p)) for t, r, c, u, p in parts}
        kinds = {k: (int(r), int(m)) for k, r, m in client.query(LEDGER_BY_KIND).result_rows}
        columns = client.query(
            "SELECT table, column, sum(column_data_compressed_bytes) AS b "
            "FROM system.parts_columns WHERE active AND database = {db:String} "
            "AND table IN ('usage_frames', 'usage_minutely') GROUP BY table, column "
            "ORDER BY table, b DESC",
            parameters={"db": database},
        ).result_rows
    finally:
        client.close()
    top: dict[str, list[tuple[str, int]]] = {}
    for table, column, b in columns:
        top.setdefault(table, []).append((column, int(b)))
    return {"parts": sizes, "kinds": kinds, "columns": top}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    ap.add_argument("--hours", type=float, default=6.0, help="simulated hours (default 6)")
    args = ap.parse_args(argv)

    seconds = int(args.hours * 3600)
    # Recent seconds: the validator rejects seconds more than 5 minutes in the future.
    start = (int(time.time()) // 3600 - 2) * 3600 - (seconds + 3599) // 3600 * 3600
    tmp = Path(tempfile.mkdtemp(prefix="gpumeter-bench-storage-"))
    rows: list[tuple[str, str, str]] = []
    try:
        for flush in FLUSHES:
            t0 = time.perf_counter()
            data = make_records(args.nodes, args.gpus, seconds, start, flush)
            n = data.seconds
            print(
                f"flush {flush} s: {len(data.records):,} records, {n:,} device-seconds "
                f"({args.nodes} nodes x {args.gpus} GPUs, {data.devices} devices incl. MIG "
                f"slices, {seconds:,} s), built in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            k = kafka_sizes(data)
            rows.append(
                (
                    f"Kafka, {flush} s records: B per device-second",
                    f"{k['lz4']:.1f} lz4 / {k['json']:.1f} JSON",
                    f"each record compressed alone; {k['record_kb']:.1f} KB JSON per record",
                )
            )
            t0 = time.perf_counter()
            res = store(data, f"chdb://{tmp / 'clickhouse'}", f"bench_storage_{flush}")
            print(f"  stored, merged and checked in {time.perf_counter() - t0:.1f} s", flush=True)
            r_rows, r_comp, r_unc, r_parts = res["parts"]["usage_frames"]
            l_rows, l_comp, l_unc, l_parts = res["parts"]["usage_minutely"]
            minutes = sum(m for _, m in res["kinds"].values())
            rows.append(
                (
                    f"raw archive (usage_frames), {flush} s records",
                    f"{r_comp / n:.1f} B per device-second",
                    f"{r_comp / r_rows:.0f} B per row; {r_rows / minutes:.2f} rows per "
                    f"device-minute; {r_unc / r_comp:.1f}x compression; {r_parts} parts",
                )
            )
            rows.append(
                (
                    f"ledger (usage_minutely), {flush} s records",
                    f"{l_comp / l_rows:.1f} B per row",
                    f"{l_rows / minutes:.3f} rows per device-minute; "
                    f"{l_comp / n:.2f} B per device-second; {l_parts} parts",
                )
            )
            for table in ("usage_frames", "usage_minutely"):
                total = sum(b for _, b in res["columns"][table]) or 1
                big = ", ".join(f"{c} {b / total:.0%}" for c, b in res["columns"][table][:4])
                rows.append((f"  {table}: largest columns", "", big))
            for kind, (kr, km) in res["kinds"].items():
                rows.append(
                    (
                        f"  ledger rows per device-minute, {kind}",
                        f"{kr / km:.3f}",
                        f"{kr:,} rows / {km:,} device-minutes",
                    )
                )
            rows.append(("  totals", "= truth", "ledger milli-GPU-s per tenant = simulation"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"\n{'':<{w}}  {'figure':>{v}}  how")
    for name, value, how in rows:
        print(f"{name:<{w}}  {value:>{v}}  {how}")
    print(
        "\nAfter OPTIMIZE TABLE ... FINAL; bytes = sum(data_compressed_bytes) of active parts "
        "in system.parts. A device is a whole GPU or a MIG slice; a shared GPU is one device."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
