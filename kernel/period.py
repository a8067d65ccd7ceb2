"""A period of the ledger, defined once: a calendar month (``YYYY-MM``) or one day
(``YYYY-MM-DD``), in UTC, covering ``[start, end)``.

Billing invoices months only (:meth:`Period.parse`); analytics also reports single days
(:meth:`Period.parse_span`). Both contexts import this one type; each turns
:class:`PeriodError` into its own error at its boundary if it wants its root to carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_SPAN = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


class PeriodError(ValueError):
    """Text that is not a period of the expected form (the message says which forms)."""


@dataclass(frozen=True, order=True)
class Period:
    """A UTC calendar month (``day`` 0) or one UTC day of it."""

    year: int
    month: int
    day: int = 0  # 0: the whole month

    @classmethod
    def parse(cls, text: str) -> Period:
        """A month, ``YYYY-MM`` (a billing period)."""
        m = _MONTH.match(text)
        if not m:
            raise PeriodError(f"period {text!r} is not a month written YYYY-MM (e.g. 2026-01)")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def parse_span(cls, text: str) -> Period:
        """A month (``YYYY-MM``) or one day (``YYYY-MM-DD``)."""
        expected = f"period {text!r}: expected YYYY-MM (a month) or YYYY-MM-DD (a day)"
        m = _SPAN.match(text)
        if not m:
            raise PeriodError(expected)
        year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        try:
            date(year, month, day or 1)  # 2026-13, 2026-02-30: the right shape, not a date
        except ValueError:
            raise PeriodError(f"{expected}; no such month or day") from None
        return cls(year, month, day)

    @classmethod
    def of(cls, ts: datetime) -> Period:
        """The month holding ``ts``."""
        return cls(ts.year, ts.month)

    def __str__(self) -> str:
        month = f"{self.year:04d}-{self.month:02d}"
        return f"{month}-{self.day:02d}" if self.day else month

    @property
    def label(self) -> str:
        return str(self)

    @property
    def is_month(self) -> bool:
        return self.day == 0

    @property
    def month_period(self) -> Period:
        """The month this period lies in (itself when it is a month)."""
        return Period(self.year, self.month)

    @property
    def month_label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        """First instant, UTC (inclusive)."""
        return datetime(self.year, self.month, self.day or 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """First instant after the period, UTC (exclusive)."""
        if self.day:
            return self.start + timedelta(days=1)
        return self.next().start

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.end.date().toordinal() - 1)

    def next(self) -> Period:
        """The next month (of a day: the month after its month)."""
        return Period(self.year + (self.month == 12), self.month % 12 + 1)

    def prev(self) -> Period:
        """The previous month (of a day: the month before its month)."""
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def closes_at(self, grace: timedelta) -> datetime:
        """The earliest instant usage of the period is complete in the normal course."""
        return self.end + grace

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end
