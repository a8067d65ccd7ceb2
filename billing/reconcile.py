"""Reconcile a period: prove the finalized invoices (plus their adjustments) equal the ledger.

Checks, each reported as a difference when it fails:

1. Integrity: every finalized invoice's stored hash is sha256 of its stored document.
2. Money: re-rating the period from today's ledger with each invoice's own prices equals the
   invoice's rated lines plus every adjustment written for it (on any later invoice, draft or
   finalized; adjustments still on drafts are listed as pending).
3. Coverage: every tenant with usage in the period has a finalized invoice.
4. Conservation per GPU: billed + idle = observed, in milli-GPU-seconds: the allocations' and
   the idle remainder's shares of a GPU-second sum to 1000 (a whole GPU: billed GPU-seconds +
   idle GPU-seconds = GPU-seconds observed, as before shares), where
   observed is the number of distinct seconds in the raw archive (usage_seconds FINAL) when
   the archive reaches back as far as the ledger for the period, otherwise the distinct seconds
   of the ledger's own masks (bitCount of the OR of every row's seconds_mask per GPU-minute),
   which still proves no second is counted for two allocations. The report says which.
   (Two conflicting claims that two workers each counted without seeing the other's fail here.)
   :mod:`billing.conservation` computes it in one chunked read of the ledger.
5. Conflicts (information): the period's losing claims from ``usage_conflicts``, grouped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from billing.adjustment import differences
from billing.conflicts import ConflictGroup, conflict_lines, period_conflicts
from billing.conservation import LEDGER, RAW, GpuBalance, conservation, gpu_seconds_text
from billing.period import Period
from billing.preemptions import PreemptionRecords
from billing.rating import rate_invoice
from billing.store import BillingStore, QueryClient, lines_correcting, with_tenants

__all__ = [
    "LEDGER",
    "RAW",
    "GpuBalance",
    "ReconcileReport",
    "conservation",
    "gpu_seconds_text",
    "reconcile_period",
]


@dataclass
class ReconcileReport:
    period: Period
    checked: list[str] = field(default_factory=list)  # invoice numbers proven
    differences: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # adjustments on draft invoices
    gpus: list[GpuBalance] = field(default_factory=list)
    conflicts: list[ConflictGroup] = field(default_factory=list)  # information, not differences

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        out = [f"reconcile {self.period}: {len(self.checked)} finalized invoice(s) checked"]
        out += [f"  pending: {p}" for p in self.pending]
        billed = sum(g.billed for g in self.gpus)
        idle = sum(g.idle for g in self.gpus)
        observed = sum(g.observed for g in self.gpus)
        sources = sorted({g.source for g in self.gpus}) or ["no usage"]
        out.append(
            f"conservation over {len(self.gpus)} GPU(s): billed {gpu_seconds_text(billed)} + idle "
            f"{gpu_seconds_text(idle)} = {gpu_seconds_text(billed + idle)} GPU-seconds "
            f"(share-weighted); observed {observed} (from {'; '.join(sources)})"
        )
        out += conflict_lines(self.conflicts)
        out += [f"  DIFFERENCE: {d}" for d in self.differences]
        out.append(
            "OK: invoices match the ledger"
            if self.ok
            else f"FAILED: {len(self.differences)} difference(s)"
        )
        return out


def reconcile_period(client: QueryClient, period: Period) -> ReconcileReport:
    # Bulk, like the run: one query for the period's invoices, one for every adjustment
    # written for the period, one stream of the period's usage re-rated tenant by tenant.
    store = BillingStore(client)
    report = ReconcileReport(period)
    invoices = store.invoices(period=period)
    finalized = {s.invoice.tenant: s for s in invoices if s.status == "finalized"}
    holders = store.adjustment_holders_by_tenant(str(period))
    preempted = PreemptionRecords(client).preempted_jobs(period)  # as the run rated them
    with_usage: set[str] = set()
    for tenant, rows in with_tenants(store.usage_by_tenant(period), finalized):
        if any(r.gpu_seconds > 0 for r in rows):
            with_usage.add(tenant)
        stored = finalized.get(tenant)
        if stored is None:
            continue
        number = stored.invoice.number
        if hashlib.sha256(stored.document.encode()).hexdigest() != stored.content_hash:
            report.differences.append(
                f"{number} ({tenant}): stored document does not match its content hash"
            )
        mine = holders.get(tenant, [])
        for holder in mine:
            if holder.status == "draft":
                report.pending.append(
                    f"adjustments for {number} are on the draft invoice of "
                    f"{holder.invoice.tenant} {holder.invoice.period}; "
                    "finalize it"
                )
        inv = stored.invoice
        rerated = rate_invoice(
            inv.pricing, tenant, period, rows, preempted=preempted.get(tenant, frozenset())
        )
        for d in differences(inv, rerated, lines_correcting(mine, inv.period)):
            kind, model, klass, unit, price = d.key
            report.differences.append(
                f"{number} ({tenant}): {kind} {model} {klass} at {price}/{unit or 'unit'}: "
                f"ledger says {d.amount:+} {stored.invoice.currency} "
                f"({'+' if d.milli >= 0 else '-'}{gpu_seconds_text(abs(d.milli))} GPU-s) "
                "more than invoiced + adjusted; run the next period to bill it"
            )
        report.checked.append(number)
    for tenant in sorted(with_usage - set(finalized)):
        state = next((s.status for s in invoices if s.invoice.tenant == tenant), "none")
        mine = holders.get(tenant, []) if state == "none" else []
        if mine:  # late usage carried forward onto a later invoice (billing.late_usage)
            report.pending += [
                f"{tenant}: usage of {period} carried forward to "
                f"{h.invoice.number or 'the draft'} of {h.invoice.period}"
                for h in mine
                if h.status == "draft"
            ]
            continue
        report.differences.append(
            f"{tenant} has usage in {period} but no finalized invoice "
            f"(invoice: {state}); if {period} is closed, run the next "
            "period to carry it forward"
        )
    report.gpus = conservation(store, period)
    report.conflicts = period_conflicts(store, period)
    report.differences += [
        f"GPU {g.gpu}: billed {gpu_seconds_text(g.billed)} + idle {gpu_seconds_text(g.idle)} = "
        f"{gpu_seconds_text(g.billed + g.idle)} GPU-seconds, but {g.observed} observed "
        f"({g.source})"
        for g in report.gpus
        if not g.ok
    ]
    return report
