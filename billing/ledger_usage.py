"""Billing's reads of the ledger (``usage_minutely FINAL``): the period's allocated usage for
rating, the tenants with usage and when their rows were last written.

Usage is read in both units of the ledger (migration 0030): ``gpu_seconds`` (seconds held,
whatever the share) and ``gpu_milli_seconds`` (seconds x share_milli, what is rated).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from billing.period import Period
from billing.pricebook import IDLE_TENANT
from billing.rating import UsageRow
from billing.store_client import StoreClient, _utc

#: The rating query: the period's allocated usage per (tenant, job, class, GPU, UTC day), for
#: every tenant at once, ordered by tenant so it can be rated one tenant at a time as it
#: streams. It reads the ledger only through FINAL and the columns minute, tenant, job,
#: billing_class, gpu_model, gpu_uuid, mig_uuid, gpu_seconds, gpu_milli_seconds, energy_mj.
#: ``{where}``: an optional tenant filter. The benchmark's floor is this GROUP BY
#: (bench/bench_billing_scale.py).
RATING_QUERY = """SELECT tenant, job, billing_class, gpu_model,
       if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid)) AS gpu,
       min(minute), max(minute), sum(gpu_seconds), sum(energy_mj), sum(gpu_milli_seconds)
FROM usage_minutely FINAL
WHERE minute >= {{start:DateTime('UTC')}} AND minute < {{end:DateTime('UTC')}}
  AND tenant != {{idle:String}} {where}
GROUP BY tenant, job, billing_class, gpu_model, gpu, toDate(minute)
ORDER BY tenant, job, gpu, min(minute)"""


class LedgerUsage(StoreClient):
    """The ledger as billing reads it."""

    def usage_rows(self, period: Period, tenants: Iterable[str] | None = None) -> list[UsageRow]:
        """The period's allocated usage (see :data:`RATING_QUERY`) as one list."""
        return [r for _, rows in self.usage_by_tenant(period, tenants) for r in rows]

    def usage_by_tenant(
        self, period: Period, tenants: Iterable[str] | None = None
    ) -> Iterator[tuple[str, list[UsageRow]]]:
        """The period's allocated usage, aggregated per (tenant, job, class, GPU, UTC day),
        one tenant at a time in ascending tenant order, streamed from ClickHouse in blocks.

        A day is the finest grain prices change at, so this aggregate rates exactly like the
        minute rows while moving ~1/1440 as many rows into Python. One query serves every
        tenant of the period (the cost follows the ledger, not the tenant count), and only one
        tenant's rows are held at a time.
        """
        where = ""
        params: dict[str, Any] = {"start": period.start, "end": period.end, "idle": IDLE_TENANT}
        if tenants is not None:
            where = "AND tenant IN {tenants:Array(String)}"
            params["tenants"] = sorted(tenants)
        current: str | None = None
        rows: list[UsageRow] = []
        for t, j, c, m, g, first, last, sec, e, milli in self._stream(
            RATING_QUERY.format(where=where), **params
        ):
            if t != current:
                if current is not None:
                    yield current, rows
                current, rows = t, []
            rows.append(
                UsageRow(t, j, c, m, g, _utc(first), int(sec), int(e), _utc(last), int(milli))
            )
        if current is not None:
            yield current, rows

    def tenants_with_usage(
        self, period: Period, *, excluding: Iterable[str] = frozenset()
    ) -> set[str]:
        """Tenants (idle excluded) with allocated seconds in the period, less ``excluding``.

        Two steps, so that a caller excluding the tenants it already knows (finalize: every
        invoiced one) does not merge the whole ledger: the tenants with any row in the period,
        from the tenant column without FINAL (a row's tenant is part of its key, so merging
        versions never adds a tenant), then, only for those not excluded, the FINAL check that
        some row still holds a second (``gpu_seconds > 0``: claimed and not released)."""
        span = "minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}"
        params: dict[str, Any] = {"start": period.start, "end": period.end, "idle": IDLE_TENANT}
        candidates = {
            str(r[0])
            for r in self._query(
                f"SELECT DISTINCT tenant FROM usage_minutely WHERE {span} "
                "AND tenant != {idle:String}",
                **params,
            )
        } - set(excluding)
        if not candidates:
            return set()
        rows = self._query(
            f"""SELECT DISTINCT tenant FROM usage_minutely FINAL
               WHERE {span} AND tenant IN {{tenants:Array(String)}} AND gpu_seconds > 0""",
            tenants=sorted(candidates),
            **params,
        )
        return {r[0] for r in rows}

    def last_ledger_writes(self, period: Period) -> dict[str, datetime]:
        """When each tenant's ledger rows for the period were last written (late-usage probe),
        for every tenant in one query."""
        rows = self._query(
            """SELECT tenant, max(updated_at) FROM usage_minutely FINAL
               WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}
               GROUP BY tenant""",
            start=period.start,
            end=period.end,
        )
        return {t: _utc(at) for t, at in rows}

    def last_ledger_write(self, tenant: str, period: Period) -> datetime | None:
        return self.last_ledger_writes(period).get(tenant)


def with_tenants(
    stream: Iterable[tuple[str, list[UsageRow]]], tenants: Iterable[str]
) -> Iterator[tuple[str, list[UsageRow]]]:
    """(tenant, rows) for every tenant of ``stream`` (ascending, as
    :meth:`LedgerUsage.usage_by_tenant` yields them) and of ``tenants``, in ascending order; a
    tenant without usage gets []."""
    extra = sorted(set(tenants), reverse=True)  # pop() from the end: ascending
    for tenant, rows in stream:
        while extra and extra[-1] < tenant:
            yield extra.pop(), []
        if extra and extra[-1] == tenant:
            extra.pop()
        yield tenant, rows
    while extra:
        yield extra.pop(), []
