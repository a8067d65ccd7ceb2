"""Conflicting claims in a report period, as warnings the report shows (terminal and HTML).

The worker settles each conflict by its rule and records the losing claim in
``usage_conflicts``; the ledger (and so every figure here) holds the winners. A report whose
period had conflicts says so, with the largest losers, because a tenant's utilization or an
idle figure may read differently once the operator settles their substance.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from analytics.ledger_facts import ReportPeriod

_CONFLICTS = """
SELECT kind, concat(loser_tenant, '/', loser_job) AS loser,
       concat(winner_tenant, '/', winner_job) AS winner, count() AS n
FROM usage_conflicts FINAL
WHERE ts >= {start:DateTime('UTC')} AND ts < {end:DateTime('UTC')}
GROUP BY kind, loser, winner ORDER BY n DESC, kind, loser, winner
"""


def conflict_warnings(client: Client, period: ReportPeriod, shown: int = 5) -> tuple[str, ...]:
    rows = client.query(
        _CONFLICTS, parameters={"start": period.start, "end": period.end}
    ).result_rows
    if not rows:
        return ()
    total = sum(int(r[3]) for r in rows)
    top = "; ".join(
        f"{kind} {loser} lost {int(n):,} s to {winner}" for kind, loser, winner, n in rows[:shown]
    )
    more = f"; {len(rows) - shown} more group(s)" if len(rows) > shown else ""
    return (
        f"{total:,} GPU-second(s) of this period were claimed twice and settled by the "
        f"conflict rule (the ledger holds the winners; losing claims in usage_conflicts): "
        f"{top}{more}",
    )
