"""Addresses of the two services, parsed strictly: the ClickHouse DSN (``chdb:///path`` or
``http(s)://user@host:port/db``) and the Kafka bootstrap list (``host:port[,host:port]``).

Nothing is defaulted (a typo cannot open a database in the current directory or on
localhost), and the messages that reject a DSN never show its password.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
#: Query parameters of a DSN whose values are secrets (clickhouse-connect passes unknown
#: parameters on as settings, so a password can arrive this way too).
_SECRET_PARAM = re.compile(r"pass|secret|token|key|credential", re.I)
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CHDB_EXPECTED = "chdb:///absolute/path"
HTTP_EXPECTED = "http(s)://user@host:port/database"


@dataclass(frozen=True)
class ClickHouseDsn:
    """A parsed, validated ClickHouse DSN. ``path`` for the embedded engine, the rest for a
    server. ``str()`` gives the DSN with every secret replaced by ``***``."""

    scheme: Literal["chdb", "http", "https"]
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @property
    def embedded(self) -> bool:
        return self.scheme == "chdb"

    def __str__(self) -> str:
        return self.render(redact=True)

    def __repr__(self) -> str:
        return f"ClickHouseDsn({self.render(redact=True)!r})"

    def render(self, *, redact: bool = True) -> str:
        if self.embedded:
            return f"chdb://{self.path}"
        userinfo = ""
        if self.username is not None:
            userinfo = self.username
            if self.password is not None:
                userinfo += ":" + (REDACTED if redact else self.password)
            userinfo += "@"
        query = urlencode(
            [(k, REDACTED if redact and _SECRET_PARAM.search(k) else v) for k, v in self.query],
            safe="*",
        )
        path = f"/{self.database}" if self.database else ""
        return urlunsplit((self.scheme, f"{userinfo}{self.host}:{self.port}", path, query, ""))


def parse_clickhouse_dsn(dsn: str) -> ClickHouseDsn:
    """Parse strictly; raise ``ValueError`` saying what is expected. No part is defaulted:
    an empty path, a stray host or a missing host is an error, not "the current directory" or
    "localhost". Error messages show the DSN redacted."""
    shown = redact_dsn(dsn)
    try:
        u = urlsplit(dsn.strip())
        port = u.port
    except ValueError as exc:
        raise ValueError(f"{shown!r} is not a valid URL ({exc})") from exc
    if u.scheme == "chdb":
        if u.netloc:
            raise ValueError(
                f"{shown!r} has {u.netloc!r} where {CHDB_EXPECTED} has nothing "
                "(three slashes: chdb:// then an absolute path)"
            )
        if not u.path or not u.path.startswith("/") or u.path.rstrip("/") == "":
            raise ValueError(f"{shown!r} has no directory; expected {CHDB_EXPECTED}")
        if u.query or u.fragment:
            raise ValueError(f"{shown!r}: no query or fragment allowed; expected {CHDB_EXPECTED}")
        return ClickHouseDsn("chdb", path=Path(u.path))
    if u.scheme in ("http", "https"):
        if not u.hostname:
            raise ValueError(f"{shown!r} has no host; expected {HTTP_EXPECTED}")
        if port is None:
            raise ValueError(
                f"{shown!r} has no port; expected {HTTP_EXPECTED} (8123 for http, 8443 for https "
                "on a default server)"
            )
        if port == 0:
            raise ValueError(f"{shown!r}: port 0 is not a port")
        database = u.path.strip("/") or None
        if database is not None and not _IDENT.match(database):
            raise ValueError(
                f"{shown!r}: the path must be one database name (letters, digits, _), "
                f"got {database!r}; expected {HTTP_EXPECTED}"
            )
        if u.fragment:
            raise ValueError(f"{shown!r}: no fragment allowed; expected {HTTP_EXPECTED}")
        return ClickHouseDsn(
            u.scheme,  # type: ignore[arg-type]
            host=u.hostname,
            port=port,
            username=u.username or None,
            password=u.password,
            database=database,
            query=tuple(parse_qsl(u.query, keep_blank_values=True)),
        )
    raise ValueError(
        f"{shown!r}: unknown scheme {u.scheme!r}; expected {CHDB_EXPECTED} or {HTTP_EXPECTED}"
    )


def redact_dsn(dsn: str) -> str:
    """The DSN with the userinfo password and secret-looking query values replaced by ``***``.
    Works on malformed DSNs too (it is used in the messages that reject them)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return _redact_query(dsn)
    netloc, slash, tail = rest.partition("/")
    if "?" in netloc and not slash:  # http://u:p@h?x=y
        netloc, q, tail = netloc.partition("?")
        tail, slash = q + tail, "?"
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + REDACTED
        netloc = f"{userinfo}@{hostport}"
    return f"{scheme}{sep}{netloc}{slash}{_redact_query(tail)}"


def _redact_query(text: str) -> str:
    base, q, query = text.partition("?")
    if not q:
        return text
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        parts.append(f"{key}={REDACTED}" if eq and _SECRET_PARAM.search(key) else item)
    return f"{base}?{'&'.join(parts)}"


def parse_bootstrap(value: str) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` -> [(host, port)]; IPv6 hosts in brackets. ``ValueError``
    names the first bad entry."""
    entries = [e.strip() for e in value.split(",")]
    if not value.strip() or any(not e for e in entries):
        raise ValueError(f"{value!r}: expected host:port[,host:port] with no empty entries")
    out = []
    for entry in entries:
        if "://" in entry:
            raise ValueError(f"{entry!r}: no scheme; expected host:port[,host:port]")
        host, sep, port_text = entry.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{entry!r}: expected host:port (e.g. kafka-0.kafka:9092)")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError as exc:
                raise ValueError(f"{entry!r}: {host} is not an IPv6 address") from exc
        elif not _HOSTNAME.match(host):
            raise ValueError(f"{entry!r}: {host!r} is not a host name or IPv4 address")
        out.append((host, int(port_text)))
    return out
