"""The preemption contract: one Kafka record on ``gpu.preemptions.v1`` says that an allocation
lost its GPU (or MIG slice) before it ended, because somebody else (typically an internal
tenant whose demand returned) took the device.

The scheduler knows this, the node agent does not: ``gpumeter preemption report`` (or any
producer following the published JSON Schema, ``schemas/json/gpu.preemptions.v1.schema.json``)
publishes it. The record names the allocation as the ledger does (tenant, job, device, share)
and the first second it no longer held the device (``at``). What the preemption cost the job
is not carried: the worker's ``preemption_losses`` view counts it from the ledger (the
allocation's milli-GPU-seconds on that device from ``checkpoint_at``, or from its first
second, up to ``at``), so it cannot disagree with what was metered.

Identity is ``(tenant, job, gpu_uuid, mig_uuid, at)``: a redelivered (or corrected) record has
the same event id and replaces the earlier one in the ``preemptions`` table (ReplacingMergeTree
ordered by that identity; the last one stored wins).

Validation is strict, like the usage contract: nothing is coerced (a string is not a number,
true is not 1); an integer field takes a JSON number with no fractional part (1767225600.0),
as JSON Schema defines integers; unknown fields are refused.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kernel.names import RESERVED_TENANTS
from schemas.common import MAX_TS, MIN_TS, Identifier, TenantName
from schemas.defects import integral
from schemas.rule import MAX_FUTURE_SKEW_S
from schemas.topics import PREEMPTIONS as TOPIC

SCHEMA_VERSION = 1

#: Namespace of preemption event ids. Never change it: ids already stored would stop matching.
PREEMPTION_NAMESPACE = uuid.UUID("6f1c0c9e-3a57-5d0b-8e61-2a4d6b9f0c31")
#: The integer fields (a JSON number with no fractional part is an integer, as published).
INTEGER_FIELDS = ("schema_version", "share_milli", "at", "checkpoint_at")


class PreemptionReported(BaseModel):
    """Allocation ``(tenant, job)`` at ``share_milli`` of ``gpu_uuid`` (or its MIG slice
    ``mig_uuid``) was preempted: ``at`` is the first second it no longer held the device."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_version: int = Field(SCHEMA_VERSION, description="Always 1.")
    tenant: TenantName = Field(description="The preempted allocation's tenant.")
    job: Identifier = Field(description="The preempted allocation's job.")
    gpu_uuid: Identifier = Field(description="The device, as the agent reports it (GPU-...).")
    mig_uuid: Identifier | Literal[""] | None = Field(
        None,
        description="The MIG slice the allocation held; absent, null or empty: the whole GPU "
        "(the same identity either way).",
    )
    share_milli: int = Field(
        ge=1,
        le=1000,
        description="The allocation's share of the device in milli-GPUs (1000: all of it), "
        "as in the usage records.",
    )
    at: int = Field(
        ge=MIN_TS,
        le=MAX_TS,
        description="The first second (Unix epoch seconds, UTC) the allocation no longer held "
        "the device.",
    )
    checkpoint_at: int | None = Field(
        None,
        ge=MIN_TS,
        le=MAX_TS,
        description="The job's last checkpoint on this device (Unix epoch seconds, UTC, <= at): "
        "the work from it up to at is lost. Absent or null: everything the allocation ran on "
        "this device is lost.",
    )
    preempted_by: TenantName | None = Field(
        None, description="The tenant whose allocation took the device, if known."
    )
    reason: Identifier | None = Field(None, description="Short free text, e.g. 'internal demand'.")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema_version {v}; this consumer understands {SCHEMA_VERSION}"
            )
        return v

    @field_validator("tenant", "preempted_by")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        if v in RESERVED_TENANTS:
            raise ValueError(f"{v!r} is reserved for unallocated GPU-seconds")
        return v

    @field_validator("at")
    @classmethod
    def _not_future(cls, ts: int, info: ValidationInfo) -> int:
        now = (info.context or {}).get("now", time.time())
        if ts > now + MAX_FUTURE_SKEW_S:
            raise ValueError(f"at {ts} is {ts - int(now)} s in the future: check the clock")
        return ts

    @model_validator(mode="after")
    def _checkpoint_before(self) -> PreemptionReported:
        if self.checkpoint_at is not None and self.checkpoint_at > self.at:
            raise ValueError(f"checkpoint_at {self.checkpoint_at} is after at {self.at}")
        return self

    @classmethod
    def parse(cls, raw: bytes, *, now: float | None = None) -> PreemptionReported:
        """Validate one record's bytes. Raises ``ValueError`` (orjson's ``JSONDecodeError``
        for bad JSON, pydantic's ``ValidationError`` for a bad record)."""
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError(f"a record is a JSON object, got {type(doc).__name__}")
        integral(doc, INTEGER_FIELDS)
        return cls.model_validate(doc, context={"now": time.time() if now is None else now})

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.uuid5(
            PREEMPTION_NAMESPACE,
            f"{self.tenant}|{self.job}|{self.gpu_uuid}|{self.mig_uuid or ''}|{self.at}",
        )

    def row(self) -> list[object]:
        """Values for ``preemptions`` in :data:`PREEMPTION_COLUMNS` order."""
        return [
            datetime.fromtimestamp(self.at, UTC),
            self.tenant,
            self.job,
            self.gpu_uuid,
            self.mig_uuid or "",
            self.share_milli,
            None if self.checkpoint_at is None else datetime.fromtimestamp(self.checkpoint_at, UTC),
            self.preempted_by or "",
            self.reason or "",
            self.event_id,
        ]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


PREEMPTION_COLUMNS = (
    "at",
    "tenant",
    "job",
    "gpu_uuid",
    "mig_uuid",
    "share_milli",
    "checkpoint_at",
    "preempted_by",
    "reason",
    "event_id",
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one ``gpu.preemptions.v1`` record, for producers in any language."""
    schema = PreemptionReported.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://gpumeter.dev/schemas/{TOPIC}.schema.json"
    schema["description"] = (
        f"One Kafka record on topic {TOPIC}: an allocation lost its device before it ended. "
        "Encoding: UTF-8 JSON. Record key: tenant. Identity: (tenant, job, gpu_uuid, mig_uuid, "
        "at); its event id is UUIDv5(" + str(PREEMPTION_NAMESPACE) + ", "
        "'<tenant>|<job>|<gpu_uuid>|<mig_uuid or empty>|<at>'); a record with the same identity "
        "replaces the one stored before. Also checked: checkpoint_at <= at, and at no more than "
        f"{MAX_FUTURE_SKEW_S} s in the future. No coercion: a string is not a number, true is "
        "not 1; an integer field takes a number with no fractional part. A refused record is "
        "stored in usage_rejected with code invalid_preemption and the reason."
    )
    schema["properties"]["schema_version"]["const"] = SCHEMA_VERSION
    return schema


def schema_file() -> Path:
    """Where the schema is committed (``gpumeter schema export --topic gpu.preemptions.v1``
    writes it; a test checks it is current)."""
    return Path(__file__).resolve().parent / "json" / f"{TOPIC}.schema.json"


def render_schema() -> str:
    """The committed schema file's exact text."""
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
