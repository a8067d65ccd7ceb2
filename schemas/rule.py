"""The rules of ``gpu.usage.v1`` that JSON Schema keywords cannot state (or state only
indirectly), and their parameters: published in the schema's ``x-gpumeter-rules`` so a producer
in another language can check them too, and cited by id in rejection reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_core import PydanticCustomError

#: Default allowance for a sample dated after the worker's clock (GPUMETER_MAX_FUTURE_SKEW_S).
MAX_FUTURE_SKEW_S = 300
#: Energy for one second may differ from average power x 1 s by this factor (plus slack) at most.
ENERGY_POWER_FACTOR = 3.0
ENERGY_SLACK_J = 50.0
#: Flags under which energy_j is not held to power_w (it is estimated, or the counter reset).
ENERGY_EXEMPT_FLAGS = ("energy_estimated", "counter_reset")

#: Where a rule applies: v1 ``sample``; v2 ``frame``, ``allocation`` (an element of a frame's
#: allocations) and ``second`` (each second of a frame); both: ``gap`` and ``string``;
#: ``worker``: across records, enforced by the worker (no rejection: a conflict it records).
RuleScope = Literal["sample", "frame", "allocation", "second", "gap", "string", "worker"]


@dataclass(frozen=True)
class Rule:
    """A validation rule JSON Schema keywords cannot state (or states only indirectly), published
    in the schema's ``x-gpumeter-rules`` so a foreign producer can check it too."""

    id: str
    scope: RuleScope  # where it applies; a violation costs that element, or the record for a gap
    fields: tuple[str, ...]
    description: str
    code: str | None = "invalid_sample"  # the rejection code a violation gets; None: none
    in_json_schema: bool = False  # also expressed with standard keywords (then redundant here)
    params: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "fields": list(self.fields),
            "description": self.description,
            "rejection_code": self.code,
            "in_json_schema": self.in_json_schema,
            "params": self.params,
        }


RULES: tuple[Rule, ...] = (
    Rule(
        "allocation-complete",
        "sample",
        ("tenant", "job"),
        "tenant and job are both strings (an allocated second) or both null or absent (idle).",
        in_json_schema=True,
    ),
    Rule(
        "idle-no-billing-class",
        "sample",
        ("tenant", "job", "billing_class"),
        "An idle second (tenant and job null or absent) has billing_class null or absent.",
        in_json_schema=True,
    ),
    Rule(
        "mem-used-within-total",
        "sample",
        ("mem_used", "mem_total"),
        "mem_used <= mem_total.",
    ),
    Rule(
        "energy-matches-power",
        "sample",
        ("energy_j", "power_w", "flags"),
        "Unless flags contains one of exempt_flags: power_w / factor - slack_j <= energy_j <= "
        "power_w * factor + slack_j (one second at power_w watts, with room for sampling noise).",
        params={
            "factor": ENERGY_POWER_FACTOR,
            "slack_j": ENERGY_SLACK_J,
            "exempt_flags": list(ENERGY_EXEMPT_FLAGS),
        },
    ),
    Rule(
        "gap-ordered",
        "gap",
        ("start", "end"),
        "end > start (end is exclusive). Gaps belong to the envelope: a bad gap costs the record.",
        code="invalid_envelope",
    ),
    Rule(
        "ts-not-in-future",
        "sample",
        ("ts",),
        "ts <= the worker's clock + max_future_skew_s. A later sample is rejected alone with "
        "its own code and re-admitted by the worker once its second is no longer that far "
        "ahead (check the node's clock).",
        code="future_timestamp",
        params={
            "default_max_future_skew_s": MAX_FUTURE_SKEW_S,
            "setting": "GPUMETER_MAX_FUTURE_SKEW_S",
        },
    ),
    Rule(
        "unicode-text",
        "string",
        (),
        "Every string, keys included, is Unicode text: UTF-8 on the wire and no lone surrogate "
        "(\\ud800-\\udfff escapes not forming a pair). A bad string in a sample costs that "
        "sample (invalid_sample); anywhere else, the record (invalid_envelope).",
    ),
)
RULE_IDS = frozenset(r.id for r in RULES)


def violates(rule: str, message: str) -> PydanticCustomError:
    """A cross-field rule failure; its error type names the rule, so reasons can cite it."""
    assert rule in RULE_IDS, rule
    return PydanticCustomError("gpumeter_rule", message, {"rule": rule})
