"""What every version of the usage record shares: bounds, text rules, flag and gap vocabularies,
and the gap itself. One definition each; ``schemas.usage`` (v1) and ``schemas.usage_v2`` (v2)
build their models from these, and the v2 validator checks its columns against the same
numbers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from kernel.names import RESERVED_TENANTS
from schemas.rule import ENERGY_POWER_FACTOR, ENERGY_SLACK_J, violates

#: Seconds before this instant (2015-01-01T00:00:00Z) are rejected as absurd.
MIN_TS = 1_420_070_400
#: Seconds after this instant (2099-12-31T23:59:59Z) are rejected: epoch milliseconds, most
#: likely. Also keeps every second storable in ClickHouse's DateTime (UInt32).
MAX_TS = 4_102_444_799
#: The largest ``seq`` (a signed 64-bit integer, what most producers' languages have).
MAX_SEQ = 2**63 - 1
MAX_POWER_W = 3_000.0
MAX_MEMORY_BYTES = 2 * 1024**4
#: Even flagged (estimated) energy is power x 1 s, so this bound always holds for real data; it
#: also keeps huge values out of integer sums.
MAX_ENERGY_J = MAX_POWER_W * ENERGY_POWER_FACTOR + ENERGY_SLACK_J
MIN_TEMP_C, MAX_TEMP_C = -40, 150
MAX_PERCENT = 100.0
#: The longest text field (identifiers, tenant and job names).
MAX_TEXT = 128

NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]+$"  # for pydantic (Rust regex: $ is the very end)
#: The same rule as published: "contains no control character", unanchored, because ``$`` is
#: not portable (Python's ``re``, which the ``jsonschema`` package uses, lets ``$`` match
#: before a final newline, so an anchored pattern would admit ``"node-a\n"`` there).
CONTROL_CHARS = "[\\x00-\\x1f\\x7f]"
TEXT_JSON_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TEXT,
    "not": {"pattern": CONTROL_CHARS},
}
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT, pattern=NO_CONTROL_CHARS),
    WithJsonSchema(TEXT_JSON_SCHEMA),
]
#: An identifier that is not one of the reserved tenant names (``__idle__`` is how the ledger
#: stores idle seconds; a producer sending it would make allocated seconds look idle).
TenantName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT, pattern=NO_CONTROL_CHARS),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT,
            "allOf": [
                {"not": TEXT_JSON_SCHEMA["not"]},
                {"not": {"enum": sorted(RESERVED_TENANTS)}},
            ],
        }
    ),
]

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


class Gap(BaseModel):
    """Seconds the agent did not sample (it was stalled or down): reported, never invented."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(ge=MIN_TS, le=MAX_TS, description="First missing second (epoch).")
    end: int = Field(
        ge=MIN_TS, le=MAX_TS + 1, description="First second after the gap (epoch, exclusive)."
    )
    reason: GapReason
    gpu_uuid: Identifier | None = Field(None, description="Null: the whole node.")

    @model_validator(mode="after")
    def _ordered(self) -> Gap:
        if self.end <= self.start:
            raise violates(
                "gap-ordered", f"gap end {self.end} must be after its start {self.start}"
            )
        return self


#: What a rejection costs, by code, for the codes both versions share (each version's schema
#: publishes its own table as ``x-gpumeter-rejection-codes``).
MALFORMED_JSON = (
    "The record is not a JSON object (syntax error, not UTF-8 outside a string, or not an "
    "object at the top). Costs the record."
)
UNKNOWN_SCHEMA_VERSION = "schema_version is not one this worker supports. Costs the record."
