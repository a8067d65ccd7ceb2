-- The raw archive in contract v2: one row per frame-minute (the seconds of one frame that fell
-- in one minute and were newly counted), readings as per-second arrays, the allocation set
-- once. It keeps per-second truth at a fraction of usage_seconds' write cost (one row and a
-- few arrays instead of 60 rows with an event id each). usage_seconds stays, read-only, for
-- the history written before v2; the worker no longer writes it.
--
-- seconds_mask has bit s set when second minute + s is in the row; every per-second array
-- holds exactly those seconds, in order (length = bitCount(seconds_mask)). A second is
-- archived when the worker counts it (new, or won from a losing claim), so normally once; a
-- crash between this write and the ledger's can archive it again in a row with another mask,
-- and both rows stay: count distinct seconds (usage_raw_seconds, uniqExact or groupBitOr of
-- the masks per device-minute), never rows.
-- ORDER BY (gpu_uuid, mig_uuid, minute, seconds_mask): drill-down "what did GPU X do between
-- t1 and t2" reads one GPU's range; the mask completes the identity, so a replay of the same
-- flush (same frame-minute, same seconds) is stored once by ReplacingMergeTree.
-- PARTITION BY day, as usage_seconds: TTL drops whole old days; audits read a few days.
CREATE TABLE IF NOT EXISTS usage_frames
(
    minute          DateTime('UTC'),
    gpu_uuid        String,
    mig_uuid        String DEFAULT '',
    seconds_mask    UInt64,
    gpu_model       LowCardinality(String),
    node_id         LowCardinality(String),
    tenants         Array(LowCardinality(String)),  -- the allocation set; [] = an idle device
    jobs            Array(String),
    share_milli     Array(UInt16),                  -- 1..1000 each; 1000 - sum is idle
    billing_classes Array(LowCardinality(String)),  -- '' = the tenant contract's default
    share_sm_util   Array(Array(Float32)),          -- measured per allocation, [] if not
    sm_util         Array(Float32),
    mem_util        Array(Float32),
    mem_used        Array(UInt64),
    mem_total       UInt64,
    power_w         Array(Float32),
    energy_mj       Array(UInt64),                  -- the device's, millijoules: exact sums
    temp_c          Array(Nullable(Float32)),
    flag_seconds    Array(UInt8),                   -- sparse flags: second of the minute
    flags           Array(Array(LowCardinality(String))),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (gpu_uuid, mig_uuid, minute, seconds_mask);

-- One row per archived device-second, from both archives: usage_seconds (v1 history: a whole
-- GPU allocation, or idle) and usage_frames. What reconciliation and audits read: count
-- distinct (gpu_uuid, mig_uuid, ts), never rows.
CREATE VIEW IF NOT EXISTS usage_raw_seconds AS
SELECT
    ts, gpu_uuid, mig_uuid, gpu_model, node_id,
    if(tenant = '__idle__', [], [toString(tenant)]) AS tenants,
    if(tenant = '__idle__', [], [job]) AS jobs,
    if(tenant = '__idle__', [], [toUInt16(1000)]) AS share_milli,
    sm_util, mem_util, mem_used, mem_total, power_w, energy_mj, temp_c
FROM usage_seconds FINAL
UNION ALL
SELECT
    minute + toUInt32(second) AS ts, gpu_uuid, mig_uuid, gpu_model, node_id,
    arrayMap(t -> toString(t), tenants) AS tenants, jobs, share_milli,
    sm, mu, used, mem_total, power, energy, temp
FROM usage_frames FINAL
ARRAY JOIN
    arrayFilter(s -> bitTest(seconds_mask, s), range(60)) AS second,
    sm_util AS sm, mem_util AS mu, mem_used AS used, power_w AS power, energy_mj AS energy,
    temp_c AS temp;

-- Conflicts between shared claims: the shares of the winning claim's first row and of the
-- losing row, stored as the ledger stores them (0 = a whole GPU, 1000 milli-GPUs; rows
-- written before this migration read 0). The losing row's share joins the identity: two
-- claims losing one second can both hold (IDLE, '') at different shares, and each losing
-- row is one conflict. Adding a column to the end of the sorting key in the same ALTER is a
-- metadata change only.
ALTER TABLE usage_conflicts
    ADD COLUMN IF NOT EXISTS winner_shared_milli UInt16,
    ADD COLUMN IF NOT EXISTS loser_shared_milli UInt16,
    MODIFY ORDER BY (gpu_uuid, ts, loser_mig_uuid, loser_tenant, loser_job, loser_shared_milli);
