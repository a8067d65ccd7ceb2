-- The raw archive in contract v2: one row per frame-minute (the seconds of one frame that fell
-- in one minute and were newly counted), holding that piece of the frame exactly as the
-- contract writes it (`frame`: the v2 wire JSON of one frame, schemas/frame.py frame_wire:
-- per-second arrays, allocations with their shares and measured utilization, flags). It keeps
-- per-second truth at a fraction of usage_seconds' write cost: one row and one string instead
-- of 60 rows with an event id each, and no per-value encoding in the worker. usage_seconds
-- stays, read-only, for the history written before v2; the worker no longer writes it.
--
-- seconds_mask has bit s set when second minute + s is in the row (the frame's seconds, one
-- contiguous run). A second is archived when the worker counts it (new, or won from a losing
-- claim), so normally once; a crash between this write and the ledger's can archive it again
-- in a row with another mask, and both rows stay: count distinct seconds (usage_raw_seconds,
-- uniqExact), never rows. tenants/jobs/share_milli repeat the allocation set for queries.
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
    frame           String,                         -- the frame's seconds here, v2 wire JSON
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (gpu_uuid, mig_uuid, minute, seconds_mask);

-- One row per archived device-second, from both archives: usage_seconds (v1 history: a whole
-- GPU allocation, or idle) and usage_frames (decoded). What reconciliation and audits read:
-- count distinct (gpu_uuid, mig_uuid, ts), never rows. energy_mj is the device's energy in
-- millijoules, rounded as the worker rounds it (half to even).
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
    sm, mu, used, mem_total, power, toUInt64(roundBankers(energy * 1000)) AS energy_mj, temp
FROM
(
    SELECT
        minute, gpu_uuid, mig_uuid, gpu_model, node_id, tenants, jobs, share_milli,
        seconds_mask,
        JSONExtract(frame, 'sm_util', 'Array(Float32)') AS sm_a,
        JSONExtract(frame, 'mem_util', 'Array(Float32)') AS mu_a,
        JSONExtract(frame, 'mem_used', 'Array(UInt64)') AS used_a,
        JSONExtract(frame, 'mem_total', 'UInt64') AS mem_total,
        JSONExtract(frame, 'power_w', 'Array(Float32)') AS power_a,
        JSONExtract(frame, 'energy_j', 'Array(Float64)') AS energy_a,
        JSONExtract(frame, 'temp_c', 'Array(Nullable(Float32))') AS temp_raw
    FROM usage_frames FINAL
)
ARRAY JOIN
    arrayFilter(s -> bitTest(seconds_mask, s), range(60)) AS second,
    sm_a AS sm, mu_a AS mu, used_a AS used, power_a AS power, energy_a AS energy,
    if(empty(temp_raw), arrayMap(x -> CAST(NULL, 'Nullable(Float32)'), sm_a), temp_raw) AS temp;

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
