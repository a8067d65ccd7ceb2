"""The usage contract, version 2: one Kafka record on ``gpu.usage.v1`` carries *frames*.

A frame is one device (GPU or MIG slice) over the contiguous seconds ``start .. start + n - 1``,
its per-second readings column-wise (arrays ``n`` long) and one allocation set for all of them:
who holds the device, each with an integer share in milli-GPUs (1..1000, summing to at most
1000, the remainder idle). Every second is still identified one by one, by
``(gpu_uuid, mig_uuid, start + i)`` (:mod:`schemas.identity`). In memory a frame is a
:class:`schemas.frame.Frame`.

The models here state the wire form for the published JSON Schema (:func:`json_schema_v2`);
the worker does not validate frames through them (that would cost a Python object per second):
:func:`schemas.frames_validation.parse_record` checks each frame column by column against the
same bounds (:mod:`schemas.common`) and rules (:data:`schemas.rule_v2.RULES_V2`). The envelope
(everything but ``frames``) is validated with :class:`GpuFramesSampled` itself. Version 1
records (:mod:`schemas.usage`) are still accepted and translated, for one release.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kernel.names import BillingClass
from schemas.common import (
    MALFORMED_JSON,
    MAX_ENERGY_J,
    MAX_MEMORY_BYTES,
    MAX_PERCENT,
    MAX_POWER_W,
    MAX_SEQ,
    MAX_TEMP_C,
    MAX_TS,
    MIN_TEMP_C,
    MIN_TS,
    UNKNOWN_SCHEMA_VERSION,
    Gap,
    Identifier,
    SampleFlag,
    TenantName,
)
from schemas.frame import FRAMES_SCHEMA_VERSION
from schemas.identity import SAMPLE_NAMESPACE
from schemas.rule_v2 import MAX_FRAME_SECONDS, RULES_V2, WHOLE_MILLI

#: The version these models state (defined beside the encoder, :func:`schemas.frame.encode_frames`).
SCHEMA_VERSION_V2 = FRAMES_SCHEMA_VERSION

Percent = Annotated[float, Field(ge=0, le=MAX_PERCENT)]
_SECONDS: Any = {"min_length": 1, "max_length": MAX_FRAME_SECONDS}


class ShareWire(BaseModel):
    """One allocation of a frame: who holds which part of the device in all its seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tenant: TenantName = Field(description="Allocation tenant. Reserved names are refused.")
    job: Identifier = Field(description="Allocation job.")
    share_milli: int = Field(
        ge=1,
        le=WHOLE_MILLI,
        description="The allocation's share of the device in milli-GPUs (1000: the whole "
        "device). The shares of a frame sum to at most 1000 (rule shares-within-device); the "
        "remainder is idle.",
    )
    billing_class: BillingClass | None = Field(
        None, description="From the allocation metadata; null means the tenant's contract default."
    )
    sm_util: list[Percent] | None = Field(
        None,
        **_SECONDS,
        description="Measured SM utilization of this allocation's processes, percent, per second "
        "of the frame (NVML per-process utilization), when the producer has it.",
    )


class FlagsAt(BaseModel):
    """The flags of one second of a frame (sparse: seconds without flags are not listed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, le=MAX_FRAME_SECONDS - 1, description="The second: start + index.")
    flags: list[SampleFlag]


class FrameWire(BaseModel):
    """One device over n contiguous seconds from start, readings column-wise."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    gpu_uuid: Identifier
    mig_uuid: Identifier | None = Field(
        None,
        description="The MIG slice, or null for the whole GPU. A GPU in MIG mode is metered "
        "through its slices only (rule mig-slices-only).",
    )
    gpu_model: Identifier
    start: int = Field(
        ge=MIN_TS,
        le=MAX_TS,
        description="The first UTC second of the frame, Unix epoch seconds (not milliseconds). "
        "Element i of every per-second array is the second start + i.",
    )
    allocations: list[ShareWire] = Field(
        max_length=WHOLE_MILLI,
        description="Who holds the device in these seconds; [] is an idle device.",
    )
    sm_util: list[Percent] = Field(**_SECONDS, description="SM utilization, percent.")
    mem_util: list[Percent] = Field(
        **_SECONDS, description="Memory controller utilization, percent."
    )
    mem_used: list[Annotated[int, Field(ge=0, le=MAX_MEMORY_BYTES)]] = Field(
        **_SECONDS, description="Memory used, bytes."
    )
    mem_total: int = Field(ge=0, le=MAX_MEMORY_BYTES, description="Memory total, bytes.")
    power_w: list[Annotated[float, Field(ge=0, le=MAX_POWER_W)]] = Field(
        **_SECONDS, description="Average power over each second, W."
    )
    energy_j: list[Annotated[float, Field(ge=0, le=MAX_ENERGY_J)]] = Field(
        **_SECONDS, description="Energy used in each second, J."
    )
    temp_c: list[Annotated[float, Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)] | None] | None = Field(
        None, **_SECONDS, description="GPU temperature, Celsius (null: not read that second)."
    )
    flags: list[FlagsAt] = Field(
        default_factory=list, description="Flags of the seconds that have any."
    )


class GpuFramesSampled(BaseModel):
    """One Kafka record, version 2: the frames one node agent sends in one flush."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = Field(
        description="The contract version: 2. A record with schema_version 1 (or none) is a "
        "version 1 record (gpu.usage.v1.schema.json)."
    )
    node_id: Identifier
    agent_id: Identifier = Field(
        description="Instance id of the agent's spool (survives restarts)."
    )
    seq: int = Field(
        ge=0, le=MAX_SEQ, description="Per-agent batch sequence number, gapless and increasing."
    )
    frames: list[FrameWire] = Field(default_factory=list)
    gaps: list[Gap] = Field(default_factory=list)


#: What a rejection of a version 2 record costs, by code (``x-gpumeter-rejection-codes``).
REJECTION_CODES_V2: dict[str, str] = {
    "malformed_json": MALFORMED_JSON,
    "unknown_schema_version": UNKNOWN_SCHEMA_VERSION,
    "invalid_envelope": "A field outside frames (node_id, agent_id, seq, gaps, an unknown "
    "key) is invalid, or frames is not an array. Costs the record.",
    "invalid_frame": "One element of frames is invalid (a field, one second's reading, an "
    "allocation, or a rule). Costs that frame only; the reason names the field and, for a "
    "per-second array, the index of the second.",
    "future_timestamp": "The seconds of a valid frame dated too far after the worker's clock "
    "(rule ts-not-in-future), split off as a frame of their own. Costs those seconds until "
    "the worker re-admits them.",
}


def json_schema_v2() -> dict[str, Any]:
    """The JSON Schema of one version 2 record, for producers not written in Python."""
    schema = GpuFramesSampled.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gpumeter.dev/schemas/gpu.usage.v2.schema.json"
    schema["description"] = (
        "One Kafka record on topic gpu.usage.v1 (the topic keeps its name), schema_version 2: "
        "frames of GPU-seconds from one node. Encoding: UTF-8 JSON. Record key: node_id. "
        "A frame is one device (a GPU, or a MIG slice) over the seconds start .. start + n - 1, "
        "its readings column-wise: every per-second array has the same length n (1.."
        f"{MAX_FRAME_SECONDS}; rule frame-columns-aligned) and element i is the second "
        "start + i. One allocation set holds for all the frame's seconds: allocations, each "
        "with an integer share_milli of 1..1000 milli-GPUs, summing to at most 1000 per frame "
        "(rule shares-within-device), the remainder idle; an empty list is an idle device; no "
        "(tenant, job) twice in a frame (rule allocation-unique). A GPU in MIG mode is metered "
        "only through its slices: a parent frame (mig_uuid null) and a slice frame of the same "
        "GPU for the same second conflict, and the slice wins (rule mig-slices-only, enforced "
        "by the worker across records). Each second keeps its identity "
        "(gpu_uuid, mig_uuid, start + i) and its event id UUIDv5(" + str(SAMPLE_NAMESPACE) + ", "
        "'<gpu_uuid>|<mig_uuid or empty>|<second>'), as in version 1. "
        "Version 2 is the current version; version 1 records (schema_version 1 or absent, "
        "gpu.usage.v1.schema.json) are still accepted for one release and translated into "
        "frames (each allocated sample a whole-GPU share of 1000). "
        "The worker accepts exactly what this schema states, with no coercion (a string is "
        "not a number, true is not 1; an integer is a number; an integer field or element also "
        "takes a number with no fractional part, such as 1700000000.0, as JSON Schema defines "
        "integer), plus the rules in x-gpumeter-rules, which JSON Schema keywords cannot "
        "state. Rejection policy: a bad envelope (not JSON, unknown schema_version, a bad "
        "node_id, agent_id, seq or gap, frames not an array, an unknown top-level key) costs the "
        "whole record; a bad frame costs only itself, whatever its defect: a wrong type or "
        "range in any field or any second, a broken rule, NaN or Infinity or a number too "
        "large for a double, an integer outside its bounds, nesting too deep, a string that "
        "is not valid UTF-8 or holds a lone surrogate. Each rejection has a code "
        "(x-gpumeter-rejection-codes) and a short reason naming the field (with the index of "
        "the second for a per-second array) or the rule. Each x-gpumeter-rules entry has an "
        "id (cited in reasons), a scope (frame: an element of frames; second: each second of "
        "a frame; gap: an element of gaps; string: any string; worker: across records, not a "
        "rejection), the fields involved (relative to that element), a description, its "
        "params and the rejection_code a violation gets; in_json_schema marks rules also "
        "stated above with standard keywords."
    )
    schema["x-gpumeter-rules"] = [r.as_json() for r in RULES_V2]
    schema["x-gpumeter-rejection-codes"] = dict(REJECTION_CODES_V2)
    return schema
