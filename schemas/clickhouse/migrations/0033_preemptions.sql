-- Preemptions (gpu.preemptions.v1, schemas/preemption.py): an allocation lost its device
-- before it ended. One row per record; what it cost is counted from the ledger by the view
-- below, never carried by the record, so it cannot disagree with what was metered.
--
-- ORDER BY is the record's identity (tenant, job, gpu_uuid, mig_uuid, at): a redelivered or
-- corrected record replaces the stored one (ReplacingMergeTree, no version column: the last
-- one inserted wins; read with FINAL). The order also serves billing's "preempted jobs of
-- tenant T in period P". PARTITION BY month like the ledger it is joined to.
CREATE TABLE IF NOT EXISTS preemptions
(
    at            DateTime('UTC'),            -- first second the allocation no longer held the device
    tenant        LowCardinality(String),
    job           String,
    gpu_uuid      String,
    mig_uuid      String,                     -- '' = the whole GPU
    share_milli   UInt16,                     -- the allocation's share, 1..1000 milli-GPU
    checkpoint_at Nullable(DateTime('UTC')),  -- NULL: everything it ran on the device is lost
    preempted_by  String,                     -- '' = not stated
    reason        String,
    event_id      UUID,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant, job, gpu_uuid, mig_uuid, at);

-- What each preemption cost: the allocation's ledger rows on that device (same tenant, job,
-- gpu_uuid, mig_uuid and share), seconds in [checkpoint_at, at) counted exactly from each
-- minute's seconds_mask (bit s = second minute + s): the window's bits of a minute starting at
-- M are a = clamp(lo - M, 0, 60) .. b = clamp(at - M, 0, 60) - 1, i.e. (1 << b) - (1 << a).
-- Without a checkpoint, lo is 0: every second the allocation held the device before at.
--   lost_seconds        seconds held and lost (whatever the share)
--   lost_milli_seconds  lost_seconds x share_milli: milli-GPU-seconds lost (exact)
--   held_seconds        seconds the allocation held the device before at; 0 means no ledger
--                       row matches the record (wrong share, device or job; or not yet metered)
--   gpu_model, billing_class  of the allocation's rows ('' when none matches)
-- The ledger side reads only the preempted allocations' rows (the IN filter).
CREATE VIEW IF NOT EXISTS preemption_losses AS
SELECT
    p.at AS at,
    p.tenant AS tenant,
    p.job AS job,
    p.gpu_uuid AS gpu_uuid,
    p.mig_uuid AS mig_uuid,
    p.share_milli AS share_milli,
    p.checkpoint_at AS checkpoint_at,
    p.preempted_by AS preempted_by,
    p.reason AS reason,
    p.event_id AS event_id,
    anyIf(u.gpu_model, u.gpu_model != '') AS gpu_model,
    anyIf(u.billing_class, u.gpu_model != '') AS billing_class,
    toUInt64(sum(bitCount(bitAnd(u.seconds_mask, if(
        least(greatest(toInt64(toUnixTimestamp(p.at)) - toInt64(toUnixTimestamp(u.minute)), 0), 60)
            > least(greatest(toInt64(toUnixTimestamp(ifNull(p.checkpoint_at, toDateTime(0, 'UTC'))))
                - toInt64(toUnixTimestamp(u.minute)), 0), 60),
        bitShiftLeft(toUInt64(1), least(greatest(toInt64(toUnixTimestamp(p.at)) - toInt64(toUnixTimestamp(u.minute)), 0), 60))
            - bitShiftLeft(toUInt64(1), least(greatest(toInt64(toUnixTimestamp(ifNull(p.checkpoint_at, toDateTime(0, 'UTC'))))
                - toInt64(toUnixTimestamp(u.minute)), 0), 60)),
        toUInt64(0)))))) AS lost_seconds,
    lost_seconds * p.share_milli AS lost_milli_seconds,
    toUInt64(sum(bitCount(bitAnd(u.seconds_mask,
        bitShiftLeft(toUInt64(1), least(greatest(toInt64(toUnixTimestamp(p.at)) - toInt64(toUnixTimestamp(u.minute)), 0), 60))
            - toUInt64(1))))) AS held_seconds
FROM
(
    SELECT at, tenant, job, gpu_uuid, mig_uuid, share_milli, checkpoint_at, preempted_by, reason,
           event_id
    FROM preemptions FINAL
) AS p
LEFT JOIN
(
    SELECT minute, tenant, job, gpu_uuid, mig_uuid, share_milli, seconds_mask, gpu_model,
           billing_class
    FROM usage_minutely FINAL
    WHERE (tenant, job, gpu_uuid) IN (SELECT tenant, job, gpu_uuid FROM preemptions)
) AS u
ON u.tenant = p.tenant AND u.job = p.job AND u.gpu_uuid = p.gpu_uuid
   AND u.mig_uuid = p.mig_uuid AND u.share_milli = p.share_milli
GROUP BY at, tenant, job, gpu_uuid, mig_uuid, share_milli, checkpoint_at, preempted_by, reason,
         event_id;
