"""Configuration: every bad entry reported at once, by its variable name; secrets hidden."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpumeter.settings import SettingsError, load_settings


def test_every_bad_variable_is_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUMETER_USAGE_PARTITIONS", "0")
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", "mysql://db")
    monkeypatch.setenv("GPUMETER_GRACE_SECONDS", "soon")
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    for name in ("GPUMETER_USAGE_PARTITIONS", "GPUMETER_CLICKHOUSE_DSN", "GPUMETER_GRACE_SECONDS"):
        assert name in text


def test_default_dsn_is_the_embedded_engine_under_the_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GPUMETER_CLICKHOUSE_DSN", raising=False)
    assert load_settings().resolved_clickhouse_dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_check_command_hides_secrets_and_fails_on_bad_config(tmp_path) -> None:
    env = {"GPUMETER_CLICKHOUSE_PASSWORD": "hunter2", "GPUMETER_DATA_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "gpumeter.cli", "check"], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "hunter2" not in ok.stdout and "configuration OK" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "gpumeter.cli", "check"],
                         env={**env, "GPUMETER_RAW_TTL_DAYS": "-1"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "GPUMETER_RAW_TTL_DAYS" in bad.stderr
