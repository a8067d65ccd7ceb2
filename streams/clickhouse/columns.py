"""The column lists the ClickHouse sink writes and reads, one definition each (tests that write
rows straight into these tables import them from here)."""

from __future__ import annotations

#: The ledger's stored (union-merged) columns; gpu_seconds, energy_mj, share_milli, ... are
#: ALIAS columns computed from them (0003_ledger_union.sql, 0030_ledger_shares.sql).
LEDGER_COLUMNS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "mig_uuid",
    "shared_milli",
    "gpu_model",
    "node_id",
    "claimed_mask",
    "released_mask",
    "claimed_active",
    "sm_util_map",
    "mem_util_map",
    "energy_map",
    "peak_mem_used",
    "version",
]
#: The ledger's sorting key: the identity of a row (0030_ledger_shares.sql).
LEDGER_KEY = "minute, gpu_uuid, mig_uuid, tenant, job, shared_milli"
#: ``LEDGER_COLUMNS`` merged over the rows of one key, each by the aggregate function its
#: ``SimpleAggregateFunction`` type declares (0003_ledger_union.sql): what ``FINAL`` reads.
LEDGER_MERGED = (
    "minute, tenant, job, max(billing_class), gpu_uuid, mig_uuid, shared_milli, "
    "max(gpu_model), max(node_id), groupBitOr(claimed_mask), groupBitOr(released_mask), "
    "groupBitOr(claimed_active), maxMap(sm_util_map), maxMap(mem_util_map), "
    "maxMap(energy_map), max(peak_mem_used), max(version)"
)
#: The raw archive of contract v2: one row per frame-minute (0031_raw_frames.sql).
RAW_FRAME_COLUMNS = [
    "minute",
    "gpu_uuid",
    "mig_uuid",
    "seconds_mask",
    "gpu_model",
    "node_id",
    "tenants",
    "jobs",
    "share_milli",
    "frame",
]
REJECTED_COLUMNS = [
    "received_at",
    "topic",
    "partition",
    "offset",
    "sample_index",
    "code",
    "reason",
    "node_id",
    "raw",
    "raw_size",
    "raw_sha256",
]
#: A conflict as v1 wrote it (tests write conflict rows with these); the sink adds the shares.
CONFLICT_COLUMNS = [
    "ts",
    "gpu_uuid",
    "kind",
    "winner_mig_uuid",
    "winner_tenant",
    "winner_job",
    "loser_mig_uuid",
    "loser_tenant",
    "loser_job",
    "loser_node_id",
    "loser_billing_class",
    "loser_sm_util",
    "loser_energy_mj",
]
CONFLICT_SHARE_COLUMNS = [*CONFLICT_COLUMNS, "winner_shared_milli", "loser_shared_milli"]
READMITTED_COLUMNS = ["topic", "partition", "offset", "sample_index"]
