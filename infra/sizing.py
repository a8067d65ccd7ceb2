"""Sizing from measured numbers: partitions, workers, ClickHouse shards and disk per day for a
fleet of N GPUs. ``python -m infra.sizing 1000 10000 100000`` prints the table that
infra/OPERATIONS.md shows (a test keeps the two equal).

Every input is a measurement on the development machine (2 shared cores; README "Measured
here", bench/bench_storage.py) or a stated policy; the arithmetic is in :func:`plan`. A GPU (or
MIG slice) produces one sample, a device-second, per second (contract v2 carries them as
per-device frames), so a fleet of N GPUs is a steady N GPU-seconds per second.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

DAY_S = 86_400

# --- measured -------------------------------------------------------------------------------
#: One ``gpumeter worker`` process, steady state, contract v2 records (Faust, broker -> validate
#: -> count -> ClickHouse, committed), 800-record chunks (the default): 151,703 GPU-s/s in a 24 h
#: replay of 4 nodes x 8 GPUs (44 devices) on 2 shared cores, embedded chDB in the same process
#: (``python bench/bench_worker.py --worker --hours 24 --runs 1 --worker-runs 2``, median of 2
#: worker runs; 12 h replays in interleaved runs the same day: 169,000-176,000), 2026-11-29.
#: Rounded down.
WORKER_GPU_SECONDS_PER_S = 150_000
# Storage: contract v2, measured 2026-11-29 by `python bench/bench_storage.py` (2 nodes x 8 GPUs
# x 6 h of `--simulate --shares` records: whole GPUs, 2 shared GPUs and a MIG GPU of 4 slices
# per node = 22 devices, 475,200 device-seconds; ~40 s on 2 cores). A "sample" is one
# device-second (a whole GPU, a shared GPU or a MIG slice).
#: Usage topic, each record lz4-compressed on its own (kafka-python's lz4 codec), records of
#: 10 s (the NVML agent's default flush): 27.1 bytes per device-second (63.0 as JSON). 60 s
#: records: 15.2 (37.4 JSON). Kafka compresses whole producer batches, so this is an upper
#: bound. (v1, per-second samples: 40.4; 30.2 at 60 s.)
KAFKA_BYTES_PER_SAMPLE = 27.1
#: ClickHouse, compressed, active parts after OPTIMIZE TABLE ... FINAL (system.parts), the same
#: records through the real UsageProcessor and LedgerSink on chDB. Raw archive (usage_frames,
#: one row per frame-minute): 13.1 B per device-second from 10 s records (6.0 rows of 131 B
#: per device-minute); 11.6 from 60 s records (1.0 row of 693 B). (v1 usage_seconds: 31.1.)
RAW_BYTES_PER_SAMPLE = 13.1
#: Ledger (usage_minutely): 315.7 B per row (per-second SM, memory and energy maps: energy 60 %,
#: SM 20 %, memory 19 %; the v1 figure, 12.9, predates those maps) and 1.232 rows per
#: device-minute on this mix: whole GPUs 1.005, MIG slices 1.008, shared GPUs 2.249 (one row
#: per allocation at its share, plus idle). A fleet of whole GPUs only is ~1.005. (v1: 1.008.)
LEDGER_BYTES_PER_ROW = 315.7
LEDGER_ROWS_PER_GPU_MINUTE = 1.232

# --- policy ---------------------------------------------------------------------------------
#: Workers carry 3x the steady load: 1x live plus 2x to drain a backlog of T hours in T/2.
HEADROOM = 3
#: Never fewer than two workers: one restarts or rebalances while the other keeps counting.
MIN_WORKERS = 2
#: Partitions: a multiple of 12 (divisible by 1, 2, 3, 4, 6 workers), at least 4x the workers
#: (room to quadruple without re-partitioning, which would move nodes between partitions), and
#: enough that rebuilding a whole 31-day period from the topic, one worker per partition, takes
#: at most REBUILD_TARGET_H hours.
PARTITION_STEP = 12
REBUILD_PERIOD_DAYS = 31
REBUILD_TARGET_H = 24
#: Data one ClickHouse shard holds, compressed: a 16 TB NVMe server filled to ~60 % (merges
#: need free space of the size of the parts they rewrite).
SHARD_CAPACITY_TB = 10.0
RAW_TTL_DAYS = 400  # GPUMETER_RAW_TTL_DAYS default
KAFKA_RETENTION_DAYS = 35  # GPUMETER_KAFKA_RETENTION_DAYS default
KAFKA_REPLICATION = 3  # GPUMETER_KAFKA_REPLICATION_FACTOR default


@dataclass(frozen=True)
class Plan:
    gpus: int
    workers: int
    partitions: int
    rebuild_h: float  # one 31-day period from the topic, one worker per partition
    kafka_gb_day: float  # one replica
    kafka_tb_retained: float  # all replicas, whole retention
    raw_gb_day: float  # one replica
    raw_tb_retained: float  # one replica, RAW_TTL_DAYS
    ledger_gb_day: float  # one replica
    shards: int
    shards_raw_90d: int  # if GPUMETER_RAW_TTL_DAYS=90


def plan(gpus: int) -> Plan:
    rate = gpus  # GPU-seconds per second
    workers = max(MIN_WORKERS, math.ceil(HEADROOM * rate / WORKER_GPU_SECONDS_PER_S))
    period_gpu_s = rate * REBUILD_PERIOD_DAYS * DAY_S
    for_rebuild = period_gpu_s / (WORKER_GPU_SECONDS_PER_S * REBUILD_TARGET_H * 3600)
    partitions = _round_up(max(4 * workers, for_rebuild), PARTITION_STEP)
    raw_day = rate * DAY_S * RAW_BYTES_PER_SAMPLE
    ledger_day = gpus * 1440 * LEDGER_ROWS_PER_GPU_MINUTE * LEDGER_BYTES_PER_ROW
    kafka_day = rate * DAY_S * KAFKA_BYTES_PER_SAMPLE
    ledger_retained = ledger_day * 365 * 3  # invoices and audits: years, not days

    def shards(raw_days: int) -> int:
        stored = raw_day * raw_days + ledger_retained
        return max(1, math.ceil(stored / (SHARD_CAPACITY_TB * 1e12)))

    return Plan(
        gpus=gpus,
        workers=workers,
        partitions=partitions,
        rebuild_h=period_gpu_s / (partitions * WORKER_GPU_SECONDS_PER_S) / 3600,
        kafka_gb_day=kafka_day / 1e9,
        kafka_tb_retained=kafka_day * KAFKA_RETENTION_DAYS * KAFKA_REPLICATION / 1e12,
        raw_gb_day=raw_day / 1e9,
        raw_tb_retained=raw_day * RAW_TTL_DAYS / 1e12,
        ledger_gb_day=ledger_day / 1e9,
        shards=shards(RAW_TTL_DAYS),
        shards_raw_90d=shards(90),
    )


def _round_up(value: float, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def render_table(fleets: list[int]) -> str:
    """The Markdown table of infra/OPERATIONS.md."""
    head = (
        "| GPUs | workers | partitions | rebuild a period | Kafka / day (1 replica) | "
        "Kafka retained (35 d x 3) | raw archive / day | raw retained (400 d) | ledger / day | "
        "ClickHouse shards (x2 replicas) | shards if raw kept 90 d |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for p in map(plan, fleets):
        rows.append(
            f"| {p.gpus:,} | {p.workers} | {p.partitions} | {p.rebuild_h:.1f} h | "
            f"{p.kafka_gb_day:,.1f} GB | {p.kafka_tb_retained:,.2f} TB | {p.raw_gb_day:,.1f} GB | "
            f"{p.raw_tb_retained:,.1f} TB | {p.ledger_gb_day:,.3f} GB | {p.shards} | "
            f"{p.shards_raw_90d} |"
        )
    return "\n".join([head, *rows])


if __name__ == "__main__":
    print(render_table([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000]))
