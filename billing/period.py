"""A billing period: one calendar month in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from billing.errors import BillingError

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
#: How long after a period's end usage may still arrive in the normal course (agent spools
#: draining, worker catch-up). Finalizing before ``end + grace`` needs a recorded reason.
INGEST_GRACE = timedelta(hours=24)


@dataclass(frozen=True, order=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = _PERIOD.match(text)
        if not m:
            raise BillingError(f"period {text!r} is not a month written YYYY-MM (e.g. 2026-01)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        """First instant of the month, UTC (inclusive)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """First instant of the next month, UTC (exclusive)."""
        return self.next().start

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.end.date().toordinal() - 1)

    def next(self) -> Period:
        return Period(self.year + (self.month == 12), self.month % 12 + 1)

    def prev(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def closes_at(self, grace: timedelta = INGEST_GRACE) -> datetime:
        """The earliest instant the period may be finalized without a forced reason."""
        return self.end + grace

    @classmethod
    def of(cls, ts: datetime) -> Period:
        return cls(ts.year, ts.month)

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end
