"""The usage event contract: one Kafka record on ``gpu.usage.v1`` is a batch of GPU-second samples.

A *sample* is one GPU (or MIG slice) for one wall-clock UTC second. Its identity is
``(gpu_uuid, mig_uuid, ts)``: global and deterministic, so its event id is a UUIDv5 of it and a
replayed sample is recognised anywhere downstream. A *batch* is what one node agent sends in
one record (Faust's cost is per record, so a record carries many samples).

The published JSON Schema (:func:`json_schema`, ``gpumeter schema export``) is the contract for
producers in other languages, and the worker accepts exactly what it states: every bound, enum
and pattern here is a JSON Schema keyword, the allocated-or-idle rule is an ``anyOf``, and the
cross-field rules JSON Schema cannot express are listed, machine-readably, in its
``x-gpumeter-rules`` (:data:`schemas.rule.RULES`). The worker validates with
:func:`schemas.validation.parse_batch` in pydantic's strict mode, so nothing is coerced: a
string is not a number, a boolean is not an integer. The models themselves stay lax for Python
callers that build them directly (the NVML sampler); only ``parse_batch`` is the gate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from kernel.names import RESERVED_TENANTS, BillingClass
from schemas.common import MALFORMED_JSON, MAX_TEMP_C, MIN_TEMP_C, UNKNOWN_SCHEMA_VERSION
from schemas.common import MAX_ENERGY_J as MAX_ENERGY_J
from schemas.common import MAX_MEMORY_BYTES as MAX_MEMORY_BYTES
from schemas.common import MAX_POWER_W as MAX_POWER_W
from schemas.common import MAX_SEQ as MAX_SEQ
from schemas.common import MAX_TS as MAX_TS
from schemas.common import MIN_TS as MIN_TS
from schemas.common import Gap as Gap
from schemas.common import GapReason as GapReason
from schemas.common import Identifier as Identifier
from schemas.common import SampleFlag as SampleFlag
from schemas.common import TenantName as TenantName
from schemas.identity import SAMPLE_NAMESPACE as SAMPLE_NAMESPACE
from schemas.identity import sample_event_id as sample_event_id
from schemas.identity import sample_event_int as sample_event_int
from schemas.rule import ENERGY_EXEMPT_FLAGS as ENERGY_EXEMPT_FLAGS
from schemas.rule import ENERGY_POWER_FACTOR as ENERGY_POWER_FACTOR
from schemas.rule import ENERGY_SLACK_J as ENERGY_SLACK_J
from schemas.rule import MAX_FUTURE_SKEW_S as MAX_FUTURE_SKEW_S
from schemas.rule import RULE_IDS as RULE_IDS
from schemas.rule import RULES, violates

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
#: The schema states the supported versions as an enum.
_VERSION_ENUM: list[JsonValue] = [v for v in sorted(SUPPORTED_SCHEMA_VERSIONS)]

_ALLOCATED_OR_IDLE: JsonDict = {
    "anyOf": [
        {
            "title": "idle",
            "description": "Rules allocation-complete and idle-no-billing-class: an idle second.",
            "properties": {
                "tenant": {"type": "null"},
                "job": {"type": "null"},
                "billing_class": {"type": "null"},
            },
        },
        {
            "title": "allocated",
            "description": "Rule allocation-complete: an allocated second names tenant and job.",
            "required": ["tenant", "job"],
            "properties": {"tenant": {"type": "string"}, "job": {"type": "string"}},
        },
    ]
}


class GpuSecond(BaseModel):
    """One GPU (or MIG slice) for one UTC second, attributed to an allocation or idle."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, json_schema_extra=_ALLOCATED_OR_IDLE
    )

    gpu_uuid: Identifier
    mig_uuid: Identifier | None = None
    gpu_model: Identifier
    ts: int = Field(
        ge=MIN_TS,
        le=MAX_TS,
        description="The UTC second this sample covers, as Unix epoch seconds (not milliseconds).",
    )
    tenant: TenantName | None = Field(
        None, description="Allocation tenant; null means idle. Reserved names are refused."
    )
    job: Identifier | None = Field(None, description="Allocation job; null means idle.")
    billing_class: BillingClass | None = Field(
        None, description="From the allocation metadata; null means the tenant's contract default."
    )
    sm_util: float = Field(ge=0, le=100, description="SM utilization, percent.")
    mem_util: float = Field(ge=0, le=100, description="Memory controller utilization, percent.")
    mem_used: int = Field(ge=0, le=MAX_MEMORY_BYTES, description="Memory used, bytes.")
    mem_total: int = Field(ge=0, le=MAX_MEMORY_BYTES, description="Memory total, bytes.")
    power_w: float = Field(ge=0, le=MAX_POWER_W, description="Average power over the second, W.")
    energy_j: float = Field(ge=0, le=MAX_ENERGY_J, description="Energy used in this second, J.")
    temp_c: float | None = Field(
        None, ge=MIN_TEMP_C, le=MAX_TEMP_C, description="GPU temperature, Celsius."
    )
    flags: tuple[SampleFlag, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> GpuSecond:
        # One Python call per sample checks every cross-field rule (the worker's hot path).
        tenant = self.tenant
        if tenant in RESERVED_TENANTS:
            raise PydanticCustomError(
                "reserved_name",
                "'{name}' is reserved (it marks idle seconds in the ledger); "
                "send tenant and job null for an idle second",
                {"field": "tenant", "name": tenant},
            )
        if (tenant is None) != (self.job is None):
            raise violates(
                "allocation-complete",
                "tenant and job must be both set (allocated) or both null (idle)",
            )
        if tenant is None and self.billing_class is not None:
            raise violates("idle-no-billing-class", "an idle sample cannot carry a billing_class")
        if self.mem_used > self.mem_total:
            raise violates(
                "mem-used-within-total",
                f"mem_used {self.mem_used} exceeds mem_total {self.mem_total} bytes",
            )
        if "energy_estimated" not in self.flags and "counter_reset" not in self.flags:
            high = self.power_w * ENERGY_POWER_FACTOR + ENERGY_SLACK_J
            low = self.power_w / ENERGY_POWER_FACTOR - ENERGY_SLACK_J
            if not low <= self.energy_j <= high:
                raise violates(
                    "energy-matches-power",
                    f"energy_j {self.energy_j:g} J is inconsistent with power_w "
                    f"{self.power_w:g} W over one second "
                    f"(allowed {max(low, 0):.0f}..{high:.0f} J)",
                )
        return self

    @classmethod
    def unchecked(cls, fields: dict[str, Any]) -> GpuSecond:
        """Build a sample from a complete dict of trusted field values, skipping validation.

        For samplers producing millions of samples they computed themselves (about 5x faster
        than ``model_construct``). ``fields`` must hold every field; the worker validates
        everything it receives regardless.
        """
        obj = cls.__new__(cls)
        object.__setattr__(obj, "__dict__", fields)
        object.__setattr__(obj, "__pydantic_fields_set__", _SAMPLE_FIELDS)
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj

    @property
    def event_id(self) -> uuid.UUID:
        return sample_event_id(self.gpu_uuid, self.mig_uuid, self.ts)

    @property
    def allocated(self) -> bool:
        return self.tenant is not None


_SAMPLE_FIELDS = frozenset(GpuSecond.model_fields)


class GpuSecondsSampled(BaseModel):
    """One Kafka record: the samples one node agent sends in one flush."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(
        SCHEMA_VERSION,
        description="The contract version; a worker refuses versions it does not know.",
        json_schema_extra={"enum": _VERSION_ENUM},
    )
    node_id: Identifier
    agent_id: Identifier = Field(
        description="Instance id of the agent's spool (survives restarts)."
    )
    seq: int = Field(
        ge=0, le=MAX_SEQ, description="Per-agent batch sequence number, gapless and increasing."
    )
    samples: tuple[GpuSecond, ...] = ()
    gaps: tuple[Gap, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(
                f"unknown schema_version {v}; this worker understands "
                f"{sorted(SUPPORTED_SCHEMA_VERSIONS)} (upgrade the worker or the agent)"
            )
        return v


def encode_batch(
    node_id: str, agent_id: str, seq: int, samples: Sequence[GpuSecond], gaps: Sequence[Gap]
) -> bytes:
    """The wire encoding of a :class:`GpuSecondsSampled` batch (the one producers use).

    Samples go out through their field dicts: pydantic's model_dump costs several microseconds
    per sample, and the agent may spool millions in accelerated runs. Valid because every field
    of :class:`GpuSecond` and :class:`Gap` is a JSON scalar or list (tested against
    ``GpuSecondsSampled.model_validate_json``)."""
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "node_id": node_id,
            "agent_id": agent_id,
            "seq": seq,
            "samples": [s.__dict__ for s in samples],
            "gaps": [g.__dict__ for g in gaps],
        }
    )


#: What a rejection costs, by code; published in the schema as ``x-gpumeter-rejection-codes``.
REJECTION_CODES: dict[str, str] = {
    "malformed_json": MALFORMED_JSON,
    "unknown_schema_version": UNKNOWN_SCHEMA_VERSION,
    "invalid_envelope": "A field outside samples (node_id, agent_id, seq, gaps, an unknown "
    "key) is invalid. Costs the record.",
    "invalid_sample": "One element of samples is invalid. Costs that sample only.",
    "future_timestamp": "A valid sample dated too far after the worker's clock (rule "
    "ts-not-in-future). Costs that sample until the worker re-admits it.",
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one ``gpu.usage.v1`` record, for producers not written in Python."""
    schema = GpuSecondsSampled.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gpumeter.dev/schemas/gpu.usage.v1.schema.json"
    schema["description"] = (
        "One Kafka record on topic gpu.usage.v1: a batch of GPU-second samples from one node. "
        "Encoding: UTF-8 JSON. Record key: node_id. A sample's identity is "
        "(gpu_uuid, mig_uuid, ts); its event id is UUIDv5(" + str(SAMPLE_NAMESPACE) + ", "
        "'<gpu_uuid>|<mig_uuid or empty>|<ts>'). "
        "The worker accepts exactly what this schema states, with no coercion (a string is "
        "not a number, true is not 1; an integer is a number; an integer field also takes a "
        "number with no fractional part, such as 1700000000.0, as JSON Schema defines "
        "integer), plus the rules in x-gpumeter-rules, which JSON Schema keywords cannot "
        "state. Rejection policy: a bad envelope (not JSON, unknown schema_version, a bad "
        "node_id, agent_id, seq or gap, an unknown top-level key) costs the whole record; a "
        "bad sample costs only itself, whatever its defect: a wrong type or range, a broken "
        "rule, NaN or Infinity or a number too large for a double, an integer outside its "
        "bounds, nesting too deep, a string that is not valid UTF-8 or holds a lone "
        "surrogate. Each rejection has a code (x-gpumeter-rejection-codes) and a short reason "
        "naming the field or the rule. Each x-gpumeter-rules entry has an id (cited in reasons), "
        "a scope (sample: an element of samples; gap: an element of gaps; string: any string), "
        "the fields involved (relative to that element), a description, its params and the "
        "rejection_code a violation gets; in_json_schema marks rules also stated above with "
        "standard keywords."
    )
    schema["x-gpumeter-rules"] = [r.as_json() for r in RULES]
    schema["x-gpumeter-rejection-codes"] = dict(REJECTION_CODES)
    return schema
