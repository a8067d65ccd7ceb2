"""The rules of the v2 usage record (``schema_version`` 2, frames) that JSON Schema keywords
cannot state: published in its ``x-gpumeter-rules`` and cited by id in rejection reasons.

Rules v1 and v2 share keep their id; the v2 text states them for a frame's columns (one check
per second of the frame). The numbers come from :mod:`schemas.rule` and
:mod:`schemas.common`, never restated."""

from __future__ import annotations

from schemas.common import MAX_TS
from schemas.rule import (
    ENERGY_EXEMPT_FLAGS,
    ENERGY_POWER_FACTOR,
    ENERGY_SLACK_J,
    MAX_FUTURE_SKEW_S,
    RULES,
    Rule,
)

#: A frame covers at most this many seconds (one hour).
MAX_FRAME_SECONDS = 3600
#: A whole device in milli-GPUs: shares of one frame sum to at most this (the rest is idle).
WHOLE_MILLI = 1000

#: The per-second columns of a frame, each ``n`` long (``temp_c`` only when present).
FRAME_COLUMNS = ("sm_util", "mem_util", "mem_used", "power_w", "energy_j", "temp_c")

_GAP_ORDERED = next(r for r in RULES if r.id == "gap-ordered")

RULES_V2: tuple[Rule, ...] = (
    Rule(
        "frame-columns-aligned",
        "frame",
        (*FRAME_COLUMNS, "allocations[].sm_util"),
        "Every per-second array of a frame (sm_util, mem_util, mem_used, power_w, energy_j, "
        "temp_c when present, and an allocation's sm_util when present) has the same length n, "
        "1 <= n <= max_seconds; element i is the second start + i, so the frame covers the "
        "seconds start .. start + n - 1.",
        code="invalid_frame",
        params={"max_seconds": MAX_FRAME_SECONDS},
    ),
    Rule(
        "frame-ends-in-range",
        "frame",
        ("start", "sm_util"),
        "The frame's last second, start + n - 1, is at most max_ts (as start is).",
        code="invalid_frame",
        params={"max_ts": MAX_TS},
    ),
    Rule(
        "shares-within-device",
        "frame",
        ("allocations[].share_milli",),
        "The share_milli of a frame's allocations (integers, 1..whole_milli each) sum to at "
        "most whole_milli; the remainder of the device is idle. An empty allocations list is a "
        "wholly idle device; one allocation of whole_milli is a whole-GPU allocation.",
        code="invalid_frame",
        params={"whole_milli": WHOLE_MILLI},
    ),
    Rule(
        "allocation-unique",
        "frame",
        ("allocations[].tenant", "allocations[].job"),
        "No (tenant, job) pair appears twice in one frame's allocations.",
        code="invalid_frame",
    ),
    Rule(
        "flags-index-in-frame",
        "frame",
        ("flags[].index",),
        "Every flags entry's index is a second of the frame (0 <= index < n), and no index "
        "appears twice.",
        code="invalid_frame",
    ),
    Rule(
        "mem-used-within-total",
        "second",
        ("mem_used", "mem_total"),
        "mem_used[i] <= mem_total for every second i of the frame.",
        code="invalid_frame",
    ),
    Rule(
        "energy-matches-power",
        "second",
        ("energy_j", "power_w", "flags"),
        "For every second i of the frame whose flags (the flags entry with index i) contain none "
        "of exempt_flags: power_w[i] / factor - slack_j <= energy_j[i] <= power_w[i] * factor + "
        "slack_j (one second at power_w watts, with room for sampling noise).",
        code="invalid_frame",
        params={
            "factor": ENERGY_POWER_FACTOR,
            "slack_j": ENERGY_SLACK_J,
            "exempt_flags": list(ENERGY_EXEMPT_FLAGS),
        },
    ),
    _GAP_ORDERED,
    Rule(
        "ts-not-in-future",
        "second",
        ("start",),
        "Every second start + i <= the worker's clock + max_future_skew_s. The seconds of a "
        "valid frame beyond that are split off as a frame of their own, rejected with its own "
        "code (raw: that frame's JSON) and re-admitted by the worker, whole, once its last "
        "second is no longer that far ahead; the frame's earlier seconds are counted at once. "
        "Check the node's clock.",
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
        "(\\ud800-\\udfff escapes not forming a pair). A bad string in a frame costs that "
        "frame (invalid_frame); anywhere else, the record (invalid_envelope).",
        code="invalid_frame",
    ),
    Rule(
        "mig-slices-only",
        "worker",
        ("gpu_uuid", "mig_uuid", "start"),
        "A GPU in MIG mode is metered only through its slices. A frame for the parent GPU "
        "(mig_uuid null) and a frame for one of its slices (same gpu_uuid, mig_uuid set) that "
        "cover the same second are conflicting claims on the device: the worker keeps the "
        "slice's claim, drops the parent's for that second and records the conflict. A "
        "producer sends no parent frame for a GPU in MIG mode. Not a rejection: the worker "
        "enforces it across records.",
        code=None,
    ),
)
RULE_V2_IDS = frozenset(r.id for r in RULES_V2)
