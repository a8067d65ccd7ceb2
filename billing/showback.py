"""Internal tenants: their usage is shown back at cost, never invoiced.

A tenant marked ``kind = "internal"`` in the price book (one of the operator's own teams) gets
no invoice and no number. ``run_period`` reports its usage instead, per GPU model, as
share-weighted GPU-hours from the same rating query (``usage_minutely FINAL``): milli-GPU-seconds
/ 3,600,000. Billing states quantities only: the cost of a GPU-hour (depreciation, energy at the
facility's PUE, other opex) comes from the asset register, which is analytics', and billing
never imports analytics; ``gpumeter report`` prices the statement at cost
(``analytics/showback.py``), reading the same price book's tenant kinds.

What stays invoiced for an internal tenant: corrections (adjustment lines referencing an
invoice number) of invoices it was issued while it was external. Its carried-forward usage
(adjustments with no reference: usage in a closed period with no invoice there) is usage like
any other and is withheld.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from billing.invoice import InvoiceLine
from billing.period import Period
from billing.rating import UsageRow
from billing.reconcile import ReconcileReport
from kernel.names import MILLI_PER_GPU_HOUR

#: The statement's own words: it is not an invoice.
SHOWBACK_NOTE = "showback, not invoiced"


@dataclass(frozen=True)
class ShowbackUsage:
    """An internal tenant's usage of one GPU model in the period (share-weighted)."""

    tenant: str
    gpu_model: str
    gpu_milli_seconds: int

    @property
    def gpu_hours(self) -> Decimal:
        """Exact: milli-GPU-seconds / 3,600,000 (display rounds, the value never does)."""
        return Decimal(self.gpu_milli_seconds) / MILLI_PER_GPU_HOUR


def showback_usage(tenant: str, rows: Iterable[UsageRow]) -> list[ShowbackUsage]:
    """Per GPU model (sorted), the tenant's milli-GPU-seconds of ``rows`` (its rating rows)."""
    milli: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.tenant == tenant and r.gpu_seconds > 0:
            milli[r.gpu_model] += r.gpu_milli_seconds
    return [ShowbackUsage(tenant, m, v) for m, v in sorted(milli.items()) if v]


def invoiceable(
    pending: Mapping[str, list[InvoiceLine]], internal: Collection[str]
) -> dict[str, list[InvoiceLine]]:
    """Pending adjustments minus internal tenants' carried-forward usage (no ``reference``);
    corrections of invoices an internal tenant was issued as an external one stay."""
    out: dict[str, list[InvoiceLine]] = {}
    for tenant, lines in pending.items():
        kept = [ln for ln in lines if tenant not in internal or ln.reference]
        if kept:
            out[tenant] = kept
    return out


def coverage_difference(tenant: str, period: Period) -> str:
    """The difference ``billing.reconcile`` reports for a tenant with usage and no invoice."""
    return (
        f"{tenant} has usage in {period} but no finalized invoice (invoice: none); if "
        f"{period} is closed, run the next period to carry it forward"
    )


def reconcile_internal(
    report: ReconcileReport, internal: Collection[str]
) -> tuple[ReconcileReport, list[str]]:
    """An internal tenant with usage and no invoice is the rule, not a difference: drop those
    coverage differences; return the report and the internal tenants shown back. Money,
    integrity and conservation checks are untouched (conservation counts internal usage as
    allocated, like every tenant's)."""
    shown = {coverage_difference(t, report.period): t for t in internal}
    found = sorted(shown[d] for d in report.differences if d in shown)
    report.differences = [d for d in report.differences if d not in shown]
    return report, found
