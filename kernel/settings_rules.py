"""The configuration rules that one field's validator cannot state: checks across fields
(security protocol and its companions, heartbeat vs session, retention vs a billing period, a
password given twice), and whether a data directory is usable. :class:`kernel.settings.Settings`
runs them; each problem is ``(field, message)`` so the settings name the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.dsn import parse_clickhouse_dsn

if TYPE_CHECKING:
    from kernel.settings import Settings

#: A billing period is a calendar month (up to 31 days) and is finalized a little after it
#: ends; the usage topic must still hold the whole period to rebuild its ledger from scratch.
MIN_REBUILD_RETENTION_DAYS = 32


def cross_field_problems(s: Settings) -> list[tuple[str, str]]:
    """Every problem across fields, as (field name, message)."""
    problems: list[tuple[str, str]] = []
    sasl = s.kafka_security_protocol.startswith("SASL_")
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    if sasl:
        for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
            if getattr(s, name) is None:
                problems.append(
                    (
                        name,
                        f"required with GPUMETER_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}",
                    )
                )
    else:
        for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
            if getattr(s, name) is not None:
                problems.append(
                    (
                        name,
                        "set, but GPUMETER_KAFKA_SECURITY_PROTOCOL is "
                        f"{s.kafka_security_protocol}: use SASL_SSL (or SASL_PLAINTEXT) or unset it",
                    )
                )
    if s.kafka_ssl_cafile is not None and not tls:
        problems.append(
            (
                "kafka_ssl_cafile",
                "set, but GPUMETER_KAFKA_SECURITY_PROTOCOL is "
                f"{s.kafka_security_protocol}: use SSL or SASL_SSL or unset it",
            )
        )
    if s.kafka_heartbeat_interval_s * 3 > s.kafka_session_timeout_s:
        problems.append(
            (
                "kafka_heartbeat_interval_s",
                f"{s.kafka_heartbeat_interval_s:g} s is more than a "
                f"third of GPUMETER_KAFKA_SESSION_TIMEOUT_S ({s.kafka_session_timeout_s:g} s): "
                "one lost heartbeat would drop the worker from its group",
            )
        )
    if s.kafka_retention_days < MIN_REBUILD_RETENTION_DAYS and not s.kafka_allow_short_retention:
        problems.append(
            (
                "kafka_retention_days",
                f"{s.kafka_retention_days} days cannot rebuild a billing "
                f"period from the usage topic (needs >= {MIN_REBUILD_RETENTION_DAYS}); set "
                "GPUMETER_KAFKA_ALLOW_SHORT_RETENTION=true to accept that",
            )
        )
    if (
        s.clickhouse_dsn
        and s.clickhouse_password is not None
        and parse_clickhouse_dsn(s.clickhouse_dsn).password is not None
    ):
        problems.append(
            (
                "clickhouse_dsn",
                "has a password and GPUMETER_CLICKHOUSE_PASSWORD is set too: "
                "give it once (preferably in GPUMETER_CLICKHOUSE_PASSWORD, from a secret)",
            )
        )
    return problems


def unusable_directory(path: Path) -> str | None:
    """Why ``path`` cannot be used as a writable data directory, or None. Creates nothing:
    validating configuration has no side effects."""
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user (uid {os.getuid()})"
        return None
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{path} cannot be created: {parent} is a file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path} cannot be created: {parent} is not writable by this user (uid {os.getuid()})"
            return None
    return None
