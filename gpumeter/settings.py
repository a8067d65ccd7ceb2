"""The one settings object. Read from the environment (prefix ``GPUMETER_``) only at the entry
point; everything inward receives a frozen :class:`Settings` or plain arguments."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """Configuration is invalid; the message lists every bad entry at once."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUMETER_", frozen=True, extra="forbid")

    data_dir: Path = Field(
        Path("gpumeter-data"),
        description="Where the embedded runtime keeps its state (ClickHouse data, spools, exports).",
    )
    kafka_bootstrap: str | None = Field(
        None,
        description="host:port[,host:port] of a Kafka cluster. Unset: start the embedded Tansu broker.",
    )
    clickhouse_dsn: str | None = Field(
        None,
        description="chdb:///path (embedded engine) or http(s)://user@host:8123/db. "
        "Unset: chdb://<data_dir>/clickhouse.",
    )
    clickhouse_password: SecretStr | None = None
    usage_partitions: int = Field(4, ge=1, le=1024)
    raw_ttl_days: int = Field(400, ge=1, description="How long the raw sample archive is kept.")
    grace_seconds: int = Field(
        120, ge=0, description="Event-time grace before a minute is closed and emitted."
    )
    max_future_skew_s: int = Field(300, ge=0)

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus overrides; report every problem at once."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [
            f"  GPUMETER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from exc
