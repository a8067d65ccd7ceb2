"""One billing writer at a time (a run or a finalization): a reservation in ClickHouse, and the
record of closed periods.

ClickHouse has no unique constraint or row lock, so the reservation is a claim-then-check
protocol over plain inserts (a single server makes an acknowledged insert visible to every
later read):

1. insert my claim (scope, a fresh token, expiry);
2. read every live claim of the scope (not released, not expired);
3. proceed only if mine is the only one; otherwise release mine and refuse.

Two finalizers cannot both pass: each reads after its own insert, so whichever reads second
sees the other's claim (the first reader saw only itself only if the other's insert was not yet
acknowledged, which then precedes the other's read). Both may refuse when they overlap; a retry
later succeeds, so refusing is safe and never half-finishes anything. A crashed holder's claim
expires after ``ttl``; a finalizer checks its claim is still live just before its commit write.

On the embedded engine (chDB) one process owns a data directory at a time, so two finalizer
processes are already excluded by the file lock; the protocol is what protects a ClickHouse
server, and tests/unit/billing/test_reservation.py checks it over every interleaving.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from billing.errors import BillingError
from billing.period import Period
from billing.store import BillingStore
from billing.store_client import _DRIVER_ERRORS, QueryClient, _store_error, _utc

COLUMNS = ["scope", "token", "claimed_at", "expires_at", "holder", "version", "released"]
DEFAULT_TTL = timedelta(minutes=30)


class ReservationError(BillingError):
    """Another run or finalizer holds (or is taking) the reservation; nothing was changed."""

    def __init__(self, scope: str, others: list[str]) -> None:
        self.scope, self.others = scope, others
        super().__init__(
            f"another billing run or finalization is in progress ({scope!r} reserved by "
            f"{', '.join(others)}); nothing was changed. Wait for it to finish and try again "
            f"(a crashed writer's reservation expires after {int(DEFAULT_TTL.total_seconds() // 60)} "
            "minutes)"
        )


@dataclass
class Reservation:
    client: QueryClient
    scope: str = "billing"
    ttl: timedelta = DEFAULT_TTL
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    token: str = ""

    def acquire(self) -> None:
        self.claim()
        self.check()

    def claim(self) -> None:
        """Step 1: insert my claim (acknowledged before returning)."""
        self.token = str(uuid.uuid4())
        self._write(self.now(), released=0)

    def check(self) -> None:
        """Steps 2 and 3: read every live claim back; pass only if mine is the only one."""
        others = [h for t, h in self.live() if t != self.token]
        if others:
            self.release()
            raise ReservationError(self.scope, others)

    def still_held(self) -> bool:
        return any(t == self.token for t, _ in self.live())

    def release(self) -> None:
        if self.token:
            self._write(self.now(), released=1)

    def live(self) -> list[tuple[str, str]]:
        rows = BillingStore(self.client)._query(
            """SELECT token, holder, expires_at FROM billing_reservations FINAL
               WHERE scope = {scope:String} AND released = 0""",
            scope=self.scope,
        )
        now = self.now()
        return [(t, h) for t, h, exp in rows if _utc(exp) > now]

    def _write(self, at: datetime, *, released: int) -> None:
        holder = f"{socket.gethostname()}/{os.getpid()}"
        _insert(
            self.client,
            "billing_reservations",
            [self.scope, self.token, at, at + self.ttl, holder, time.time_ns(), released],
            COLUMNS,
        )

    def __enter__(self) -> Reservation:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- closed periods ---------------------------------------------------------------------------


def record_close(
    client: QueryClient,
    period: Period,
    *,
    at: datetime,
    forced: bool,
    reason: str,
    invoices: int,
    holder: str,
) -> None:
    _insert(
        client,
        "billing_period_closes",
        [str(period), at, int(forced), reason, invoices, holder],
        ["period", "closed_at", "forced", "reason", "invoices", "holder"],
    )


def closes(client: QueryClient, period: Period) -> list[tuple[datetime, bool, str]]:
    rows = BillingStore(client)._query(
        """SELECT closed_at, forced, reason FROM billing_period_closes
           WHERE period = {period:String} ORDER BY closed_at""",
        period=str(period),
    )
    return [(_utc(at), bool(f), r) for at, f, r in rows]


def closed_periods(client: QueryClient, before: Period) -> list[Period]:
    """Periods before ``before`` that have been finalized (a close record or a final invoice)."""
    rows = BillingStore(client)._query(
        """SELECT period FROM billing_period_closes WHERE period < {before:String}
           UNION DISTINCT
           SELECT period FROM invoices FINAL
           WHERE status = 'finalized' AND period < {before:String}""",
        before=str(before),
    )
    return sorted(Period.parse(r[0]) for r in rows)


def _insert(client: QueryClient, table: str, row: list[Any], columns: list[str]) -> None:
    try:
        client.insert(table, [row], column_names=columns)
    except _DRIVER_ERRORS as exc:  # infrastructure error: converted at the boundary, cause kept
        raise _store_error(f"writing {table} failed", exc) from exc
