-- Views in shares (contract v2, migration 0030): a GPU-second may be split between allocations
-- at integer shares in milli-GPUs, the remainder stored as tenant '__idle__' at that share, so
-- a GPU-second is 1000 milli-GPU-seconds in all (allocated + idle = observed). Each view keeps
-- its grain and its columns, now counted in shares, and gains exact integer milli-GPU-second
-- columns (*_milli_seconds); for whole GPUs (share 1000, every row before 0030) every value
-- is what it was.
--   *_seconds columns    share-weighted GPU-seconds = *_milli_seconds / 1000 (Float64: a share's
--                        seconds may be fractional; read the milli column for exact figures)
--   shared_*             GPU-seconds in which the device was split into shares (some row at a
--                        share below 1000): every row of such a second has a share below 1000,
--                        so shared capacity = sumIf(gpu_milli_seconds, shared_milli != 0)
--   active               allocated seconds with SM activity, weighted by the allocation's share
--   allocated_sm_util_sum  SM utilization summed over allocated seconds, weighted by share
-- Views are replaced by DROP VIEW + CREATE VIEW: the cluster-mode transform
-- (schemas/clickhouse/migrate.py) translates both; the views hold no data.
-- The rating in billing reads usage_minutely itself (billing/ledger_usage.py), not these views.

-- invoice_lines: the exact milli-GPU-seconds behind a line (billing/invoice_rows.py); lines
-- written before this migration were whole GPUs, so the default is gpu_seconds x 1000.
ALTER TABLE invoice_lines
    ADD COLUMN IF NOT EXISTS gpu_milli_seconds Int64 DEFAULT gpu_seconds * 1000;

DROP VIEW IF EXISTS usage_hourly;

CREATE VIEW usage_hourly AS
SELECT
    toStartOfHour(minute) AS hour,
    tenant, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid,
    sum(gpu_seconds)       AS gpu_seconds,
    sum(gpu_milli_seconds) AS gpu_milli_seconds,
    sum(active_seconds)    AS active_seconds,
    sum(sm_util_sum)       AS sm_util_sum,
    sum(mem_util_sum)      AS mem_util_sum,
    sum(energy_mj)         AS energy_mj,
    max(peak_mem_used)     AS peak_mem_used
FROM usage_minutely FINAL
GROUP BY hour, tenant, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid;

DROP VIEW IF EXISTS usage_daily;

CREATE VIEW usage_daily AS
SELECT
    toDate(minute)         AS day,
    tenant, job, billing_class, gpu_model,
    sum(gpu_seconds)       AS gpu_seconds,
    sum(gpu_milli_seconds) AS gpu_milli_seconds,
    sum(active_seconds)    AS active_seconds,
    sum(sm_util_sum)       AS sm_util_sum,
    sum(energy_mj)         AS energy_mj,
    uniqExact(gpu_uuid, mig_uuid) AS gpus
FROM usage_minutely FINAL
GROUP BY day, tenant, job, billing_class, gpu_model;

DROP VIEW IF EXISTS gpu_utilization_hourly;

CREATE VIEW gpu_utilization_hourly AS
SELECT
    toStartOfHour(u.minute)                                                   AS hour,
    u.gpu_model AS gpu_model, u.node_id AS node_id, u.gpu_uuid AS gpu_uuid, u.mig_uuid AS mig_uuid,
    sum(u.gpu_milli_seconds)                                                  AS available_milli_seconds,
    sumIf(u.gpu_milli_seconds, u.tenant != '__idle__')                        AS allocated_milli_seconds,
    sumIf(toUInt64(u.active_seconds) * u.share_milli, u.tenant != '__idle__') AS active_milli_seconds,
    sumIf(u.gpu_milli_seconds, u.tenant = '__idle__')                         AS idle_milli_seconds,
    sumIf(u.gpu_milli_seconds, u.shared_milli != 0)                           AS shared_milli_seconds,
    sumIf(u.gpu_milli_seconds, u.shared_milli != 0 AND u.tenant != '__idle__') AS shared_allocated_milli_seconds,
    sum(u.gpu_milli_seconds) / 1000                                           AS available_seconds,
    sumIf(u.gpu_milli_seconds, u.tenant != '__idle__') / 1000                 AS allocated_seconds,
    sumIf(toUInt64(u.active_seconds) * u.share_milli, u.tenant != '__idle__') / 1000 AS active_seconds,
    sumIf(u.gpu_milli_seconds, u.tenant = '__idle__') / 1000                  AS idle_seconds,
    sumIf(u.sm_util_sum * u.share_milli, u.tenant != '__idle__') / 1000       AS allocated_sm_util_sum,
    sum(u.energy_mj)                                                          AS energy_mj
FROM usage_minutely AS u FINAL
GROUP BY hour, gpu_model, node_id, gpu_uuid, mig_uuid;

DROP VIEW IF EXISTS utilization_daily;

CREATE VIEW utilization_daily AS
SELECT
    toDate(h.hour)                                                   AS day,
    h.gpu_model AS gpu_model, h.node_id AS node_id,
    uniqExact(h.gpu_uuid, h.mig_uuid)                                AS gpus,
    sum(h.available_milli_seconds)                                   AS available_milli_seconds,
    sum(h.allocated_milli_seconds)                                   AS allocated_milli_seconds,
    sum(h.active_milli_seconds)                                      AS active_milli_seconds,
    sum(h.idle_milli_seconds)                                        AS idle_milli_seconds,
    sum(h.shared_milli_seconds)                                      AS shared_milli_seconds,
    sum(h.shared_allocated_milli_seconds)                            AS shared_allocated_milli_seconds,
    sum(h.available_milli_seconds) / 1000                            AS available_seconds,
    sum(h.allocated_milli_seconds) / 1000                            AS allocated_seconds,
    sum(h.active_milli_seconds) / 1000                               AS active_seconds,
    sum(h.idle_milli_seconds) / 1000                                 AS idle_seconds,
    round(sum(h.available_milli_seconds) / 3600000, 3)               AS available_gpu_hours,
    round(sum(h.allocated_milli_seconds) / 3600000, 3)               AS allocated_gpu_hours,
    round(sum(h.active_milli_seconds) / 3600000, 3)                  AS active_gpu_hours,
    round(sum(h.idle_milli_seconds) / 3600000, 3)                    AS idle_gpu_hours,
    round(sum(h.shared_milli_seconds) / 3600000, 3)                  AS shared_gpu_hours,
    round(100 * sum(h.allocated_milli_seconds) / nullIf(sum(h.available_milli_seconds), 0), 2) AS utilization_pct,
    round(100 * sum(h.active_milli_seconds) / nullIf(sum(h.available_milli_seconds), 0), 2)    AS active_pct,
    round(1000 * sum(h.allocated_sm_util_sum) / nullIf(sum(h.allocated_milli_seconds), 0), 2) AS efficiency_pct,
    round(100 * sum(h.shared_allocated_milli_seconds) / nullIf(sum(h.shared_milli_seconds), 0), 2) AS shared_packed_pct,
    sum(h.energy_mj)                                                 AS energy_mj,
    round(sum(h.energy_mj) / 3600000000, 6)                          AS energy_kwh
FROM gpu_utilization_hourly AS h
GROUP BY day, gpu_model, node_id;

DROP VIEW IF EXISTS idle_capacity_daily;

CREATE VIEW idle_capacity_daily AS
SELECT
    u.day                                                  AS day,
    u.gpu_model                                            AS gpu_model,
    sum(u.idle_milli_seconds)                              AS idle_milli_seconds,
    sum(u.idle_milli_seconds) / 1000                       AS idle_seconds,
    round(sum(u.idle_milli_seconds) / 3600000, 3)          AS idle_gpu_hours,
    any(r.spot_per_gpu_hour)                               AS spot_per_gpu_hour,
    any(r.currency)                                        AS currency,
    if(any(r.gpu_model) = '', NULL,
       toDecimal128(sum(u.idle_milli_seconds), 6) * any(r.spot_per_gpu_hour) / 3600000) AS idle_value
FROM utilization_daily AS u
LEFT JOIN (SELECT * FROM asset_rates FINAL) AS r ON r.gpu_model = u.gpu_model
GROUP BY day, gpu_model;

DROP VIEW IF EXISTS tenant_usage_minutely;

CREATE VIEW tenant_usage_minutely AS
SELECT minute, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid, share_milli,
       gpu_seconds, gpu_milli_seconds, active_seconds, sm_util_sum, mem_util_sum, energy_mj,
       peak_mem_used
FROM usage_minutely FINAL
WHERE tenant = {tenant:String};

DROP VIEW IF EXISTS tenant_usage_hourly;

CREATE VIEW tenant_usage_hourly AS
SELECT toStartOfHour(m.minute) AS hour, job, billing_class, gpu_model,
       sum(m.gpu_seconds)                              AS gpu_seconds,
       sum(m.gpu_milli_seconds)                        AS gpu_milli_seconds,
       round(sum(m.gpu_milli_seconds) / 3600000, 6)    AS gpu_hours,
       sum(m.active_seconds)                           AS active_seconds,
       round(sum(m.sm_util_sum) / nullIf(sum(m.gpu_seconds), 0), 2) AS mean_sm_util_pct,
       sum(m.energy_mj)                                AS energy_mj
FROM usage_minutely AS m FINAL
WHERE tenant = {tenant:String}
GROUP BY hour, job, billing_class, gpu_model;

DROP VIEW IF EXISTS tenant_usage_daily;

CREATE VIEW tenant_usage_daily AS
SELECT toDate(m.minute) AS day, job, billing_class, gpu_model,
       sum(m.gpu_seconds)                              AS gpu_seconds,
       sum(m.gpu_milli_seconds)                        AS gpu_milli_seconds,
       round(sum(m.gpu_milli_seconds) / 3600000, 6)    AS gpu_hours,
       sum(m.active_seconds)                           AS active_seconds,
       round(sum(m.sm_util_sum) / nullIf(sum(m.gpu_seconds), 0), 2) AS mean_sm_util_pct,
       sum(m.energy_mj)                                AS energy_mj,
       uniqExact(m.gpu_uuid, m.mig_uuid)               AS gpus
FROM usage_minutely AS m FINAL
WHERE tenant = {tenant:String}
GROUP BY day, job, billing_class, gpu_model;

DROP VIEW IF EXISTS tenant_invoice_lines;

CREATE VIEW tenant_invoice_lines AS
SELECT invoice_id, period, line_no, kind, gpu_model, billing_class, description, quantity, unit,
       unit_price, amount, reference, ref_period, ref_kind, gpu_seconds, gpu_milli_seconds
FROM invoice_lines FINAL
WHERE tenant = {tenant:String} AND is_deleted = 0;
