-- Billing integrity (issue 10). Fixes forward; 0010 stays as applied.

-- A credit note is a line like any other: an adjustment that takes back GPU-seconds (a job that
-- re-rates shorter across a price change, a minimum that no longer applies) carries negative
-- seconds. UInt64 refused them and crashed `invoices run`. Not part of the sorting key, so the
-- type change is a metadata change plus a background conversion of existing parts.
ALTER TABLE invoice_lines MODIFY COLUMN gpu_seconds Int64;

-- One row per finalization of a period: when, whether it was forced before the period (plus
-- the ingest grace) had ended, and the reason given. A period with a row here is closed: a run
-- never drafts a new invoice for it; late usage is carried forward as adjustments.
-- MergeTree, ORDER BY (period, closed_at): read by period; a few rows per month.
CREATE TABLE IF NOT EXISTS billing_period_closes
(
    period      String,
    closed_at   DateTime64(3, 'UTC'),
    forced      UInt8,
    reason      String,
    invoices    UInt32,
    holder      String                            -- the finalizer's reservation token
)
ENGINE = MergeTree
ORDER BY (period, closed_at);

-- Finalization reservations: a finalizer inserts a claim, reads every live claim back, and
-- proceeds only when its own is the only one (billing/reservation.py states the argument).
-- Claims are released by a tombstone (released = 1) and expire after `expires_at`.
-- ReplacingMergeTree(version, released) on (scope, token): a release replaces its claim.
CREATE TABLE IF NOT EXISTS billing_reservations
(
    scope       String,                           -- 'finalize': one finalizer for every issuer
    token       String,                           -- uuid4 per attempt
    claimed_at  DateTime64(3, 'UTC'),
    expires_at  DateTime64(3, 'UTC'),
    holder      String,                           -- host/pid, for the operator
    version     UInt64,
    released    UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version, released)
ORDER BY (scope, token);
