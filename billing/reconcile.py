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
5. Conflicts (information): the period's losing claims from ``usage_conflicts``, grouped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal

from billing.adjustment import differences
from billing.conflicts import ConflictGroup, conflict_lines, period_conflicts
from billing.period import Period
from billing.pricebook import IDLE_TENANT
from billing.rating import rate_invoice
from billing.store import BillingStore, QueryClient, lines_correcting, with_tenants

RAW = "raw archive (usage_raw_seconds, or usage_seconds FINAL before migration 0031)"
LEDGER = "ledger masks (raw archive expired or not covering the period)"


@dataclass
class GpuBalance:
    gpu: str
    billed: int  # milli-GPU-seconds allocated (seconds x share)
    idle: int  # milli-GPU-seconds idle (the unallocated remainder included)
    observed: int  # GPU-seconds observed
    source: str

    @property
    def ok(self) -> bool:
        return self.billed + self.idle == self.observed * 1000


def gpu_seconds_text(milli: int) -> str:
    """milli-GPU-seconds as GPU-seconds, exact: 120000 -> '120', 120500 -> '120.5'."""
    return format((Decimal(milli) / 1000).normalize(), "f")


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
        rerated = rate_invoice(inv.pricing, tenant, period, rows)
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


def conservation(store: BillingStore, period: Period) -> list[GpuBalance]:
    params = {"start": period.start, "end": period.end, "idle": IDLE_TENANT}
    span = "minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}"
    # One pass over the ledger gives both the billed / idle split and the masks' distinct
    # seconds (per GPU-minute, then per GPU): the ledger is scanned once, not twice.
    # GROUP BY (minute, gpu_uuid, mig_uuid) is a prefix of the ledger's ORDER BY, so ClickHouse
    # can aggregate in order instead of hashing every GPU-minute of the month.
    ledger = []
    masks = {}
    for gpu, billed, idle, first_minute, observed in store._query(
        f"""SELECT any(g) AS gpu, sum(b), sum(i), min(minute), sum(bitCount(m)) FROM (
                  SELECT minute, gpu_uuid, mig_uuid,
                         any(if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid))) AS g,
                         sumIf(gpu_milli_seconds, tenant != {{idle:String}}) AS b,
                         sumIf(gpu_milli_seconds, tenant = {{idle:String}}) AS i,
                         groupBitOr(seconds_mask) AS m
                  FROM usage_minutely FINAL WHERE {span}
                  GROUP BY minute, gpu_uuid, mig_uuid)
               GROUP BY gpu_uuid, mig_uuid
               SETTINGS optimize_aggregation_in_order = 1""",
        **params,
    ):
        ledger.append((gpu, billed, idle, first_minute))
        masks[gpu] = observed
    archive = _raw_archive(store)
    raw = {
        g: (int(n), first)
        for g, n, first in store._query(
            f"""SELECT if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid)) AS gpu,
                  uniqExact(ts), min(ts)
           FROM {archive}
           WHERE ts >= {{start:DateTime('UTC')}} AND ts < {{end:DateTime('UTC')}} GROUP BY gpu""",
            **params,
        )
    }
    earliest_raw = store._query(f"SELECT min(ts), count() FROM {archive}")
    out = []
    for gpu, billed, idle, first_minute in sorted(ledger):
        # The raw archive is authoritative only if it still holds this GPU's first ledger minute.
        r = raw.get(gpu)
        covers = r is not None and earliest_raw[0][1] and r[1] <= first_minute.replace(second=59)
        observed, source = (r[0], RAW) if covers and r else (int(masks.get(gpu, 0)), LEDGER)
        out.append(GpuBalance(gpu, int(billed), int(idle), observed, source))
    return out


def _raw_archive(store: BillingStore) -> str:
    """The raw archive's per-second rows: ``usage_raw_seconds`` (both archives: v1
    ``usage_seconds`` and v2 ``usage_frames``, migration 0031) where it exists, else
    ``usage_seconds FINAL``. Either is read as distinct seconds, never rows."""
    found = store._query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'usage_raw_seconds'"
    )
    return "usage_raw_seconds" if int(found[0][0]) else "usage_seconds FINAL"
