"""Every argument of ``gpumeter agent`` is range-checked: a message and exit status 2, never a
traceback."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from agents.cli import register
from agents.options import parse_duration, parse_since


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gpumeter")
    register(root.add_subparsers(dest="command"))
    return root


BAD = [
    (["--nodes", "-1"], "--nodes"),
    (["--nodes", "0"], "--nodes"),
    (["--nodes", "two"], "--nodes"),
    (["--gpus", "0"], "--gpus"),
    (["--gpus", "65"], "--gpus"),
    (["--spool-max-mb", "0"], "--spool-max-mb"),
    (["--spool-max-mb", "-5"], "--spool-max-mb"),
    (["--duration", "0"], "--duration"),
    (["--duration", "0s"], "--duration"),
    (["--duration", "-1h"], "--duration"),
    (["--duration", "400d"], "--duration"),
    (["--duration", "1x"], "--duration"),
    (["--speed", "0"], "--speed"),
    (["--speed", "-3"], "--speed"),
    (["--speed", "nan"], "--speed"),
    (["--speed", "inf"], "--speed"),
    (["--flush-every", "0"], "--flush-every"),
    (["--flush-every", "3601"], "--flush-every"),
    (["--max-gpus", "0"], "--max-gpus"),
    (["--start", "2001-01-01"], "--start"),
    (["--start", "2999-01-01"], "--start"),
    (["--start", "yesterday-ish"], "--start"),
    (["--retain", "8d"], "--retain"),
    (["--clock-warn", "0"], "--clock-warn"),
    (["--clock-warn", "nan"], "--clock-warn"),
    (["--bootstrap", "not a host"], "--bootstrap"),
    (["--bootstrap", "kafka"], "--bootstrap"),
    (["--bootstrap", "kafka:0"], "--bootstrap"),
    (["--bootstrap", "kafka:99999"], "--bootstrap"),
    (["--topic", "bad topic"], "--topic"),
    (["--node-id", ""], "--node-id"),
    (["--node-id", "a/b"], "--node-id"),
    (["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize(("argv", "name"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_out_of_range_arguments_get_a_message(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["agent", "--simulate", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {name}" in err and "Traceback" not in err


def test_good_arguments_parse() -> None:
    args = parser().parse_args(
        [
            "agent",
            "--simulate",
            "--nodes",
            "1",
            "--gpus",
            "8",
            "--spool-max-mb",
            "1",
            "--duration",
            "1h30m",
            "--speed",
            "max",
            "--retain",
            "0",
            "--bootstrap",
            "k1:9092,10.0.0.2:9093",
            "--start",
            "2026-11-20",
        ]
    )
    assert (args.nodes, args.spool_max_mb, args.duration, args.speed, args.retain) == (
        1,
        1,
        5400,
        None,
        0,
    )


def test_parse_duration_stays_usable_by_the_demo() -> None:
    assert (
        parse_duration("90s") == 90
        and parse_duration("6h") == 21600
        and parse_duration("1d") == 86400
    )
    assert parse_duration("45") == 45
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("0")


NOW = datetime(2026, 11, 28, 17, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20 10:00:05", datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)),
        ("2026-11-20T10:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T12:00+02:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("today", datetime(2026, 11, 28, tzinfo=UTC)),
        ("yesterday", datetime(2026, 11, 27, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 28, 15, 30, tzinfo=UTC)),
        ("90m ago", datetime(2026, 11, 28, 16, tzinfo=UTC)),
        ("1763632800", datetime(2025, 11, 20, 10, tzinfo=UTC)),
    ],
)
def test_resend_since_is_parsed_in_a_friendly_way(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == int(expected.timestamp())


def test_resend_needs_since(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["agent", "resend"])
    assert "--since" in capsys.readouterr().err
