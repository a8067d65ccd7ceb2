"""Preemptions in the report: how often internal demand (or anyone) took GPUs back from
allocations, and what it cost them, per GPU model and preempted tenant.

Read from the ``preemption_losses`` view (migration 0033; one row per preemption record, the
loss counted from the ledger): a record counts in the period its ``at`` falls in. Per
(GPU model, tenant):

- preemptions = records (one per device an allocation lost);
- lost GPU-hours = ``lost_milli_seconds`` summed / 3,600,000 (exact: seconds held in
  ``[checkpoint_at or the allocation's first second, at)`` x share);
- unmatched = records no ledger row matches (``held_seconds = 0``: wrong device, job or share,
  or usage not yet metered); their model is unknown (``''``) and their loss is not counted, so
  the report warns about them instead of showing 0 as a fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from analytics.ledger_facts import ReportPeriod
from kernel.names import MILLI_PER_GPU_HOUR

_QUERY = """SELECT gpu_model, tenant, count(), sum(lost_milli_seconds), countIf(held_seconds = 0)
FROM preemption_losses
WHERE at >= {start:DateTime('UTC')} AND at < {end:DateTime('UTC')}
GROUP BY gpu_model, tenant
ORDER BY gpu_model, tenant"""

PREEMPTIONS_TITLE = "Preemptions: GPUs taken back from allocations"
PREEMPTION_COLUMNS = ("GPU model", "tenant", "preemptions", "lost GPU-h")


@dataclass(frozen=True)
class PreemptionTotal:
    gpu_model: str  # '' for records no ledger row matches
    tenant: str  # the preempted allocation's tenant
    preemptions: int
    lost_milli: int  # lost milli-GPU-seconds (exact)
    unmatched: int  # records with no matching allocation in the ledger

    @property
    def lost_gpu_hours(self) -> Decimal:
        return Decimal(self.lost_milli) / MILLI_PER_GPU_HOUR


def load_preemptions(client: Client, period: ReportPeriod) -> tuple[PreemptionTotal, ...]:
    params = {"start": period.start, "end": period.end}
    return tuple(
        PreemptionTotal(str(m), str(t), int(n), int(lost), int(unmatched))
        for m, t, n, lost, unmatched in client.query(_QUERY, parameters=params).result_rows
    )


def preemption_warnings(totals: tuple[PreemptionTotal, ...]) -> tuple[str, ...]:
    unmatched = sum(t.unmatched for t in totals)
    if not unmatched:
        return ()
    return (
        f"{unmatched} preemption record(s) match no allocation in the ledger (device, job or "
        "share differ, or the usage is not metered yet): their lost GPU-hours are not counted",
    )


def preemption_rows(totals: tuple[PreemptionTotal, ...]) -> list[list[str]]:
    """Table rows (:data:`PREEMPTION_COLUMNS`), then the total."""
    rows = [
        [
            t.gpu_model or "(no ledger match)",
            t.tenant,
            f"{t.preemptions:,}",
            f"{t.lost_gpu_hours:,.3f}",
        ]
        for t in totals
    ]
    if totals:
        lost = Decimal(sum(t.lost_milli for t in totals)) / MILLI_PER_GPU_HOUR
        rows.append(["all", "", f"{sum(t.preemptions for t in totals):,}", f"{lost:,.3f}"])
    return rows
