"""One way to open ClickHouse: ``chdb:///dir`` (embedded engine, in-process) or http(s) server.

The embedded engine is in-process and locks its data directory: only one process may open it
at a time. That failure is turned into a message that says what to do.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from gpumeter.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseError(RuntimeError):
    """Opening or querying ClickHouse failed; keeps the server's code and name when known."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


def connect(dsn: str, *, database: str | None = None, password: str | None = None) -> Client:
    """Open a client; with ``database``, create it if missing and make it the default.

    Embedded engine limits (chDB): one data directory per process for the process's lifetime,
    and one process per data directory at a time (closing every client releases it).
    """
    client = _open_embedded(dsn) if dsn.startswith("chdb://") else _open_server(dsn, password)
    if database:
        if not _IDENT.match(database):
            raise ClickHouseError(f"invalid database name {database!r}")
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.database = database
    return client


def connect_configured(settings: Settings, database: str | None = None) -> Client:
    """Open the ClickHouse the settings point at (DSN and password), optionally a database."""
    password = settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
    return connect(settings.resolved_clickhouse_dsn, database=database, password=password)


def _open_embedded(dsn: str) -> Client:
    path = Path(urlparse(dsn).path or dsn.removeprefix("chdb://")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if _locked_by_other_process(path):
        raise ClickHouseError(
            f"the embedded ClickHouse data directory {path} is in use by another process "
            "(a gpumeter worker or demo). The embedded engine allows one process at a time: "
            "wait for it to finish or stop it, then retry; or run a ClickHouse server and set "
            "GPUMETER_CLICKHOUSE_DSN=http://host:8123."
        )
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except Exception as exc:
        raise ClickHouseError(f"cannot open embedded ClickHouse at {path}: {exc}") from exc


def _open_server(dsn: str, password: str | None) -> Client:
    kwargs: dict[str, str] = {"dsn": dsn}
    if password is not None:
        kwargs["password"] = password
    try:
        return clickhouse_connect.get_client(**kwargs)
    except Exception as exc:
        raise ClickHouseError(f"cannot connect to ClickHouse at {_redact(dsn)}: {exc}") from exc


def _locked_by_other_process(path: Path) -> bool:
    """chDB holds an flock on ``<dir>/status`` while open. Probe it without blocking."""
    status = path / "status"
    if not status.exists():
        return False
    fd = os.open(status, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        # Busy. It may be this very process (an open client); chDB allows that.
        return not _this_process_holds(path, probe_fd=fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _this_process_holds(path: Path, probe_fd: int) -> bool:
    for fd_link in Path("/proc/self/fd").iterdir():
        if fd_link.name == str(probe_fd):
            continue
        try:
            if os.readlink(fd_link) == str(path / "status"):
                return True
        except OSError:
            continue
    return False


def _redact(dsn: str) -> str:
    u = urlparse(dsn)
    if u.password:
        return dsn.replace(f":{u.password}@", ":***@")
    return dsn
