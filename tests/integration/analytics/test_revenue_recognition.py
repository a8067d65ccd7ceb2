"""Facts read the covering days of commitment revenue from the invoices in ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from analytics.ledger_facts import load_facts, parse_period
from billing.period import Period
from billing.service import run_period
from tests.unit.billing.builders import A100, make_book

pytestmark = pytest.mark.integration


def test_commitment_lines_carry_the_contract_days_they_cover(clickhouse: Any) -> None:
    # Given a contract from 2026-01-17 with a commitment (no usage at all)
    book = make_book(
        tenants={
            "u": {
                "plan": "flat",
                "default_class": "reserved",
                "starts_on": "2026-01-17",
                "commitments": [
                    {
                        "gpu_model": A100,
                        "gpu_hours_per_month": 31,
                        "rate": "1.00",
                        "overage_rate": "2.00",
                    }
                ],
            }
        }
    )
    run_period(clickhouse, book, Period(2026, 1))
    # When the month's facts are loaded
    facts = load_facts(clickhouse, parse_period("2026-01"))
    # Then the prorated commitment (31 h x 15/31 = 15.00) covers Jan 17 .. Jan 31 only
    assert facts.invoiced is not None
    (line,) = facts.invoiced
    assert line.amount == Decimal("15.00")
    assert line.covers == (datetime(2026, 1, 17, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    # and a day before the contract gets none of it, a day inside 1/15
    assert load_facts(clickhouse, parse_period("2026-01-10")).invoiced == ()
    (day,) = load_facts(clickhouse, parse_period("2026-01-20")).invoiced or ()
    assert day.amount == Decimal("1.00")
