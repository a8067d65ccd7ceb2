"""The tenant guard's lexical layer, without a server: a fake client answers the catalog query.

The server-side layers (EXPLAIN QUERY TREE, readonly execution) and hostile queries against a
real engine are in tests/integration/sql/test_tenant_guard.py."""

from __future__ import annotations

from typing import Any

import pytest

from gpumeter.tenant_guard import TENANT_VIEWS, TenantQueryRefused, check_tenant_query
from kernel.clickhouse import ClickHouseError
from kernel.names import IDLE_TENANT


class _Result:
    def __init__(self, rows: list[tuple[str, str]]) -> None:
        self.result_rows = rows


class FakeCatalog:
    """Answers the guard's one catalog query: tables here, databases, table functions."""

    def __init__(self) -> None:
        self.tables = [*TENANT_VIEWS, "usage_minutely", "invoices"]

    def query(self, sql: str, **_: Any) -> _Result:
        rows = [("t", n) for n in self.tables]
        rows += [("d", "default"), ("d", "system")]
        rows += [("f", "file"), ("f", "url"), ("f", "remote")]
        return _Result(rows)


def test_a_tenant_view_is_bound_to_the_tenant_as_a_parameter() -> None:
    # given a plain SELECT over a tenant view
    # when it is checked for tenant "acme"
    sql, params = check_tenant_query(FakeCatalog(), "SELECT * FROM tenant_usage_daily;", "acme")  # type: ignore[arg-type]
    # then the view is called with the tenant parameter, and the tenant is never in the SQL text
    assert sql == "SELECT * FROM tenant_usage_daily(tenant = {__gpumeter_tenant:String})"
    assert params == {"__gpumeter_tenant": "acme"}


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("SELECT * FROM usage_minutely", "usage_minutely"),
        ("SELECT * FROM tenant_usage_daily(tenant='B')", "no arguments"),
        ("SELECT * FROM default.tenant_usage_daily", "default"),
        ("SELECT * FROM system.tables", "system"),
        ("SELECT * FROM file('x.csv')", "file"),
        ("SELECT dictGet('d', 'x', 1)", "dictGet"),
        ("SELECT 1; DROP TABLE invoices", "';'"),
        ("SELECT 1 -- comment", "comments"),
        ("SELECT * FROM `usage_minutely`", "'`'"),
        ("SELECT 1 SETTINGS readonly=0", "SETTINGS"),
        ("INSERT INTO invoices VALUES (1)", "single SELECT"),
    ],
)
def test_anything_but_the_tenant_views_is_refused_with_the_reason(query: str, why: str) -> None:
    with pytest.raises(TenantQueryRefused, match=why):
        check_tenant_query(FakeCatalog(), query, "acme")  # type: ignore[arg-type]


@pytest.mark.parametrize("tenant", ["", IDLE_TENANT, "x" * 129])
def test_reserved_empty_or_overlong_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(TenantQueryRefused, match="invalid tenant"):
        check_tenant_query(FakeCatalog(), "SELECT 1", tenant)  # type: ignore[arg-type]


def test_a_refusal_is_a_clickhouse_error_without_a_server_code() -> None:
    # callers (the CLI, the prompt) catch one type; a refusal never reached the server
    err = TenantQueryRefused("no")
    assert isinstance(err, ClickHouseError) and err.code is None and err.render() == "no"


def test_driver_errors_keep_the_server_code_and_name() -> None:
    exc = RuntimeError(
        "HTTPDriver for http://h:8123 received ClickHouse error code 60\n"
        " Code: 60. DB::Exception: Unknown table expression identifier "
        "'nope'. (UNKNOWN_TABLE) (version 25.1)"
    )
    err = ClickHouseError.from_driver(exc)
    assert (err.code, err.name) == (60, "UNKNOWN_TABLE")
    assert str(err).startswith("Code: 60. DB::Exception")
    assert err.render().startswith("ClickHouse error 60 UNKNOWN_TABLE: Code: 60.")
