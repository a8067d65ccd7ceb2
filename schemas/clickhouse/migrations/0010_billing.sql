-- Billing: invoices and their lines (owned by billing/; read by analytics).
-- Immutability and draft re-runs: rows are never updated in place. Every write of an invoice
-- inserts a new row version with a higher `revision`; ReplacingMergeTree(revision) keeps the
-- latest, and every read uses FINAL (a plain SELECT before a merge sees all versions).
-- The finalized state is the last version ever written for an invoice: billing/store.py refuses
-- (in code, before any insert) to write a version of an invoice whose current state is finalized.

-- One row per (tenant, period): invoice_id is derived from (issuer prefix, tenant, period), so a
-- draft re-run replaces its own row rather than adding a second invoice.
-- ORDER BY (period, tenant, invoice_id): every billing job and report reads one period (or a
-- tenant's history within a few periods); it is also the replacing key.
-- No PARTITION BY: a few thousand rows per month; partitions would only add parts.
CREATE TABLE IF NOT EXISTS invoices
(
    invoice_id    String,
    tenant        LowCardinality(String),
    period        String,                        -- 'YYYY-MM', UTC calendar month
    status        LowCardinality(String),        -- 'draft' | 'finalized'
    number        String,                        -- '' while draft; e.g. 'GM-2026-000001'
    issuer        LowCardinality(String),        -- number prefix; numbers are gapless per issuer
    currency      LowCardinality(String),
    subtotal      Decimal(18, 4),
    tax           Decimal(18, 4),
    total         Decimal(18, 4),
    gpu_seconds   UInt64,                        -- metered GPU-seconds on this invoice's period
    created_at    DateTime64(3, 'UTC'),
    finalized_at  Nullable(DateTime64(3, 'UTC')),
    content_hash  String,                        -- sha256 of `document`
    document      String,                        -- canonical JSON (schemas/json/invoice.v1.schema.json)
    revision      UInt64                         -- version for ReplacingMergeTree; grows per write
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (period, tenant, invoice_id);

-- One row per invoice line. ReplacingMergeTree(revision, is_deleted): a draft re-run that has
-- fewer lines than before writes tombstones (is_deleted = 1) for the surplus line numbers, so
-- `FROM invoice_lines FINAL` shows exactly the current lines of every invoice.
-- ORDER BY (period, tenant, invoice_id, line_no): the replacing key; serves "lines of a period"
-- (exports, reconcile, analytics by period and tenant).
CREATE TABLE IF NOT EXISTS invoice_lines
(
    invoice_id     String,
    tenant         LowCardinality(String),
    period         String,
    line_no        UInt32,
    kind           LowCardinality(String),       -- usage|commitment|overage|discount|credit|energy|tax|adjustment
    gpu_model      LowCardinality(String),
    billing_class  LowCardinality(String),
    description    String,
    quantity       Decimal(18, 6),
    unit           String,                       -- 'GPU-hour' | 'kWh' | ''
    unit_price     Decimal(18, 6),
    amount         Decimal(18, 4),
    reference      String,                       -- adjustment: original invoice number; credit: credit id
    ref_period     String,                       -- adjustment: the period it corrects
    ref_kind       LowCardinality(String),       -- adjustment: the kind of line it corrects
    gpu_seconds    UInt64,                       -- exact billable GPU-seconds behind the line
    status         LowCardinality(String),
    revision       UInt64,
    is_deleted     UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(revision, is_deleted)
ORDER BY (period, tenant, invoice_id, line_no);
