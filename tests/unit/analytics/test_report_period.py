"""A report covers a UTC month or one UTC day; anything else is an AnalyticsError that says so."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics.errors import AnalyticsError
from analytics.ledger_facts import parse_period


def test_a_month_and_a_day_are_half_open_utc_ranges() -> None:
    month = parse_period("2026-02")
    assert (month.start, month.end, month.is_month) == (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        True,
    )
    day = parse_period("2026-12-31")
    assert (day.start, day.end, day.is_month) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        False,
    )


@pytest.mark.parametrize("text", ["2026-13", "2026-02-30", "2026", "March", "2026-1"])
def test_anything_else_is_refused_with_the_expected_forms(text: str) -> None:
    with pytest.raises(AnalyticsError, match="expected YYYY-MM"):
        parse_period(text)
