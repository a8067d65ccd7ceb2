"""`gpumeter sql --tenant T` reaches T's rows and nothing else, whatever the query says."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gpumeter.query import execute
from gpumeter.tenant_guard import TenantQueryRefused
from kernel.clickhouse import ClickHouseError
from tests.integration.analytics.scenario import MODEL, START, insert_minutes, minutes

pytestmark = pytest.mark.integration

QUOTED = "o'x\"; DROP TABLE usage_minutely; --"
TENANTS = {"A": "job-a", "B": "job-b-SECRET", QUOTED: "job-quoted"}


@pytest.fixture
def fleet(clickhouse):  # type: ignore[no-untyped-def]
    # given three tenants, one with quotes and SQL in its name, each with its own job, and an
    # invoice per tenant whose lines carry a distinctive amount
    rows = []
    for i, (tenant, job) in enumerate(TENANTS.items()):
        rows += minutes(
            START,
            10 * (i + 1),
            tenant=tenant,
            job=job,
            gpu_uuid=f"g{i}",
            active_seconds=60,
            sm_util_sum=600.0,
            energy_mj=1_000,
        )
    insert_minutes(clickhouse, rows)
    clickhouse.insert(
        "invoices",
        [
            [
                f"inv-{i}",
                t,
                "2025-03",
                "finalized",
                f"N{i}",
                "USD",
                Decimal(i),
                Decimal(0),
                Decimal(i),
            ]
            for i, t in enumerate(TENANTS)
        ],
        column_names=[
            "invoice_id",
            "tenant",
            "period",
            "status",
            "number",
            "currency",
            "subtotal",
            "tax",
            "total",
        ],
    )
    clickhouse.insert(
        "invoice_lines",
        [
            [
                f"inv-{i}",
                t,
                "2025-03",
                1,
                "usage",
                MODEL,
                "",
                f"line of {job}",
                Decimal(1),
                "GPU-hour",
                Decimal(1),
                Decimal(f"{i}111.0000"),
            ]
            for i, (t, job) in enumerate(TENANTS.items())
        ],
        column_names=[
            "invoice_id",
            "tenant",
            "period",
            "line_no",
            "kind",
            "gpu_model",
            "billing_class",
            "description",
            "quantity",
            "unit",
            "unit_price",
            "amount",
        ],
    )
    return clickhouse


def test_a_tenant_sees_exactly_its_own_usage_and_invoices(fleet) -> None:  # type: ignore[no-untyped-def]
    r = execute(
        fleet, "SELECT sum(gpu_seconds), groupUniqArray(job) FROM tenant_usage_minutely", tenant="A"
    )
    assert r.rows == ((600, ["job-a"]),)  # 10 minutes x 60 s, only A's job
    r = execute(fleet, "SELECT job, gpu_hours FROM tenant_usage_daily;", tenant="B")
    assert r.rows == (("job-b-SECRET", pytest.approx(1200 / 3600)),)
    # the tenant name with quotes and SQL in it is just a value: it sees its own rows only
    r = execute(fleet, "SELECT DISTINCT job FROM tenant_usage_hourly", tenant=QUOTED)
    assert r.rows == (("job-quoted",),)
    r = execute(fleet, "SELECT number, total FROM tenant_invoices", tenant="A")
    assert r.rows == (("N0", Decimal("0")),)
    r = execute(
        fleet, "SELECT sum(amount) FROM tenant_invoice_lines l WHERE l.kind = 'usage'", tenant="B"
    )
    assert r.rows == ((Decimal("1111"),),)
    # a tenant that looks like an injection reaches nobody
    r = execute(fleet, "SELECT count() FROM tenant_usage_minutely", tenant="B' OR '1'='1")
    assert r.rows == ((0,),)


def _hostile(db: str) -> list[str]:
    return [
        "SELECT * FROM tenant_usage_daily UNION ALL SELECT * FROM usage_minutely",
        "SELECT job FROM tenant_usage_daily UNION DISTINCT SELECT job FROM usage_daily",
        "SELECT * FROM tenant_usage_daily(tenant = 'B')",
        "SELECT * FROM tenant_usage_daily ( tenant='B' )",
        "SELECT * FROM tenant_usage_daily WHERE job IN (SELECT job FROM usage_minutely)",
        "SELECT (SELECT any(job) FROM usage_minutely WHERE tenant = 'B')",
        "WITH x AS (SELECT * FROM usage_minutely) SELECT * FROM x",
        "SELECT * FROM tenant_invoices UNION ALL SELECT * FROM invoices",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1', currentDatabase(), 'usage_minutely')",
        "SELECT * FROM merge(currentDatabase(), '^usage_min')",
        "SELECT * FROM view(SELECT job FROM usage_minutely)",
        "SELECT * FROM numbers(3)",
        "SELECT * FROM input('x String')",
        "SELECT * FROM s3('http://x/y.csv')",
        f"SELECT * FROM {db}.usage_minutely",
        f"SELECT * FROM {db}.tenant_usage_daily",
        "SELECT * FROM system.tables",
        "SELECT name FROM system.columns",
        "SELECT * FROM `usage_minutely`",
        'SELECT * FROM "usage_minutely"',
        "SELECT 1; SELECT * FROM usage_minutely",
        "SELECT 1; DROP TABLE usage_minutely",
        "SELECT * FROM tenant_usage_daily -- WHERE tenant = 'A'\nUNION ALL SELECT * FROM usage_daily",
        "SELECT * FROM tenant_usage_daily /* */ UNION ALL SELECT * FROM usage_daily",
        "SELECT * FROM tenant_usage_daily # comment",
        "SELECT * FROM tenant_usage_daily SETTINGS param___gpumeter_tenant = 'B'",
        "SELECT {__gpumeter_tenant:String}",
        "SELECT $$usage_minutely$$",
        "SELECT dictGet('d', 'x', 1)",
        "SELECT joinGet('j', 'x', 1)",
        "SELECT * FROM tenant_usage_daily INTO OUTFILE '/tmp/leak.csv'",
        "SELECT * FROM tenant_usage_daily FORMAT CSV",
        "INSERT INTO usage_minutely SELECT * FROM usage_minutely",
        "DROP TABLE usage_minutely",
        "SHOW TABLES",
        "DESCRIBE usage_minutely",
        "EXPLAIN SELECT * FROM usage_minutely",
        "SELECT * FROM tenant_usage_daily AS t, usage_daily AS u",
        "SELECT * FROM tenant_usage_daily t JOIN usage_minutely m ON t.job = m.job",
        "SELECT * FROM cluster('default', currentDatabase(), usage_minutely)",
        "SELECT * FROM tenant_usage_minutely WHERE tenant = 'B'",  # no such column in the view
        "SELECT * FROM tenant_usage_minutely FINAL UNION ALL SELECT * FROM usage_minutely FINAL",
        "select * from USAGE_MINUTELY",
    ]


def test_hostile_queries_never_reach_another_tenant(fleet) -> None:  # type: ignore[no-untyped-def]
    for query in _hostile(fleet.database):
        try:
            result = execute(fleet, query, tenant="A")
        except ClickHouseError:
            continue  # refused by the guard or failed on the server: nothing leaked
        text = repr(result.rows)
        # anything that ran returned only A's data
        for other in ("job-b-SECRET", "job-quoted", "1111", "2111"):
            assert other not in text, (query, text)
    refused = 0
    for query in _hostile(fleet.database)[:-2]:
        with pytest.raises(ClickHouseError):
            execute(fleet, query, tenant="A")
        refused += 1
    assert refused >= 40


def test_refusals_say_why(fleet) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TenantQueryRefused, match="usage_minutely"):
        execute(
            fleet,
            "SELECT * FROM tenant_usage_daily UNION ALL SELECT * FROM usage_minutely",
            tenant="A",
        )
    with pytest.raises(TenantQueryRefused, match="no arguments"):
        execute(fleet, "SELECT * FROM tenant_usage_daily(tenant='B')", tenant="A")
    with pytest.raises(TenantQueryRefused, match="invalid tenant"):
        execute(fleet, "SELECT 1", tenant="__idle__")


def test_cli_tenant_mode_end_to_end(fleet, chdb_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from gpumeter.cli import main

    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", f"chdb://{chdb_path}")
    base = ["sql", "--database", fleet.database, "--tenant", "B", "--format", "json"]
    assert (
        main([*base, "SELECT job, sum(gpu_seconds) AS s FROM tenant_usage_minutely GROUP BY job"])
        == 0
    )
    assert capsys.readouterr().out.strip() == '[{"job": "job-b-SECRET", "s": 1200}]'
    assert main([*base, "SELECT * FROM usage_minutely"]) == 1
    assert "tenant mode reads only the tenant views" in capsys.readouterr().err
