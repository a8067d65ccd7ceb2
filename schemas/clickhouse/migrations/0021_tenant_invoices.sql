-- Tenant-scoped views over billing's invoices (0010), for `gpumeter sql --tenant T`. Same rules
-- as the tenant usage views in 0020: parameterized by {tenant:String}, bound server-side, and
-- the tenant column left out. Both read FINAL (billing writes new row versions, never updates)
-- and skip tombstoned lines.
CREATE VIEW IF NOT EXISTS tenant_invoices AS
SELECT invoice_id, period, status, number, currency, subtotal, tax, total, gpu_seconds,
       created_at, finalized_at
FROM invoices FINAL
WHERE tenant = {tenant:String};

CREATE VIEW IF NOT EXISTS tenant_invoice_lines AS
SELECT invoice_id, period, line_no, kind, gpu_model, billing_class, description, quantity, unit,
       unit_price, amount, reference, ref_period, ref_kind, gpu_seconds
FROM invoice_lines FINAL
WHERE tenant = {tenant:String} AND is_deleted = 0;
