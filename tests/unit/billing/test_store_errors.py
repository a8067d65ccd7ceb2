"""A failing ClickHouse call reaches billing's callers as a BillingError that keeps the
server's code and name; anything else (a bug) propagates as itself."""

from __future__ import annotations

from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from billing.errors import BillingError, BillingStoreError
from billing.period import Period
from billing.store import BillingStore


class Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def query(self, *a: Any, **k: Any) -> Any:
        raise self.exc


def test_a_server_error_keeps_its_code_and_name() -> None:
    store = BillingStore(
        Failing(
            DatabaseError(
                "Code: 60. DB::Exception: Unknown table expression identifier 'invoices'. "
                "(UNKNOWN_TABLE)"
            )
        )
    )  # type: ignore[arg-type]
    with pytest.raises(BillingStoreError) as caught:
        store.invoices(period=Period(2026, 1))
    assert isinstance(caught.value, BillingError)
    assert (caught.value.code, caught.value.name) == (60, "UNKNOWN_TABLE")
    assert "ClickHouse error 60 UNKNOWN_TABLE" in str(caught.value)


def test_a_bug_is_not_disguised_as_a_clickhouse_error() -> None:
    store = BillingStore(Failing(KeyError("column")))  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.invoices(period=Period(2026, 1))
