"""The one settings object. Read from the environment (prefix ``GPUMETER_``) only at the entry
point; everything inward receives a frozen :class:`Settings` or plain arguments.

Every problem is reported at once, by variable name: bad values, missing companions (SASL
without a password), and ``GPUMETER_*`` variables that are not settings at all (a typo would
otherwise leave the default in force silently). Secrets never appear in clear: not in
``gpumeter check``, not in ``repr``, not inside a DSN.

The rules across fields and the data-directory check are :mod:`kernel.settings_rules`; DSN and
bootstrap parsing is :mod:`kernel.dsn`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.dsn import (
    CHDB_EXPECTED,
    HTTP_EXPECTED,
    REDACTED,
    ClickHouseDsn,
    parse_bootstrap,
    parse_clickhouse_dsn,
)
from kernel.settings_rules import (
    MIN_REBUILD_RETENTION_DAYS,
    cross_field_problems,
    unusable_directory,
)

ENV_PREFIX = "GPUMETER_"

#: Variables a *job* sets to declare its allocation (read by the node agent from
#: ``/proc/<pid>/environ``, see agents/attribution.py). They are not settings, but they may
#: legitimately be in a process's environment, so they are not reported as unknown.
JOB_VARIABLES = frozenset({"GPUMETER_TENANT", "GPUMETER_JOB", "GPUMETER_BILLING_CLASS"})

#: Group timeouts for the embedded Tansu broker (demo, tests): a group join on it waits about
#: half the rebalance timeout, so the production defaults would make every join take 30 s.
#: Pass these explicitly (``load_settings(**EMBEDDED_GROUP_TIMEOUTS)``); never the default.
EMBEDDED_GROUP_TIMEOUTS: Mapping[str, float] = {
    "kafka_rebalance_timeout_s": 6.0,
    "kafka_session_timeout_s": 6.0,
    "kafka_heartbeat_interval_s": 1.0,
}

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SettingsError(Exception):
    """Configuration is invalid; the message lists every bad entry at once."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    data_dir: Path = Field(
        Path("gpumeter-data"),
        description="Where the embedded runtime keeps its state (ClickHouse data, spools, exports).",
        # Checked even when defaulted: a relative default in a read-only working directory
        # must fail here with a message, not later with a traceback.
        validate_default=True,
    )
    kafka_bootstrap: str | None = Field(
        None,
        description="host:port[,host:port] of a Kafka cluster. Unset: start the embedded Tansu broker.",
    )
    clickhouse_dsn: str | None = Field(
        None,
        description=f"{CHDB_EXPECTED} (embedded engine) or {HTTP_EXPECTED}. "
        "Unset: chdb://<data_dir>/clickhouse.",
    )
    clickhouse_password: SecretStr | None = Field(
        None, description="Password of the DSN's user (from a secret; never in the DSN itself)."
    )
    clickhouse_cluster: str | None = Field(
        None,
        description="A ClickHouse cluster (<remote_servers>): migrations create Replicated "
        "tables behind Distributed ones on every node. Unset: a single server.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    usage_partitions: int = Field(
        4,
        ge=1,
        le=1024,
        description="Partitions of the usage topic: the most workers that can share the load.",
    )
    raw_ttl_days: int = Field(400, ge=1, description="How long the raw sample archive is kept.")
    grace_seconds: int = Field(
        120, ge=0, description="Event-time grace before a minute is closed and emitted."
    )
    max_future_skew_s: int = Field(
        300, ge=0, description="How far ahead of the worker's clock a sample may be."
    )

    # Consumer-group timeouts. Defaults fit a real Kafka cluster (Faust's and Kafka's own
    # defaults); the embedded runtime passes EMBEDDED_GROUP_TIMEOUTS.
    kafka_rebalance_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="How long a rebalance waits for members to rejoin."
    )
    kafka_session_timeout_s: float = Field(
        45.0, gt=0, le=3600, description="A worker silent this long is dropped from the group."
    )
    kafka_heartbeat_interval_s: float = Field(
        3.0, gt=0, le=600, description="Heartbeat period; at most a third of the session timeout."
    )

    # Kafka security, for agents and workers alike.
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="Required with SASL_*.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="Required with SASL_* (from a secret)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle for SSL / SASL_SSL. Unset: the system trust store."
    )

    # Topics, as created by gpumeter (agent and worker create them when missing).
    kafka_replication_factor: int = Field(
        3, ge=1, le=32, description="Replicas of every gpumeter topic (1 for a single broker)."
    )
    kafka_retention_days: int = Field(
        35, ge=1, description="Retention of the usage topic: the ledger is rebuilt from it."
    )
    kafka_allow_short_retention: bool = Field(
        False,
        description=f"Allow kafka_retention_days < {MIN_REBUILD_RETENTION_DAYS} (a billing "
        "period could then no longer be rebuilt from the topic).",
    )

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v is not None:
            parse_clickhouse_dsn(v)
        return v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is not None:
            parse_bootstrap(v)
            return ",".join(e.strip() for e in v.split(","))
        return v

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        problem = unusable_directory(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("kafka_ssl_cafile")
    @classmethod
    def _cafile(cls, v: Path | None) -> Path | None:
        if v is not None and not (v.is_file() and os.access(v, os.R_OK)):
            raise ValueError(f"{v} is not a readable file (expected a PEM CA bundle)")
        return v

    @model_validator(mode="after")
    def _together(self) -> Settings:
        """Checks that span fields; all problems in one error, one line per variable."""
        problems = cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(f"{env_name(f)}: {m}" for f, m in problems))
        return self

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def clickhouse(self) -> ClickHouseDsn:
        """The parsed DSN (the embedded default under ``data_dir`` when unset)."""
        return parse_clickhouse_dsn(self.resolved_clickhouse_dsn)

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets hidden (also inside the DSN)."""
        out = self.model_dump(mode="json")
        for name, value in out.items():
            if isinstance(getattr(self, name), SecretStr):
                out[name] = REDACTED if value else value
        if self.clickhouse_dsn is not None:
            out["clickhouse_dsn"] = str(parse_clickhouse_dsn(self.clickhouse_dsn))
        return out

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() ends up in logs and tracebacks: the same redaction as `gpumeter check`.
        return list(self.redacted().items())


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def known_variables() -> frozenset[str]:
    return frozenset(env_name(f) for f in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One message per ``GPUMETER_*`` variable that is not a setting, with a suggestion."""
    known = sorted(known_variables())
    out = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(ENV_PREFIX) or name in known or name in JOB_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = (
            f"did you mean {close[0]}?" if close else "see `gpumeter check --help` for the settings"
        )
        out.append(f"  {key}: not a gpumeter setting; {hint}")
    return out


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment plus overrides; report every problem at once.

    ``environ`` is scanned for unknown ``GPUMETER_*`` variables (default: ``os.environ``, which
    pydantic-settings also reads the values from)."""
    lines = unknown_variables(os.environ if environ is None else environ)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = _error_lines(exc) + _cross_field_lines(exc, overrides) + lines
    if lines:
        raise SettingsError("invalid configuration:\n" + "\n".join(lines))
    return settings


def _cross_field_lines(exc: ValidationError, overrides: Mapping[str, object]) -> list[str]:
    """pydantic runs the cross-field checks only once every field is valid. To still report
    every problem at once, re-validate with the invalid fields at their defaults (init values
    win over the environment) and keep the cross-field lines that do not involve them."""
    bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    if not bad:
        return []
    defaults = {name: Settings.model_fields[name].default for name in bad}
    try:
        Settings(**{**overrides, **defaults})  # type: ignore[arg-type]
    except ValidationError as again:
        names = [env_name(name) for name in bad]
        return [
            line
            for line in _error_lines(again)
            if not any(name in line for name in names) and line not in _error_lines(exc)
        ]
    return []


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for e in exc.errors(include_url=False):
        if e["loc"]:
            name = env_name("_".join(str(p) for p in e["loc"][:1]))
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {name}: {msg}")
        else:  # the cross-field validator: one "NAME: message" per line already
            msg = e["msg"].removeprefix("Value error, ")
            lines.extend(f"  {line}" for line in msg.splitlines())
    return lines
