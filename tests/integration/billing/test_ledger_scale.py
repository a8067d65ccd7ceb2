"""``tenants_with_usage`` reads the ledger with FINAL only for tenants it was not told about
(finalize excludes every invoiced tenant): the answer stays the tenants with a second still
claimed and not released, whatever is excluded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billing.period import Period
from billing.store import BillingStore
from streams.clickhouse.columns import LEDGER_COLUMNS
from tests.ledger_rows import LedgerRow, insert_ledger

pytestmark = pytest.mark.integration

JAN = Period(2026, 1)
M = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)


def release(client: Any, row: LedgerRow, mask: int) -> None:
    """A later write of the row's key that releases ``mask`` (a better claim took it)."""
    values = row.values()
    values[LEDGER_COLUMNS.index("claimed_mask")] = 0
    values[LEDGER_COLUMNS.index("released_mask")] = mask
    client.insert("usage_minutely", [values], column_names=LEDGER_COLUMNS)


@pytest.mark.parametrize(
    "excluding",
    [set(), {"a"}, {"a", "gone"}, {"a", "b", "half", "gone", "feb"}, {"nobody"}],
)
def test_tenants_with_usage_whatever_is_excluded(clickhouse: Any, excluding: set[str]) -> None:
    # given: a and b hold seconds; "gone" had all its seconds released by a later write;
    # "half" lost only some; idle holds seconds; "feb" has usage in the next period only
    gone = LedgerRow(M, "gone", "j", "g2", "H100", 0b1111)
    half = LedgerRow(M, "half", "j", "g3", "H100", 0b1111)
    insert_ledger(
        clickhouse,
        [
            LedgerRow(M, "a", "j", "g0", "H100", 0b1),
            LedgerRow(M, "b", "j", "g1", "H100", 0b11),
            gone,
            half,
            LedgerRow(M, "__idle__", "", "g4", "H100", 0b1),
            LedgerRow(FEB, "feb", "j", "g0", "H100", 0b1),
        ],
    )
    release(clickhouse, gone, 0b1111)
    release(clickhouse, half, 0b0011)
    # when the tenants with usage in January are asked for, less those excluded
    got = BillingStore(clickhouse).tenants_with_usage(JAN, excluding=excluding)
    # then they are exactly the January tenants still holding a second, less the excluded
    assert got == {"a", "b", "half"} - excluding
