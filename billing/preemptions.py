"""Billing's read of the preemption records (table ``preemptions``, migration 0033): which jobs
of which tenants were preempted in a period, for the plan rule ``preempted_minimum``.

A job is *preempted in the period* when a record of it on ``gpu.preemptions.v1`` has ``at``
within the period's ``[start, end)`` (UTC), whatever device it names. Every caller that rates
a tenant's usage for a period (the invoice run, reconcile, late-usage adjustments) must pass
the same set to :func:`billing.rating.rate_invoice`, or they rate the same usage differently.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from billing.period import Period
from billing.store_client import StoreClient, _utc

PREEMPTED_JOBS_QUERY = """SELECT tenant, groupUniqArray(job)
FROM preemptions FINAL
WHERE at >= {{start:DateTime('UTC')}} AND at < {{end:DateTime('UTC')}} {where}
GROUP BY tenant"""


class PreemptionRecords(StoreClient):
    """The preemption records as billing reads them."""

    def preempted_jobs(
        self, period: Period, tenants: Iterable[str] | None = None
    ) -> dict[str, frozenset[str]]:
        """tenant -> ids of its jobs preempted in ``period`` (tenants without any: absent)."""
        where = ""
        params: dict[str, object] = {"start": period.start, "end": period.end}
        if tenants is not None:
            where = "AND tenant IN {tenants:Array(String)}"
            params["tenants"] = sorted(tenants)
        rows = self._query(PREEMPTED_JOBS_QUERY.format(where=where), **params)
        return {tenant: frozenset(jobs) for tenant, jobs in rows}

    def last_ingested(self, period: Period) -> dict[str, datetime]:
        """tenant -> when its latest preemption record with ``at`` in ``period`` was stored.

        A record stored after a tenant's invoice was rated changes what the invoice should say
        (a waived minimum): late usage treats it like a ledger write after rating."""
        rows = self._query(
            """SELECT tenant, max(ingested_at) FROM preemptions
               WHERE at >= {start:DateTime('UTC')} AND at < {end:DateTime('UTC')}
               GROUP BY tenant""",
            start=period.start,
            end=period.end,
        )
        return {tenant: _utc(at) for tenant, at in rows}
