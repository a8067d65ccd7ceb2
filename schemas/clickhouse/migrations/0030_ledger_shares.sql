-- Shared GPUs (contract v2): a GPU-second can be split between allocations, each holding an
-- integer share in milli-GPUs (1..1000; what the allocations leave is idle). A ledger row is
-- now an allocation *at a share* on one GPU for one minute: the share is part of the row's
-- identity (ORDER BY), so the union merge still holds (claimed/released masks per row), and
-- the same tenant and job at another share in the same minute is another row.
--
-- shared_milli is the stored key: 0 means a whole GPU (1000 milli-GPUs). Rows written before
-- this migration hold 0 and a whole-GPU row written after it is byte-for-byte the same row, so
-- a minute replayed across the upgrade merges instead of counting twice. Readers use the
-- ALIAS columns:
--   share_milli        the share, 1..1000
--   gpu_milli_seconds  milli-GPU-seconds held: gpu_seconds x share_milli (exact integers)
--   energy_mj          the row's part of the device's energy: held seconds' energy x share,
--                      rounded down to the millijoule (a whole GPU: exactly as before)
-- gpu_seconds keeps its meaning (seconds the row holds, whatever the share), so
-- "allocated + idle = observed" reads sum(gpu_milli_seconds) = 1000 x observed GPU-seconds.
-- Adding a column to the end of the sorting key in the same ALTER is a metadata change only.
ALTER TABLE usage_minutely
    ADD COLUMN IF NOT EXISTS shared_milli UInt16 AFTER mig_uuid,
    MODIFY ORDER BY (minute, gpu_uuid, mig_uuid, tenant, job, shared_milli);

ALTER TABLE usage_minutely
    ADD COLUMN IF NOT EXISTS share_milli UInt16 ALIAS if(shared_milli = 0, 1000, shared_milli),
    ADD COLUMN IF NOT EXISTS gpu_milli_seconds UInt32 ALIAS toUInt32(bitCount(bitAnd(claimed_mask, bitNot(released_mask)))) * if(shared_milli = 0, 1000, shared_milli),
    MODIFY COLUMN energy_mj UInt64 ALIAS intDiv(arraySum(arrayMap((s, v) -> if(bitTest(bitAnd(claimed_mask, bitNot(released_mask)), s), v, 0), energy_map.1, energy_map.2)) * if(shared_milli = 0, 1000, shared_milli), 1000);
