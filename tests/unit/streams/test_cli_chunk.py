"""`gpumeter worker --chunk-records`: the chunk size reaches the Faust app, bad values are
refused naming the option."""

from __future__ import annotations

import pytest

from gpumeter.cli import build_parser
from streams.app import WorkerConfig
from streams.cli import DEFAULT_CHUNK_RECORDS


def test_the_default_is_the_apps() -> None:
    args = build_parser().parse_args(["worker"])
    assert args.chunk_records == DEFAULT_CHUNK_RECORDS == WorkerConfig.chunk_records


def test_a_chunk_size_is_parsed() -> None:
    assert build_parser().parse_args(["worker", "--chunk-records", "400"]).chunk_records == 400


@pytest.mark.parametrize("bad", ["0", "-1", "10001", "1.5", "many"])
def test_a_bad_chunk_size_is_refused_naming_the_option(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["worker", "--chunk-records", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--chunk-records" in err and "1..10000" in err
