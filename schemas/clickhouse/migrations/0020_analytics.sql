-- Analytics: utilization and idle capacity views over the ledger, the rates that price idle
-- capacity, work units reported by jobs, and the tenant-scoped views behind `gpumeter sql --tenant`.
-- Every view reads usage_minutely with FINAL (directly or through another view), so numbers are
-- exact before background merges, like billing's.

-- Utilization per GPU (or MIG slice) per hour. Grain: (hour, gpu_model, node_id, gpu_uuid,
-- mig_uuid). available = every GPU-second the ledger holds for that GPU, idle included (the
-- worker records idle seconds as tenant '__idle__'); allocated = the non-idle ones; active =
-- allocated seconds with SM utilization > 0. The report and the heatmap read this view.
CREATE VIEW IF NOT EXISTS gpu_utilization_hourly AS
SELECT
    toStartOfHour(minute)                              AS hour,
    gpu_model, node_id, gpu_uuid, mig_uuid,
    sum(gpu_seconds)                                   AS available_seconds,
    sumIf(gpu_seconds, tenant != '__idle__')           AS allocated_seconds,
    sumIf(active_seconds, tenant != '__idle__')        AS active_seconds,
    sumIf(gpu_seconds, tenant = '__idle__')            AS idle_seconds,
    sumIf(sm_util_sum, tenant != '__idle__')           AS allocated_sm_util_sum,
    sum(energy_mj)                                     AS energy_mj
FROM usage_minutely FINAL
GROUP BY hour, gpu_model, node_id, gpu_uuid, mig_uuid;

-- Utilization per day per node and GPU model. Grain: (day, gpu_model, node_id). Percentages are
-- of GPU-seconds (so a GPU seen half the day weighs half); efficiency is the mean SM utilization
-- over allocated seconds. Energy is measured at the GPU; facility energy (x PUE) and money need
-- the asset register and are computed by `gpumeter report`.
CREATE VIEW IF NOT EXISTS utilization_daily AS
SELECT
    toDate(h.hour)                                           AS day,
    gpu_model, node_id,
    uniqExact(h.gpu_uuid, h.mig_uuid)                          AS gpus,
    sum(h.available_seconds)                                 AS available_seconds,
    sum(h.allocated_seconds)                                 AS allocated_seconds,
    sum(h.active_seconds)                                    AS active_seconds,
    sum(h.idle_seconds)                                      AS idle_seconds,
    round(sum(h.available_seconds) / 3600, 3)                AS available_gpu_hours,
    round(sum(h.allocated_seconds) / 3600, 3)                AS allocated_gpu_hours,
    round(sum(h.active_seconds) / 3600, 3)                   AS active_gpu_hours,
    round(sum(h.idle_seconds) / 3600, 3)                     AS idle_gpu_hours,
    round(100 * sum(h.allocated_seconds) / nullIf(sum(h.available_seconds), 0), 2) AS utilization_pct,
    round(100 * sum(h.active_seconds) / nullIf(sum(h.available_seconds), 0), 2)    AS active_pct,
    round(sum(h.allocated_sm_util_sum) / nullIf(sum(h.allocated_seconds), 0), 2)   AS efficiency_pct,
    sum(h.energy_mj)                                         AS energy_mj,
    round(sum(h.energy_mj) / 3600000000, 6)                  AS energy_kwh
FROM gpu_utilization_hourly AS h
GROUP BY day, gpu_model, node_id;

-- Rates that price GPU-hours per model, copied from the asset register (billing/assets.toml) by
-- `gpumeter report` so SQL and Grafana can value idle capacity. ReplacingMergeTree on gpu_model
-- with updated_at as version: the latest sync wins; read with FINAL.
CREATE TABLE IF NOT EXISTS asset_rates
(
    gpu_model              LowCardinality(String),
    currency               LowCardinality(String),
    on_demand_per_gpu_hour Decimal(18, 6),
    spot_per_gpu_hour      Decimal(18, 6),
    updated_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY gpu_model;

-- Idle capacity and what it could have earned at the spot rate. Grain: (day, gpu_model).
-- idle_value is NULL for a model with no rate in asset_rates (unknown, not zero).
CREATE VIEW IF NOT EXISTS idle_capacity_daily AS
SELECT
    u.day                                                  AS day,
    u.gpu_model                                            AS gpu_model,
    sum(u.idle_seconds)                                    AS idle_seconds,
    round(sum(u.idle_seconds) / 3600, 3)                   AS idle_gpu_hours,
    any(r.spot_per_gpu_hour)                               AS spot_per_gpu_hour,
    any(r.currency)                                        AS currency,
    if(any(r.gpu_model) = '', NULL,
       toDecimal128(sum(u.idle_seconds), 6) * any(r.spot_per_gpu_hour) / 3600) AS idle_value
FROM utilization_daily AS u
LEFT JOIN (SELECT * FROM asset_rates FINAL) AS r ON r.gpu_model = u.gpu_model
GROUP BY day, gpu_model;

-- Work done by jobs (schemas/work.py, topic gpu.work.v1), e.g. tokens served. One row per report
-- window per job replica. ORDER BY is the event identity (tenant, job, source, unit,
-- window_start), so a redelivered report replaces itself instead of counting twice; it also
-- serves "work of tenant T / job J" scans. PARTITION BY month like the ledger it is joined to.
CREATE TABLE IF NOT EXISTS work_units
(
    window_start DateTime('UTC'),
    window_end   DateTime('UTC'),
    tenant       LowCardinality(String),
    job          String,
    source       String,                    -- the reporting replica/process within the job
    unit         LowCardinality(String),    -- tokens | requests | samples | images
    quantity     UInt64,
    event_id     UUID,
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, job, unit, source, window_start);

-- Tenant-scoped views: parameterized, so the tenant is bound server-side as {tenant:String}
-- (`SELECT ... FROM tenant_usage_daily(tenant = {tenant:String})`). `gpumeter sql --tenant T`
-- allows nothing but SELECTs over tenant_* views; the tenant column itself is left out so a
-- tenant's result never names anybody.
CREATE VIEW IF NOT EXISTS tenant_usage_minutely AS
SELECT minute, job, billing_class, gpu_model, node_id, gpu_uuid, mig_uuid,
       gpu_seconds, active_seconds, sm_util_sum, mem_util_sum, energy_mj, peak_mem_used
FROM usage_minutely FINAL
WHERE tenant = {tenant:String};

CREATE VIEW IF NOT EXISTS tenant_usage_hourly AS
SELECT toStartOfHour(m.minute) AS hour, job, billing_class, gpu_model,
       sum(m.gpu_seconds)                              AS gpu_seconds,
       round(sum(m.gpu_seconds) / 3600, 6)             AS gpu_hours,
       sum(m.active_seconds)                           AS active_seconds,
       round(sum(m.sm_util_sum) / nullIf(sum(m.gpu_seconds), 0), 2) AS mean_sm_util_pct,
       sum(m.energy_mj)                                AS energy_mj
FROM usage_minutely AS m FINAL
WHERE tenant = {tenant:String}
GROUP BY hour, job, billing_class, gpu_model;

CREATE VIEW IF NOT EXISTS tenant_usage_daily AS
SELECT toDate(m.minute) AS day, job, billing_class, gpu_model,
       sum(m.gpu_seconds)                              AS gpu_seconds,
       round(sum(m.gpu_seconds) / 3600, 6)             AS gpu_hours,
       sum(m.active_seconds)                           AS active_seconds,
       round(sum(m.sm_util_sum) / nullIf(sum(m.gpu_seconds), 0), 2) AS mean_sm_util_pct,
       sum(m.energy_mj)                                AS energy_mj,
       uniqExact(m.gpu_uuid, m.mig_uuid)                 AS gpus
FROM usage_minutely AS m FINAL
WHERE tenant = {tenant:String}
GROUP BY day, job, billing_class, gpu_model;

CREATE VIEW IF NOT EXISTS tenant_work_units AS
SELECT window_start, window_end, job, source, unit, quantity
FROM work_units FINAL
WHERE tenant = {tenant:String};
