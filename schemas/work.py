"""The work-units contract: one Kafka record on ``gpu.work.v1`` reports work a job did.

A job (an inference server, a training loop) reports what it produced over a window, e.g.
tokens served, so the report can price work rather than GPU-hours: cost and revenue per million
tokens. Identity is ``(tenant, job, source, unit, window_start)``: a replica (``source``) reports
each window once, so a redelivered record has the same event id and replaces itself in the
``work_units`` table (ReplacingMergeTree ordered by that identity).

GPU model and GPU-hours are not carried: they come from the ledger, joined on (tenant, job).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kernel.names import RESERVED_TENANTS
from schemas.usage import MAX_FUTURE_SKEW_S, MIN_TS, Identifier

SCHEMA_VERSION = 1

#: Namespace of work event ids. Never change it: ids already stored would stop matching.
WORK_NAMESPACE = uuid.UUID("2b8f0d8e-52a4-5f4e-9d7e-3f1f4c6b7a20")

#: A window longer than a day is almost certainly a unit mistake (ms vs s) and is refused.
MAX_WINDOW_S = 86_400
#: More than this per second of window is not a plausible count from one replica.
MAX_QUANTITY_PER_S = 10_000_000

WorkUnit = Literal["tokens", "requests", "samples", "images"]


class WorkUnitsReported(BaseModel):
    """A job replica did ``quantity`` units of work in ``[window_start, window_end)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    tenant: Identifier
    job: Identifier
    source: Identifier = Field(description="Replica or process within the job that counted.")
    unit: WorkUnit
    quantity: int = Field(ge=0, description="Units done in the window (an increment, not a total).")
    window_start: int = Field(description="First second of the window, Unix epoch seconds (UTC).")
    window_end: int = Field(description="First second after the window, Unix epoch seconds (UTC).")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema_version {v}; this consumer understands {SCHEMA_VERSION}"
            )
        return v

    @field_validator("tenant")
    @classmethod
    def _not_idle(cls, v: str) -> str:
        if v in RESERVED_TENANTS:
            raise ValueError(f"{v!r} is reserved for unallocated GPU-seconds")
        return v

    @field_validator("window_start", "window_end")
    @classmethod
    def _plausible(cls, ts: int, info: ValidationInfo) -> int:
        if ts < MIN_TS:
            raise ValueError(f"timestamp {ts} is before 2015-01-01; expected Unix epoch seconds")
        now = (info.context or {}).get("now", time.time())
        if ts > now + MAX_FUTURE_SKEW_S:
            raise ValueError(f"timestamp {ts} is {ts - int(now)} s in the future: check the clock")
        return ts

    @model_validator(mode="after")
    def _window(self) -> WorkUnitsReported:
        length = self.window_end - self.window_start
        if length <= 0:
            raise ValueError(
                f"window_end {self.window_end} must be after window_start {self.window_start}"
            )
        if length > MAX_WINDOW_S:
            raise ValueError(f"window of {length} s is longer than {MAX_WINDOW_S} s")
        if self.quantity > MAX_QUANTITY_PER_S * length:
            raise ValueError(
                f"quantity {self.quantity} over {length} s exceeds {MAX_QUANTITY_PER_S}/s"
            )
        return self

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.uuid5(
            WORK_NAMESPACE,
            f"{self.tenant}|{self.job}|{self.source}|{self.unit}|{self.window_start}",
        )

    def row(self) -> list[object]:
        """Values for ``work_units`` in :data:`WORK_UNITS_COLUMNS` order."""
        return [
            datetime.fromtimestamp(self.window_start, UTC),
            datetime.fromtimestamp(self.window_end, UTC),
            self.tenant,
            self.job,
            self.source,
            self.unit,
            self.quantity,
            self.event_id,
        ]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


WORK_UNITS_COLUMNS = (
    "window_start",
    "window_end",
    "tenant",
    "job",
    "source",
    "unit",
    "quantity",
    "event_id",
)
