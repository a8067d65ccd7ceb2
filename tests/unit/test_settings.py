"""Configuration: every bad entry reported at once, by its variable name; secrets hidden."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kernel.settings import SettingsError, load_settings


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
    env = {
        "GPUMETER_CLICKHOUSE_PASSWORD": "hunter2",
        "GPUMETER_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    ok = subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", "check"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "hunter2" not in ok.stdout and "configuration OK" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", "check"],
        env={**env, "GPUMETER_RAW_TTL_DAYS": "-1"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "GPUMETER_RAW_TTL_DAYS" in bad.stderr


# --- DSNs: parsed strictly, no silent defaults, secrets redacted ------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected_in_message"),
    [
        ("chdb://", "chdb:///absolute/path"),  # would open a database in the current directory
        ("chdb:///", "chdb:///absolute/path"),
        ("chdb://foo/tmp/x", "'foo'"),  # would silently drop foo
        ("chdb://relative", "'relative'"),
        ("chdb:///tmp/x?mode=ro", "no query"),
        ("http://", "no host"),  # would fall back to localhost:8123
        ("https://:8443/db", "no host"),
        ("http://ch.example/db", "no port"),
        ("http://ch.example:8123/a/b", "one database name"),
        ("http://ch.example:notaport", "not a valid URL"),
        ("mysql://db", "unknown scheme"),
    ],
)
def test_a_bad_dsn_is_a_configuration_error_naming_the_variable_and_the_format(
    monkeypatch: pytest.MonkeyPatch, dsn: str, expected_in_message: str
) -> None:
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", dsn)
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "GPUMETER_CLICKHOUSE_DSN" in text and expected_in_message in text


def test_good_dsns_parse_into_their_parts() -> None:
    from kernel.dsn import parse_clickhouse_dsn

    embedded = parse_clickhouse_dsn("chdb:///var/lib/gpumeter/clickhouse")
    assert embedded.embedded and str(embedded.path) == "/var/lib/gpumeter/clickhouse"
    server = parse_clickhouse_dsn("https://gpumeter@ch-0.ch.svc:8443/ledger?compress=1")
    assert (server.scheme, server.host, server.port, server.username, server.database) == (
        "https",
        "ch-0.ch.svc",
        8443,
        "gpumeter",
        "ledger",
    )
    assert server.render(redact=False) == "https://gpumeter@ch-0.ch.svc:8443/ledger?compress=1"


@pytest.mark.parametrize(
    "dsn",
    [
        "http://bob:hunter2@ch.example:8123/db",
        "https://bob@ch.example:8443/db?password=hunter2&compress=1",
        "http://ch.example:8123/db?access_token=hunter2",
        "http://bob:hunter2@:8123/db",  # malformed, and still redacted in the error message
    ],
)
def test_secrets_inside_a_dsn_are_never_shown(dsn: str) -> None:
    from kernel.dsn import parse_clickhouse_dsn, redact_dsn

    assert "hunter2" not in redact_dsn(dsn)
    try:
        parsed = parse_clickhouse_dsn(dsn)
    except ValueError as exc:
        assert "hunter2" not in str(exc)
    else:
        assert "hunter2" not in str(parsed) and "hunter2" not in repr(parsed)
        assert "hunter2" in parsed.render(redact=False)  # what the driver is given


def test_settings_repr_and_redacted_dump_hide_every_secret(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", "http://bob:dsnpw@ch.example:8123/db")
    monkeypatch.setenv("GPUMETER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_USERNAME", "meter")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_PASSWORD", "kafkapw")
    settings = load_settings()
    for shown in (repr(settings), str(settings), str(settings.redacted())):
        assert "dsnpw" not in shown and "kafkapw" not in shown
    assert settings.redacted()["kafka_sasl_username"] == "meter"


def test_password_in_the_dsn_and_in_the_variable_is_ambiguous(monkeypatch) -> None:
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", "http://bob:a@ch.example:8123/db")
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_PASSWORD", "b")
    with pytest.raises(SettingsError, match="GPUMETER_CLICKHOUSE_DSN: has a password"):
        load_settings()


def test_connect_refuses_a_dsn_it_cannot_parse_instead_of_guessing(tmp_path, monkeypatch) -> None:
    from kernel.clickhouse import ClickHouseError, connect

    # given a working directory where `chdb://` used to create a database
    monkeypatch.chdir(tmp_path)
    for dsn in ("chdb://", "chdb://foo/tmp/x", "http://"):
        with pytest.raises(ClickHouseError, match="invalid ClickHouse DSN"):
            connect(dsn)
    assert list(tmp_path.iterdir()) == []  # nothing was opened or created


# --- data directory, bootstrap, unknown variables ------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "file", "is not a directory"),
        (lambda d: d / "file" / "below", "is a file"),
    ],
)
def test_a_data_dir_that_cannot_be_used_is_a_clear_error(tmp_path, monkeypatch, make, message):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("GPUMETER_DATA_DIR", str(make(tmp_path)))
    with pytest.raises(SettingsError, match=f"GPUMETER_DATA_DIR: .*{message}"):
        load_settings()


def test_an_unwritable_data_dir_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: the permission check cannot fail")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("GPUMETER_DATA_DIR", str(locked / "data"))
    with pytest.raises(SettingsError, match="GPUMETER_DATA_DIR: .*not writable"):
        load_settings()


def test_data_dir_through_the_cli_is_an_error_not_a_traceback(tmp_path) -> None:
    env = {"GPUMETER_DATA_DIR": "/etc/passwd", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", "check"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "GPUMETER_DATA_DIR: /etc/passwd exists and is not a directory" in run.stderr


def test_unknown_variables_are_reported_with_a_suggestion_together_with_other_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a typo, a made-up setting, a bad value, and a job's allocation variables
    monkeypatch.setenv("GPUMETER_KAFKA_BOOSTRAP", "kafka:9092")
    monkeypatch.setenv("GPUMETER_COLOUR", "blue")
    monkeypatch.setenv("GPUMETER_GRACE_SECONDS", "soon")
    monkeypatch.setenv("GPUMETER_TENANT", "acme")  # a job's variable (agents/attribution.py)
    # when the settings load
    with pytest.raises(SettingsError) as err:
        load_settings()
    # then every problem is listed at once, typos with a suggestion
    text = str(err.value)
    assert (
        "GPUMETER_KAFKA_BOOSTRAP: not a gpumeter setting; did you mean GPUMETER_KAFKA_BOOTSTRAP?"
        in text
    )
    assert "GPUMETER_COLOUR: not a gpumeter setting" in text
    assert "GPUMETER_GRACE_SECONDS" in text
    assert "GPUMETER_TENANT" not in text


def test_an_injected_environment_is_scanned_instead_of_the_process_one() -> None:
    from kernel.settings import unknown_variables

    assert unknown_variables({"GPUMETER_DATA_DIRR": "x", "HOME": "/root"}) == [
        "  GPUMETER_DATA_DIRR: not a gpumeter setting; did you mean GPUMETER_DATA_DIR?"
    ]


def test_check_hides_a_password_inside_the_dsn(tmp_path) -> None:
    env = {
        "GPUMETER_CLICKHOUSE_DSN": "http://bob:hunter2@ch.example:8123/db?password=hunter2",
        "GPUMETER_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    ok = subprocess.run(
        [sys.executable, "-m", "gpumeter.cli", "check"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "hunter2" not in ok.stdout + ok.stderr and "bob:***@ch.example:8123" in ok.stdout


def test_cross_field_problems_are_reported_together_with_bad_values(monkeypatch) -> None:
    # given a bad value in one variable and an incomplete SASL configuration
    monkeypatch.setenv("GPUMETER_GRACE_SECONDS", "soon")
    monkeypatch.setenv("GPUMETER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GPUMETER_KAFKA_RETENTION_DAYS", "7")
    # when the settings load, then both kinds are in the one error
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "GPUMETER_GRACE_SECONDS" in text
    assert "GPUMETER_KAFKA_SASL_PASSWORD: required with" in text
    assert "GPUMETER_KAFKA_RETENTION_DAYS: 7 days cannot rebuild" in text


def test_a_cross_field_line_about_an_invalid_variable_is_not_invented(monkeypatch) -> None:
    # given an invalid protocol and SASL settings that would only be wrong for PLAINTEXT
    monkeypatch.setenv("GPUMETER_KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_USERNAME", "meter")
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "GPUMETER_KAFKA_SECURITY_PROTOCOL" in text
    assert "set, but" not in text  # the protocol's default stood in; nothing blamed on it
