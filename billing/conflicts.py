"""Conflicting claims of the period, as reconcile shows them to the operator.

The stream worker settles every conflict by its rule (a MIG slice beats its parent, an
allocation beats idle, then the smaller (tenant, job)) and records each losing claim in
``usage_conflicts``; the ledger, and so every invoice, holds the winners. Reconcile lists
them so that a tenant who lost seconds to another claim is visible before invoices go out:
they are information, not differences (the ledger is consistent), and settling their substance
(a misconfigured scheduler, a producer sending another tenant's GPU) is the operator's call.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.period import Period
from billing.store import BillingStore


@dataclass(frozen=True)
class ConflictGroup:
    kind: str  # mig_parent | idle | allocation
    loser: str  # "tenant/job" of the losing claim ("__idle__/" for idle)
    winner: str  # the claim that held the second when it was detected
    seconds: int


def period_conflicts(store: BillingStore, period: Period, limit: int = 20) -> list[ConflictGroup]:
    """Losing claims of the period, grouped by kind, loser and winner, largest first."""
    rows = store._query(
        """SELECT kind, concat(loser_tenant, '/', loser_job) AS loser,
                  concat(winner_tenant, '/', winner_job) AS winner, count() AS n
           FROM usage_conflicts FINAL
           WHERE ts >= {start:DateTime('UTC')} AND ts < {end:DateTime('UTC')}
           GROUP BY kind, loser, winner ORDER BY n DESC, kind, loser, winner
           LIMIT {limit:UInt32}""",
        start=period.start,
        end=period.end,
        limit=limit,
    )
    return [ConflictGroup(str(k), str(lo), str(w), int(n)) for k, lo, w, n in rows]


def conflict_lines(groups: list[ConflictGroup]) -> list[str]:
    if not groups:
        return ["conflicting claims: none"]
    total = sum(g.seconds for g in groups)
    out = [
        f"conflicting claims: {total} GPU-second(s) claimed twice, settled by the rule "
        "(losing claims in usage_conflicts; the ledger holds the winners):"
    ]
    out += [f"  {g.kind}: {g.loser} lost {g.seconds} s to {g.winner}" for g in groups]
    return out
