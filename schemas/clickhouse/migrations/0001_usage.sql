-- Usage: raw sample archive, exact minute ledger, rejected records, and rollup views.
-- Exactness rule for every read that feeds billing: read usage_minutely with FINAL (or the
-- views below, which do). ReplacingMergeTree only collapses duplicates during background
-- merges, so a plain SELECT before a merge would see every version of a row.

-- Raw archive: one row per sample (GPU-second). Replays insert the same row again;
-- ReplacingMergeTree on the sample identity (gpu_uuid, mig_uuid, ts) keeps one.
-- ORDER BY serves drill-down "what did GPU X do between t1 and t2" and is the identity.
-- PARTITION BY day: TTL drops whole old days cheaply; audits read a few days at a time.
CREATE TABLE IF NOT EXISTS usage_seconds
(
    ts            DateTime('UTC'),
    gpu_uuid      String,
    mig_uuid      String DEFAULT '',
    gpu_model     LowCardinality(String),
    node_id       LowCardinality(String),
    tenant        LowCardinality(String),   -- '__idle__' when allocated to nobody
    job           String,                    -- '' when idle
    billing_class LowCardinality(String),    -- '' = the tenant contract's default
    sm_util       Float32,
    mem_util      Float32,
    mem_used      UInt64,
    mem_total     UInt64,
    power_w       Float32,
    energy_mj     UInt64,                    -- millijoules: integer so sums are exact
    temp_c        Nullable(Float32),
    flags         Array(LowCardinality(String)),
    event_id      UUID,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (gpu_uuid, mig_uuid, ts);

-- The billing ledger: one row per (tenant, job, gpu, minute), always the *full* state of that
-- minute as far as the worker has seen it. seconds_mask has bit s set when second s of the
-- minute is counted, so a replayed second adds nothing and a late second merges exactly.
-- version = popcount(seconds_mask): a later, fuller state replaces an earlier one; a replay
-- writes the identical row. Read with FINAL.
-- PARTITION BY month: billing periods are calendar months (UTC); finalized months go cold.
-- ORDER BY starts with minute then gpu: the worker reloads state by (gpu, minute) after a
-- restart, and period scans prune by minute.
CREATE TABLE IF NOT EXISTS usage_minutely
(
    minute          DateTime('UTC'),
    tenant          LowCardinality(String),
    job             String,
    billing_class   LowCardinality(String),
    gpu_uuid        String,
    mig_uuid        String DEFAULT '',
    gpu_model       LowCardinality(String),
    node_id         LowCardinality(String),
    seconds_mask    UInt64,
    active_mask     UInt64,                  -- seconds with SM utilization > 0
    gpu_seconds     UInt8,                   -- popcount(seconds_mask)
    active_seconds  UInt8,
    sm_util_sum     Float64,                 -- sum over counted seconds; mean = sum / gpu_seconds
    mem_util_sum    Float64,
    energy_mj       UInt64,
    peak_mem_used   UInt64,
    version         UInt64,
    updated_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, gpu_uuid, mig_uuid, tenant, job);

-- Rejected input, kept for inspection with its reason and where it came from.
-- Keyed by source position, so a redelivered bad record is stored once.
CREATE TABLE IF NOT EXISTS usage_rejected
(
    received_at  DateTime64(3, 'UTC'),
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64,
    sample_index Int32,                      -- -1: the whole record
    code         LowCardinality(String),
    reason       String,
    node_id      String,
    raw          String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset, sample_index);

-- Rollups. Kept as views over the FINAL ledger rather than materialized views: an MV sees every
-- inserted version of a minute row and would double count; these cannot.
-- Grain: (hour, tenant, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid).
CREATE VIEW IF NOT EXISTS usage_hourly AS
SELECT
    toStartOfHour(minute) AS hour,
    tenant, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid,
    sum(gpu_seconds)      AS gpu_seconds,
    sum(active_seconds)   AS active_seconds,
    sum(sm_util_sum)      AS sm_util_sum,
    sum(mem_util_sum)     AS mem_util_sum,
    sum(energy_mj)        AS energy_mj,
    max(peak_mem_used)    AS peak_mem_used
FROM usage_minutely FINAL
GROUP BY hour, tenant, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid;

-- Grain: (day, tenant, job, billing_class, gpu_model).
CREATE VIEW IF NOT EXISTS usage_daily AS
SELECT
    toDate(minute)        AS day,
    tenant, job, billing_class, gpu_model,
    sum(gpu_seconds)      AS gpu_seconds,
    sum(active_seconds)   AS active_seconds,
    sum(sm_util_sum)      AS sm_util_sum,
    sum(energy_mj)        AS energy_mj,
    uniqExact(gpu_uuid, mig_uuid) AS gpus
FROM usage_minutely FINAL
GROUP BY day, tenant, job, billing_class, gpu_model;
