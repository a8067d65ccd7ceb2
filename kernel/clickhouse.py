"""One way to open ClickHouse: ``chdb:///dir`` (embedded engine, in-process) or http(s) server.

The embedded engine is in-process and locks its data directory: only one process may open it
at a time. That failure is turned into a message that says what to do.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as DriverError

from kernel.dsn import ClickHouseDsn, parse_clickhouse_dsn
from kernel.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_CODE = re.compile(r"Code:\s*(\d+)")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


class ClickHouseError(RuntimeError):
    """Opening or querying ClickHouse failed; keeps the server's code and name when known
    (``code`` 60, ``name`` ``UNKNOWN_TABLE``), as clickhouse-connect's own errors do."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name

    @classmethod
    def from_driver(cls, exc: Exception) -> ClickHouseError:
        """The driver's error with the server's code, name and own message (``Code: 60. ...``);
        the HTTP driver's preamble before ``Code:`` is dropped. Raise it ``from exc``."""
        msg = str(exc)
        code = getattr(exc, "code", None)
        if code is None and (m := _CODE.search(msg)):
            code = int(m.group(1))
        name_match = _NAME.search(msg)
        start = msg.find("Code:")
        body = (msg[start:] if start >= 0 else msg).split("\n")[0].strip()
        return cls(
            body,
            code=int(code) if code is not None else None,
            name=name_match.group(1) if name_match else None,
        )

    def render(self) -> str:
        """``ClickHouse error 60 UNKNOWN_TABLE: <message>``; the message alone without a code."""
        if self.code is None:
            return str(self)
        label = f"{self.code} {self.name}" if self.name else str(self.code)
        return f"ClickHouse error {label}: {self}"


def connect(
    dsn: str,
    *,
    database: str | None = None,
    password: str | None = None,
    cluster: str | None = None,
) -> Client:
    """Open a client; with ``database``, create it if missing and make it the default (on
    every node of ``cluster`` when given: ``CREATE DATABASE ... ON CLUSTER``).

    The DSN is parsed strictly first (``chdb:///absolute/path`` or
    ``http(s)://user@host:port/db``): nothing is defaulted, so a typo cannot open a database in
    the current directory or on localhost. Embedded engine limits (chDB): one data directory
    per process for the process's lifetime, and one process per data directory at a time
    (closing every client releases it).
    """
    try:
        parsed = parse_clickhouse_dsn(dsn)
    except ValueError as exc:
        raise ClickHouseError(f"invalid ClickHouse DSN: {exc}") from None
    client = _open_embedded(parsed) if parsed.embedded else _open_server(parsed, password)
    if database:
        if not _IDENT.match(database):
            raise ClickHouseError(f"invalid database name {database!r}")
        if cluster is not None and not _IDENT.match(cluster):
            raise ClickHouseError(f"invalid cluster name {cluster!r}")
        on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
        if (
            cluster
            and not client.query(
                "SELECT count() FROM system.clusters WHERE cluster = {c:String}",
                parameters={"c": cluster},
            ).result_rows[0][0]
        ):
            raise ClickHouseError(
                f"cluster {cluster!r} is not defined on this server (system.clusters): define it "
                "under <remote_servers> in the server configuration (infra/OPERATIONS.md)"
            )
        try:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")
        except DriverError as exc:
            raise ClickHouseError(f"cannot create database {database}{on_cluster}: {exc}") from exc
        client.database = database
    return client


def connect_configured(
    settings: Settings, database: str | None = None, *, cluster: str | None = None
) -> Client:
    """Open the ClickHouse the settings point at (DSN and password), optionally a database
    (created on every node of ``cluster`` when given)."""
    password = (
        settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
    )
    if cluster and database is None:
        database = settings.clickhouse.database  # created ON CLUSTER, not only on one node
    return connect(
        settings.resolved_clickhouse_dsn, database=database, password=password, cluster=cluster
    )


def _open_embedded(dsn: ClickHouseDsn) -> Client:
    assert dsn.path is not None
    path = dsn.path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClickHouseError(
            f"cannot create the embedded ClickHouse data directory {path}: {exc.strerror}"
        ) from exc
    in_use = ClickHouseError(
        f"the embedded ClickHouse data directory {path} is in use by another process "
        "(a gpumeter worker or demo). The embedded engine allows one process at a time: "
        "wait for it to finish or stop it, then retry; or run a ClickHouse server and set "
        "GPUMETER_CLICKHOUSE_DSN=http://host:8123."
    )
    if _locked_by_other_process(path):
        raise in_use
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except (DriverError, OSError, RuntimeError) as exc:  # chDB raises RuntimeError
        if "Cannot lock file" in str(exc):  # lost the race with another process's open
            raise in_use from exc
        raise ClickHouseError(f"cannot open embedded ClickHouse at {path}: {exc}") from exc


def _open_server(dsn: ClickHouseDsn, password: str | None) -> Client:
    if password is not None and dsn.password is not None:
        raise ClickHouseError(f"the DSN {dsn} has a password and one was passed too: give it once")
    url = dsn.render(redact=False)
    try:
        if password is None:
            return clickhouse_connect.get_client(dsn=url)
        return clickhouse_connect.get_client(dsn=url, password=password)
    except (DriverError, OSError) as exc:
        # The driver's message may quote the DSN it was given: redact that too.
        detail = str(exc).replace(url, str(dsn))
        if dsn.password:
            detail = detail.replace(dsn.password, "***")
        raise ClickHouseError(f"cannot connect to ClickHouse at {dsn}: {detail}") from None


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
