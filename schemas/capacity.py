"""The sellable-capacity feed contract: one record per GPU model and minute on ``gpu.capacity.v1``.

Produced by ``gpumeter capacity --publish`` (see :mod:`analytics.capacity` for how each figure
is computed); consumed by sales channels and marketplaces, in any language, from the published
JSON Schema (``gpumeter capacity --schema``). Quantities of GPUs are decimal strings (shared
GPUs make them fractional; a string keeps them exact), money is a decimal string with its
currency, times are UTC epoch seconds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CAPACITY_TOPIC = "gpu.capacity.v1"
CAPACITY_SCHEMA_VERSION = 1

_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


class HourOutlook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    hour_start: int = Field(description="Start of the forecast hour, UTC epoch seconds.")
    expected_idle_gpus: str | None = Field(
        pattern=_DECIMAL,
        description="Mean idle GPU-equivalents at this hour of week over the past weeks; "
        "null without history.",
    )
    likely_idle_gpus: str | None = Field(
        pattern=_DECIMAL,
        description="A low quantile of the same past values: at least this much was idle in "
        "most past weeks. The figure to sell against. Null without history.",
    )
    weeks_of_history: int = Field(ge=0)


class CapacityRecord(BaseModel):
    """Idle capacity of one GPU model in one closed minute, and its outlook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(CAPACITY_SCHEMA_VERSION, json_schema_extra={"enum": [1]})
    minute: int = Field(description="The closed minute described, UTC epoch seconds.")
    gpu_model: str = Field(min_length=1, max_length=128)
    idle_gpus: str = Field(
        pattern=_DECIMAL,
        description="Idle GPU-equivalents in the minute (the unallocated share of shared GPUs "
        "counts by its share).",
    )
    whole_idle_devices: int = Field(
        ge=0, description="Devices (GPUs or MIG slices) idle at full share all minute."
    )
    observed_devices: int = Field(ge=0, description="Devices that reported in the minute.")
    spot_price_per_gpu_hour: str | None = Field(
        pattern=_DECIMAL, description="The model's spot rate from the asset register, or null."
    )
    currency: str | None = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, or null.")
    outlook: list[HourOutlook]
    forecast_mae_gpus: str | None = Field(
        pattern=_DECIMAL,
        description="Mean absolute error of expected_idle_gpus over the backtest weeks, GPUs.",
    )
    forecast_oversold_rate: str | None = Field(
        pattern=_DECIMAL,
        description="Share (0..1) of backtest hours with fewer idle GPUs than likely_idle_gpus.",
    )
    generated_at: int = Field(description="When the record was computed, UTC epoch seconds.")


def capacity_json_schema() -> dict[str, Any]:
    schema = CapacityRecord.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gpumeter.dev/schemas/gpu.capacity.v1.schema.json"
    schema["description"] = (
        "One Kafka record on topic gpu.capacity.v1 (UTF-8 JSON, key: gpu_model): the idle "
        "capacity of one GPU model in one closed minute, with a forecast by hour of week and "
        "that forecast's measured error on past weeks. Produced by `gpumeter capacity --publish`."
    )
    return schema
