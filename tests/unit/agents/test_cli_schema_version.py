"""``gpumeter agent --schema-version``: which contract the records follow, checked at parse
time, and the sources that need contract v2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agents.agent import DEFAULT_SCHEMA_VERSION
from agents.cli import register, run
from kernel.settings import Settings


def parse(argv: list[str]) -> argparse.Namespace:
    root = argparse.ArgumentParser(prog="gpumeter")
    register(root.add_subparsers(dest="command"))
    return root.parse_args(["agent", *argv])


def test_the_default_and_both_versions_parse() -> None:
    assert parse(["--simulate"]).schema_version == DEFAULT_SCHEMA_VERSION
    assert parse(["--simulate", "--schema-version", "1"]).schema_version == 1
    assert parse(["--simulate", "--schema-version", "2"]).schema_version == 2


@pytest.mark.parametrize("bad", ["0", "3", "v2", ""])
def test_an_unknown_version_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--simulate", "--schema-version", bad])
    assert exc.value.code == 2 and "--schema-version" in capsys.readouterr().err


def test_openb_replay_with_v1_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["--openb", str(tmp_path / "pods.csv"), "--schema-version", "1"])
    with pytest.raises(SystemExit) as exc:
        run(args, Settings(data_dir=tmp_path))
    assert exc.value.code == 2 and "--schema-version 2" in capsys.readouterr().err


def test_help_documents_the_v1_release() -> None:
    root = argparse.ArgumentParser(prog="gpumeter")
    register(root.add_subparsers(dest="command"))
    text = root._subparsers._group_actions[0].choices["agent"].format_help()  # type: ignore[union-attr]
    assert "--schema-version" in text and "one release" in text


def test_simulated_shares_with_v1_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["--simulate", "--shares", "--schema-version", "1"])
    with pytest.raises(SystemExit) as exc:
        run(args, Settings(data_dir=tmp_path))
    assert exc.value.code == 2 and "--shares" in capsys.readouterr().err


def test_simulated_shares_need_three_gpus_per_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["--simulate", "--shares", "--gpus", "2"])
    with pytest.raises(SystemExit) as exc:
        run(args, Settings(data_dir=tmp_path))
    assert exc.value.code == 2 and "--gpus 3" in capsys.readouterr().err
