-- The ledger merges by union, so that any number of writers converge (streams/README.md,
-- "Many writers"). 0001 kept one full row per (allocation, GPU, minute) in a
-- ReplacingMergeTree(version): two workers briefly holding the same GPU-minute during a
-- rebalance each wrote a partial row and FINAL kept only one of them.
--
-- Now every column merges by a rule that is idempotent, commutative and associative, so every
-- order and repetition of writes gives the same row:
--   claimed_mask  OR   seconds this allocation claimed (counted at some point)
--   released_mask OR   claimed seconds a better claim took away (claims only accumulate, so
--                       a second released once stays released: see "the conflict rule")
--   *_map         per-second readings, merged by key (maxMap); a second's readings never
--                 change, so the max of equal values is that value
--   others        max (deterministic; the same for every writer of an honest producer)
-- The columns readers use (seconds_mask, gpu_seconds, energy_mj, ...) are ALIAS columns
-- computed from the merged state, so `SELECT ... FROM usage_minutely FINAL` keeps meaning
-- exactly what it meant. Read with FINAL, as before.
-- ORDER BY and PARTITION BY are unchanged (restart reload by (minute, gpu); period scans).
--
-- The rows of the 0001 table are copied over first (its sums become readings of the row's
-- first second: totals stay exact, the per-second split of pre-0003 rows is not known), then
-- the table is replaced. Every statement below may be re-run: copies merge by union.
CREATE TABLE IF NOT EXISTS usage_minutely_0003
(
    minute          DateTime('UTC'),
    tenant          LowCardinality(String),
    job             String,
    gpu_uuid        String,
    mig_uuid        String DEFAULT '',
    billing_class   SimpleAggregateFunction(max, LowCardinality(String)),
    gpu_model       SimpleAggregateFunction(max, LowCardinality(String)),
    node_id         SimpleAggregateFunction(max, LowCardinality(String)),
    claimed_mask    SimpleAggregateFunction(groupBitOr, UInt64),
    released_mask   SimpleAggregateFunction(groupBitOr, UInt64),
    claimed_active  SimpleAggregateFunction(groupBitOr, UInt64),
    sm_util_map     SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(Float64))),
    mem_util_map    SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(Float64))),
    energy_map      SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(UInt64))),
    peak_mem_used   SimpleAggregateFunction(max, UInt64),
    version         SimpleAggregateFunction(max, UInt64),
    updated_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')) DEFAULT now64(3),
    seconds_mask    UInt64 ALIAS bitAnd(claimed_mask, bitNot(released_mask)),
    active_mask     UInt64 ALIAS bitAnd(claimed_active, bitAnd(claimed_mask, bitNot(released_mask))),
    gpu_seconds     UInt8 ALIAS bitCount(bitAnd(claimed_mask, bitNot(released_mask))),
    active_seconds  UInt8 ALIAS bitCount(bitAnd(claimed_active, bitAnd(claimed_mask, bitNot(released_mask)))),
    sm_util_sum     Float64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0.), sm_util_map.1, sm_util_map.2)),
    mem_util_sum    Float64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0.), mem_util_map.1, mem_util_map.2)),
    energy_mj       UInt64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0), energy_map.1, energy_map.2))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, gpu_uuid, mig_uuid, tenant, job);

INSERT INTO usage_minutely_0003
    (minute, tenant, job, gpu_uuid, mig_uuid, billing_class, gpu_model, node_id, claimed_mask,
     released_mask, claimed_active, sm_util_map, mem_util_map, energy_map, peak_mem_used, version)
SELECT
    minute, tenant, job, gpu_uuid, mig_uuid, billing_class, gpu_model, node_id, seconds_mask, 0,
    active_mask,
    ([toUInt8(log2(bitAnd(seconds_mask, bitNot(seconds_mask) + 1)))], [sm_util_sum]),
    ([toUInt8(log2(bitAnd(seconds_mask, bitNot(seconds_mask) + 1)))], [mem_util_sum]),
    ([toUInt8(log2(bitAnd(seconds_mask, bitNot(seconds_mask) + 1)))], [energy_mj]),
    peak_mem_used, version
FROM usage_minutely FINAL
WHERE seconds_mask != 0;

DROP TABLE usage_minutely;

CREATE TABLE IF NOT EXISTS usage_minutely
(
    minute          DateTime('UTC'),
    tenant          LowCardinality(String),
    job             String,
    gpu_uuid        String,
    mig_uuid        String DEFAULT '',
    billing_class   SimpleAggregateFunction(max, LowCardinality(String)),
    gpu_model       SimpleAggregateFunction(max, LowCardinality(String)),
    node_id         SimpleAggregateFunction(max, LowCardinality(String)),
    claimed_mask    SimpleAggregateFunction(groupBitOr, UInt64),
    released_mask   SimpleAggregateFunction(groupBitOr, UInt64),
    claimed_active  SimpleAggregateFunction(groupBitOr, UInt64),
    sm_util_map     SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(Float64))),
    mem_util_map    SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(Float64))),
    energy_map      SimpleAggregateFunction(maxMap, Tuple(Array(UInt8), Array(UInt64))),
    peak_mem_used   SimpleAggregateFunction(max, UInt64),
    version         SimpleAggregateFunction(max, UInt64),
    updated_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')) DEFAULT now64(3),
    seconds_mask    UInt64 ALIAS bitAnd(claimed_mask, bitNot(released_mask)),
    active_mask     UInt64 ALIAS bitAnd(claimed_active, bitAnd(claimed_mask, bitNot(released_mask))),
    gpu_seconds     UInt8 ALIAS bitCount(bitAnd(claimed_mask, bitNot(released_mask))),
    active_seconds  UInt8 ALIAS bitCount(bitAnd(claimed_active, bitAnd(claimed_mask, bitNot(released_mask)))),
    sm_util_sum     Float64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0.), sm_util_map.1, sm_util_map.2)),
    mem_util_sum    Float64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0.), mem_util_map.1, mem_util_map.2)),
    energy_mj       UInt64 ALIAS arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0), energy_map.1, energy_map.2))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, gpu_uuid, mig_uuid, tenant, job);

INSERT INTO usage_minutely
    (minute, tenant, job, gpu_uuid, mig_uuid, billing_class, gpu_model, node_id, claimed_mask,
     released_mask, claimed_active, sm_util_map, mem_util_map, energy_map, peak_mem_used, version,
     updated_at)
SELECT minute, tenant, job, gpu_uuid, mig_uuid, billing_class, gpu_model, node_id, claimed_mask,
       released_mask, claimed_active, sm_util_map, mem_util_map, energy_map, peak_mem_used,
       version, updated_at
FROM usage_minutely_0003;

DROP TABLE usage_minutely_0003;
