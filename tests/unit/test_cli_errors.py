"""Each context's error root (and the kernel's errors) reaches the user as one line, exit 1."""

from __future__ import annotations

import argparse

import pytest

import gpumeter.cli as cli
from agents.errors import AgentError
from analytics.errors import AnalyticsError
from billing.errors import BillingError
from kernel.clickhouse import ClickHouseError
from kernel.settings import SettingsError
from schemas.errors import SchemaError
from streams.errors import StreamError


@pytest.mark.parametrize(
    "error",
    [
        AgentError("the spool is in use"),
        AnalyticsError("no such register"),
        BillingError("period 2026-13 is not a month"),
        SchemaError("migration 0003 changed"),
        StreamError("the sink failed"),
        ClickHouseError("Code: 60. unknown table", code=60, name="UNKNOWN_TABLE"),
        SettingsError("GPUMETER_X: unknown"),
    ],
)
def test_an_error_root_is_a_message_and_exit_status_1(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: argparse.Namespace, _settings: object) -> int:
        raise error

    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="gpumeter")
        parser.add_subparsers(dest="command").add_parser("boom").set_defaults(handler=fail)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err == f"gpumeter boom: {error}\n"
    assert "Traceback" not in err
