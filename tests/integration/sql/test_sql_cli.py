"""`gpumeter sql`: one-shot in three formats, server errors with code, and the prompt."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gpumeter.cli import main
from gpumeter.prompt import repl

pytestmark = pytest.mark.integration

QUERY = (
    "SELECT 1 AS n, toDecimal64(2.50, 2) AS price, toDateTime('2025-03-01 00:00:00', 'UTC') "
    "AS ts, 'a,b' AS s, CAST(NULL AS Nullable(String)) AS missing"
)


@pytest.fixture
def sql(clickhouse, chdb_path: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", f"chdb://{chdb_path}")

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(["sql", "--database", clickhouse.database, *argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def test_formats(sql) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = sql("--format", "json", QUERY)
    assert rc == 0
    assert json.loads(out) == [
        {"n": 1, "price": "2.50", "ts": "2025-03-01T00:00:00", "s": "a,b", "missing": None}
    ]
    rc, out, _ = sql("--format", "csv", QUERY)
    assert list(csv.reader(io.StringIO(out))) == [
        ["n", "price", "ts", "s", "missing"],
        ["1", "2.50", "2025-03-01T00:00:00", "a,b", ""],
    ]
    rc, out, _ = sql(QUERY)
    assert rc == 0 and "price" in out and "2.50" in out and "1 row" in out


def test_server_error_keeps_code_and_exits_1(sql) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = sql("SELECT * FROM no_such_table")
    assert rc == 1
    assert "ClickHouse error 60 UNKNOWN_TABLE" in err and "no_such_table" in err


def test_views_of_every_migration_answer(sql) -> None:  # type: ignore[no-untyped-def]
    for view in (
        "usage_hourly",
        "usage_daily",
        "gpu_utilization_hourly",
        "utilization_daily",
        "idle_capacity_daily",
    ):
        rc, out, err = sql("--format", "json", f"SELECT count() AS c FROM {view}")
        assert (rc, json.loads(out)) == (0, [{"c": 0}]), err


def test_prompt_runs_statements_and_backslash_commands(clickhouse, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = repl(
        clickhouse,
        fmt="csv",
        lines=["SELECT 41 + 1", "AS answer;", "\\d", "\\q", "SELECT 'not reached'"],
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "answer\n42\n" in out
    assert "usage_minutely" in out and "utilization_daily" in out  # \d lists tables
    assert "not reached" not in out


def test_prompt_in_tenant_mode_lists_only_tenant_views(clickhouse, capsys) -> None:  # type: ignore[no-untyped-def]
    repl(clickhouse, fmt="csv", tenant="A", lines=["\\d"])
    out = capsys.readouterr().out
    assert "tenant_usage_daily" in out and "\nusage_minutely," not in out


def test_script_stops_at_first_error(clickhouse, capsys) -> None:  # type: ignore[no-untyped-def]
    assert repl(clickhouse, fmt="csv", lines=["SELECT nope;", "SELECT 2;"]) == 1
    captured = capsys.readouterr()
    assert "UNKNOWN_IDENTIFIER" in captured.err and "2" not in captured.out
