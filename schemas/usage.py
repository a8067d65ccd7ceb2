"""The usage event contract: one Kafka record on ``gpu.usage.v1`` is a batch of GPU-second samples.

A *sample* is one GPU (or MIG slice) for one wall-clock UTC second. Its identity is
``(gpu_uuid, mig_uuid, ts)``: global and deterministic, so its event id is a UUIDv5 of it and a
replayed sample is recognisable anywhere downstream. A *batch* is what one node agent sends in
one record (Faust's cost is per record, so a record carries many samples).

Validation rejects what cannot be real, with a message a human can act on. The stream worker
validates with :func:`parse_batch`; agents written in other languages produce against the JSON
Schema exported by :func:`json_schema` (``gpumeter schema export``).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})

#: Namespace of sample event ids. Never change it: ids already stored would stop matching.
SAMPLE_NAMESPACE = uuid.UUID("6f1c7a52-3b0e-5d2a-9a51-7c7e0c2a9d11")

#: A sample dated more than this far after the validator's clock is rejected (clock skew allowance).
MAX_FUTURE_SKEW_S = 300
#: Samples before this instant (2015-01-01T00:00:00Z) are rejected as absurd.
MIN_TS = 1_420_070_400
MAX_POWER_W = 3_000.0
MAX_MEMORY_BYTES = 2 * 1024**4
#: Energy for one second may differ from average power x 1 s by this factor (plus slack) at most.
ENERGY_POWER_FACTOR = 3.0
ENERGY_SLACK_J = 50.0

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

SampleFlag = Literal[
    "energy_estimated",  # no total-energy counter on this GPU: energy_j = power_w x 1 s
    "counter_reset",  # the energy counter went backwards (driver reload, GPU reset)
    "nvml_error",  # some NVML reads failed this second; the fields affected are zero
    "clock_jump",  # the host clock jumped; the second was re-aligned
]

GapReason = Literal[
    "agent_stalled",  # the sampling loop fell behind
    "agent_restarted",  # the agent was down
    "nvml_unavailable",  # the driver did not answer
    "spool_full",  # the spool hit its bound or a full disk: sampled seconds were dropped
]

BillingClass = Literal["on_demand", "reserved", "spot"]


class GpuSecond(BaseModel):
    """One GPU (or MIG slice) for one UTC second, attributed to an allocation or idle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_uuid: Identifier
    mig_uuid: Identifier | None = None
    gpu_model: Identifier
    ts: int = Field(description="The UTC second this sample covers, as Unix epoch seconds.")
    tenant: Identifier | None = Field(None, description="Allocation tenant; null means idle.")
    job: Identifier | None = Field(None, description="Allocation job; null means idle.")
    billing_class: BillingClass | None = Field(
        None, description="From the allocation metadata; null means the tenant's contract default."
    )
    sm_util: float = Field(ge=0, le=100, description="SM utilization, percent.")
    mem_util: float = Field(ge=0, le=100, description="Memory controller utilization, percent.")
    mem_used: int = Field(ge=0, le=MAX_MEMORY_BYTES, description="Memory used, bytes.")
    mem_total: int = Field(ge=0, le=MAX_MEMORY_BYTES, description="Memory total, bytes.")
    power_w: float = Field(ge=0, le=MAX_POWER_W, description="Average power over the second, W.")
    energy_j: float = Field(
        ge=0,
        # Even flagged (estimated) energy is power x 1 s, so this bound always holds for real
        # data; it also keeps inf/1e400 (valid JSON for pydantic) out of integer sums.
        le=MAX_POWER_W * ENERGY_POWER_FACTOR + ENERGY_SLACK_J,
        description="Energy used in this second, J.",
    )
    temp_c: float | None = Field(None, ge=-40, le=150, description="GPU temperature, Celsius.")
    flags: tuple[SampleFlag, ...] = ()

    @field_validator("ts")
    @classmethod
    def _ts_is_plausible(cls, ts: int) -> int:
        # The future-skew check depends on the worker's clock, so parse_batch applies it
        # after validation (code future_timestamp), not the model.
        if ts < MIN_TS:
            raise ValueError(f"timestamp {ts} is before 2015-01-01; expected Unix epoch seconds")
        return ts

    @model_validator(mode="after")
    def _consistent(self) -> GpuSecond:
        if (self.tenant is None) != (self.job is None):
            raise ValueError("tenant and job must be both set (allocated) or both null (idle)")
        if self.tenant is None and self.billing_class is not None:
            raise ValueError("an idle sample cannot carry a billing_class")
        if self.mem_used > self.mem_total:
            raise ValueError(
                f"mem_used {self.mem_used} exceeds mem_total {self.mem_total} bytes"
            )
        if "energy_estimated" not in self.flags and "counter_reset" not in self.flags:
            high = self.power_w * ENERGY_POWER_FACTOR + ENERGY_SLACK_J
            low = self.power_w / ENERGY_POWER_FACTOR - ENERGY_SLACK_J
            if not low <= self.energy_j <= high:
                raise ValueError(
                    f"energy_j {self.energy_j} J is inconsistent with power_w {self.power_w} W "
                    f"over one second (allowed {max(low, 0):.0f}..{high:.0f} J)"
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
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)

    @property
    def allocated(self) -> bool:
        return self.tenant is not None


_SAMPLE_FIELDS = frozenset(GpuSecond.model_fields)


class Gap(BaseModel):
    """Seconds the agent did not sample (it was stalled or down): reported, never invented."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(description="First missing second (epoch).")
    end: int = Field(description="First second after the gap (epoch, exclusive).")
    reason: GapReason
    gpu_uuid: Identifier | None = Field(None, description="Null: the whole node.")

    @model_validator(mode="after")
    def _ordered(self) -> Gap:
        if self.end <= self.start:
            raise ValueError(f"gap end {self.end} must be after its start {self.start}")
        return self


class GpuSecondsSampled(BaseModel):
    """One Kafka record: the samples one node agent sends in one flush."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    node_id: Identifier
    agent_id: Identifier = Field(description="Instance id of the agent's spool (survives restarts).")
    seq: int = Field(ge=0, description="Per-agent batch sequence number, gapless and increasing.")
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

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_defaults=False))


def sample_event_id(gpu_uuid: str, mig_uuid: str | None, ts: int) -> uuid.UUID:
    """The deterministic id of a sample: the same GPU-second always gets the same id.

    Equal to ``uuid.uuid5(SAMPLE_NAMESPACE, f"{gpu_uuid}|{mig_uuid or ''}|{ts}")``."""
    return uuid.UUID(int=sample_event_int(gpu_uuid, mig_uuid, ts))


_NAMESPACE_BYTES = SAMPLE_NAMESPACE.bytes
#: RFC 4122 version (5) and variant bits, as :func:`uuid.uuid5` sets them on the SHA-1 prefix.
_UUID5_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID5_SET = (0x8000 << 48) | (5 << 76)


def sample_event_int(
    gpu_uuid: str,
    mig_uuid: str | None,
    ts: int,
    _sha1: Any = hashlib.sha1,
    _from_bytes: Any = int.from_bytes,
) -> int:
    """:func:`sample_event_id` as a 128-bit integer (``.int``), without building a UUID object:
    UUIDv5 computed with hashlib directly, several times cheaper than :func:`uuid.uuid5`, for
    the worker archiving every sample (clickhouse-connect writes UUID columns from ints)."""
    digest = _sha1(_NAMESPACE_BYTES + f"{gpu_uuid}|{mig_uuid or ''}|{ts}".encode()).digest()
    return _from_bytes(digest[:16], "big") & _UUID5_KEEP | _UUID5_SET


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one ``gpu.usage.v1`` record, for producers not written in Python."""
    schema = GpuSecondsSampled.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gpumeter.dev/schemas/gpu.usage.v1.schema.json"
    schema["description"] = (
        "One Kafka record on topic gpu.usage.v1: a batch of GPU-second samples from one node. "
        "Encoding: UTF-8 JSON. Record key: node_id. A sample's identity is "
        "(gpu_uuid, mig_uuid, ts); its event id is UUIDv5(" + str(SAMPLE_NAMESPACE) + ", "
        "'<gpu_uuid>|<mig_uuid or empty>|<ts>'). Semantic checks beyond this schema: "
        "tenant and job both set or both null; mem_used <= mem_total; energy_j within "
        f"power_w/{ENERGY_POWER_FACTOR:g}-{ENERGY_SLACK_J:g} .. power_w*{ENERGY_POWER_FACTOR:g}+"
        f"{ENERGY_SLACK_J:g} J unless flagged energy_estimated or counter_reset; ts not more "
        f"than {MAX_FUTURE_SKEW_S} s in the future."
    )
    return schema
