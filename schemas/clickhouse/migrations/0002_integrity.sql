-- Ingest integrity: rejected records keep their exact bytes (capped) with a size and hash,
-- conflicting claims of one GPU-second are recorded, and samples parked for a future
-- timestamp are re-admitted once their time has come.

-- The raw column holds the offending bytes exactly (String is a byte string), capped at
-- 1 MiB; raw_size and raw_sha256 describe the whole original, so a capped payload can still
-- be matched with the record on the topic (topic, partition, offset).
ALTER TABLE usage_rejected ADD COLUMN IF NOT EXISTS raw_size UInt64 DEFAULT length(raw);
ALTER TABLE usage_rejected ADD COLUMN IF NOT EXISTS raw_sha256 FixedString(32) DEFAULT SHA256(raw);

-- One row per losing claim of a GPU-second (see streams/aggregate.py, "the conflict rule"):
-- the loser, the claim that held the second when the conflict was detected, and the loser's
-- readings when the worker still had them. The ledger says who holds the second now.
-- ORDER BY is the loser's identity: redelivery of the same losing claim is stored once.
-- PARTITION BY month: conflicts are reviewed, and reconciled, per billing period.
CREATE TABLE IF NOT EXISTS usage_conflicts
(
    ts               DateTime('UTC'),
    gpu_uuid         String,
    kind             LowCardinality(String),  -- mig_parent | idle | allocation
    winner_mig_uuid  String,
    winner_tenant    LowCardinality(String),
    winner_job       String,
    loser_mig_uuid   String,
    loser_tenant     LowCardinality(String),
    loser_job        String,
    loser_node_id    LowCardinality(String),
    loser_billing_class LowCardinality(String),
    loser_sm_util    Nullable(Float32),
    loser_energy_mj  Nullable(UInt64),
    detected_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (gpu_uuid, ts, loser_mig_uuid, loser_tenant, loser_job);

-- Samples rejected as future_timestamp that were later counted, by their source position.
-- The worker re-admits a parked sample once its second is within the clock-skew allowance,
-- then writes its position here; a crash in between re-admits it again, which adds nothing.
CREATE TABLE IF NOT EXISTS usage_readmitted
(
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64,
    sample_index Int32,
    readmitted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset, sample_index);
