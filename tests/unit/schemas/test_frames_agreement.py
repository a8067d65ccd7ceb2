"""The published v2 JSON Schema and ``parse_record`` agree, on valid and on mutated records.

The expected verdict is computed here without the code under test: the ``jsonschema`` package
validates the envelope and each frame against ``schemas/json/gpu.usage.v2.schema.json``, and the
rules of its ``x-gpumeter-rules`` are implemented below from their published description and
params. ``parse_record`` must agree on every record: which frames are counted (and their
seconds, as sent), which are refused and with what code, which seconds are parked as future,
and whether the whole record is refused.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from schemas.frame import frame_wire
from schemas.validation import MAX_REASON_CHARS, ParsedRecord, parse_record
from tests.unit.schemas.schema_gen import (
    PROPERTY_SETTINGS,
    encode,
    from_schema,
    has_lone_surrogate,
)
from tests.unit.schemas.v2docs import NOW, SCHEMA_V2_FILE, expanded, frame, record

SCHEMA: dict[str, Any] = json.loads(SCHEMA_V2_FILE.read_text())
DEFS = SCHEMA["$defs"]
RULES = {r["id"]: r for r in SCHEMA["x-gpumeter-rules"]}
SKEW = 300
MAX_TS = DEFS["FrameWire"]["properties"]["start"]["maximum"]
RECORD = jsonschema.Draft202012Validator(SCHEMA)
FRAME = jsonschema.Draft202012Validator({"$ref": "#/$defs/FrameWire", "$defs": DEFS})
COLUMNS = ("sm_util", "mem_util", "mem_used", "power_w", "energy_j", "temp_c")

# -- the oracle ----------------------------------------------------------------------------------


def frame_breaks_a_rule(f: dict[str, Any]) -> bool:
    n = len(f["sm_util"])
    for rule_id, rule in RULES.items():
        if rule["scope"] in ("gap", "string", "worker") or rule_id == "ts-not-in-future":
            continue
        if rule_id == "frame-columns-aligned":
            arrays = [f[c] for c in COLUMNS if f.get(c) is not None]
            arrays += [a["sm_util"] for a in f["allocations"] if a.get("sm_util") is not None]
            broken = any(len(a) != n for a in arrays) or not 1 <= n <= rule["params"]["max_seconds"]
        elif rule_id == "frame-ends-in-range":
            broken = f["start"] + n - 1 > rule["params"]["max_ts"]
        elif rule_id == "shares-within-device":
            broken = sum(a["share_milli"] for a in f["allocations"]) > rule["params"]["whole_milli"]
        elif rule_id == "allocation-unique":
            pairs = [(a["tenant"], a["job"]) for a in f["allocations"]]
            broken = len(set(pairs)) != len(pairs)
        elif rule_id == "flags-index-in-frame":
            indices = [e["index"] for e in f.get("flags", ())]
            broken = any(i >= n for i in indices) or len(set(indices)) != len(indices)
        elif rule_id == "mem-used-within-total":
            broken = any(m > f["mem_total"] for m in f["mem_used"])
        elif rule_id == "energy-matches-power":
            p = rule["params"]
            flags = {e["index"]: set(e["flags"]) for e in f.get("flags", ())}
            broken = any(
                not pw / p["factor"] - p["slack_j"] <= e <= pw * p["factor"] + p["slack_j"]
                for i, (pw, e) in enumerate(zip(f["power_w"], f["energy_j"], strict=False))
                if not flags.get(i, set()) & set(p["exempt_flags"])
            )
        else:
            raise AssertionError(f"the oracle does not implement published rule {rule_id}")
        if broken:
            return True
    return False


def expected_frame(f: Any, now: int) -> str | int:
    """'invalid_frame', or how many of its seconds are counted now (the rest are parked)."""
    if has_lone_surrogate(f) or not FRAME.is_valid(f) or frame_breaks_a_rule(f):
        return "invalid_frame"
    return max(0, min(len(f["sm_util"]), now + SKEW - int(f["start"]) + 1))  # ts-not-in-future


def expected_envelope(doc: dict[str, Any]) -> str | None:
    envelope = dict(doc)
    if isinstance(doc.get("frames"), list):
        envelope["frames"] = []
    if doc.get("schema_version") != 2 or type(doc.get("schema_version")) is bool:
        return "unknown_schema_version"  # (1 or absent is version 1: not generated here)
    if has_lone_surrogate(envelope) or not RECORD.is_valid(envelope):
        return "invalid_envelope"
    if any(g["end"] <= g["start"] for g in doc.get("gaps", ())):  # rule gap-ordered
        return "invalid_envelope"
    return None


def assert_agrees(doc: dict[str, Any], now: int, parsed: ParsedRecord) -> None:
    for r in parsed.rejections:
        assert len(r.reason) <= MAX_REASON_CHARS, r.reason
    record_code = expected_envelope(doc)
    if record_code is not None:
        assert parsed.node_id is None, f"schema says {record_code}; validator accepted {doc}"
        assert [(r.code, r.sample_index) for r in parsed.rejections] == [(record_code, None)]
        return
    assert parsed.node_id is not None, f"schema accepts the envelope; got {parsed.rejections}"
    want_rejections, want_seconds = [], []
    for i, f in enumerate(doc.get("frames", ())):
        verdict = expected_frame(f, now)
        if verdict == "invalid_frame":
            want_rejections.append((i, "invalid_frame"))
            continue
        assert isinstance(verdict, int)
        seconds = expanded(f)
        want_seconds += seconds[:verdict]
        if verdict < len(seconds):
            want_rejections.append((i, "future_timestamp"))
    got = [(r.sample_index, r.code) for r in parsed.rejections]
    assert got == want_rejections, (got, want_rejections, [r.reason for r in parsed.rejections])
    got_seconds = [s for f in parsed.frames for s in expanded(frame_wire(f))]
    assert got_seconds == want_seconds


# -- 1. every frame valid per the schema and its rules is accepted whole, as sent -----------------


def repaired(f: dict[str, Any]) -> dict[str, Any]:
    """The frame with the x-gpumeter-rules made to hold (what the schema alone cannot)."""
    f = copy.deepcopy(f)
    n = len(f["sm_util"])
    for c in COLUMNS:
        if f.get(c) is not None:
            f[c] = [f[c][i % len(f[c])] for i in range(n)]
    f["start"] = min(f["start"], MAX_TS - n + 1)
    seen, allocations = set(), []
    for a in f["allocations"]:
        if (a["tenant"], a["job"]) not in seen:
            seen.add((a["tenant"], a["job"]))
            allocations.append(a)
    while sum(a["share_milli"] for a in allocations) > 1000:
        allocations.pop()
    for a in allocations:
        if a.get("sm_util") is not None:
            a["sm_util"] = [a["sm_util"][i % len(a["sm_util"])] for i in range(n)]
    f["allocations"] = allocations
    flags, used = [], set()
    for e in f.get("flags", ()):
        if e["index"] < n and e["index"] not in used:
            used.add(e["index"])
            flags.append(e)
    f["flags"] = flags
    f["mem_total"] = max([f["mem_total"], *f["mem_used"]])
    exempt_flags = set(RULES["energy-matches-power"]["params"]["exempt_flags"])
    exempt = {e["index"] for e in flags if set(e["flags"]) & exempt_flags}
    pairs = enumerate(zip(f["power_w"], f["energy_j"], strict=True))
    f["energy_j"] = [e if i in exempt else p for i, (p, e) in pairs]
    return f


SCHEMA_FRAMES = from_schema({"$ref": "#/$defs/FrameWire", "$defs": DEFS})


@settings(PROPERTY_SETTINGS, max_examples=30)
@given(f=SCHEMA_FRAMES, ascii_only=st.booleans(), ints_as_floats=st.booleans())
def test_every_frame_valid_per_the_schema_and_its_rules_is_accepted_as_sent(
    f: dict[str, Any], ascii_only: bool, ints_as_floats: bool
) -> None:
    assume(not has_lone_surrogate(f))
    doc = record([repaired(f)])
    assert RECORD.is_valid(doc) and not frame_breaks_a_rule(doc["frames"][0])
    text = encode(doc, ascii_only, ints_as_floats)
    parsed = parse_record(text, now=MAX_TS)
    assert parsed.rejections == [], [r.reason for r in parsed.rejections]
    assert_agrees(doc, MAX_TS, parsed)


# -- 2. mutated records: the verdicts agree ----------------------------------------------------------

ODD = [
    "x", "", True, False, None, [], {}, -1, -0.5, 0, 1.5, 2.0, 100, 100.5, 1000, 1001, 3000.5,
    1e6, 2**41 + 1, 9050.5, "__idle__", "spot", "gold", [1.0], {"a": 1}, "\u0007",
]  # fmt: skip
FRAME_FIELDS = [*DEFS["FrameWire"]["properties"], "colour"]
SHARE_FIELDS = [*DEFS["ShareWire"]["properties"], "colour"]


@st.composite
def mutated_frame(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    f = frame(
        n, start=draw(st.sampled_from([NOW - 100, NOW + SKEW - 2, NOW + SKEW + 5, MAX_TS - n + 1]))
    )
    f["allocations"] = [
        {"tenant": draw(st.sampled_from(["acme", "beta"])), "job": draw(st.sampled_from(["j1", "j2"])),
         "share_milli": draw(st.sampled_from([1, 250, 250, 500, 500, 750, 1000]))}
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3])))
    ]  # fmt: skip
    for a in f["allocations"]:
        if draw(st.booleans()):
            a["sm_util"] = [float(draw(st.integers(0, 100))) for _ in range(n)]
    if draw(st.booleans()):
        f["flags"] = [
            {"index": draw(st.sampled_from([*range(n), *range(n), n])), "flags": draw(st.lists(st.sampled_from(
                ["energy_estimated", "counter_reset", "nvml_error", "clock_jump"]), max_size=2))}
            for _ in range(draw(st.sampled_from([1, 1, 1, 2])))
        ]  # fmt: skip
    f["energy_j"] = [p * draw(st.sampled_from([1.0] * 8 + [0.25, 3.0, 3.2])) for p in f["power_w"]]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        kinds = ["field", "second", "bound", "bound", "drop", "length", "share", "sum", "energy"]
        kind = draw(st.sampled_from(kinds))
        if kind == "field":
            f[draw(st.sampled_from(FRAME_FIELDS))] = draw(st.sampled_from(ODD))
        elif kind == "second":
            column = draw(st.sampled_from(COLUMNS))
            if isinstance(f.get(column), list) and f[column]:
                f[column][draw(st.integers(0, len(f[column]) - 1))] = draw(st.sampled_from(ODD))
        elif kind == "bound":  # a second at, just inside or just outside a published bound
            column = draw(st.sampled_from([c for c in COLUMNS if isinstance(f.get(c), list)]))
            items = _number_schema(DEFS["FrameWire"]["properties"][column])
            bound = draw(st.sampled_from([items["minimum"], items["maximum"]]))
            step = draw(st.sampled_from([-1, 0, 1])) * (1 if items["type"] == "integer" else 1e-3)
            if f[column]:
                i = draw(st.integers(0, len(f[column]) - 1))
                f[column][i] = bound + step
                # keep rule energy-matches-power out of the way where the partner allows it
                partner = {"power_w": "energy_j", "energy_j": "power_w"}.get(column)
                if partner and isinstance(f.get(partner), list) and i < len(f[partner]):
                    f[partner][i] = bound if column == "power_w" else min(bound, 3000.0)
        elif kind == "drop":
            f.pop(draw(st.sampled_from(FRAME_FIELDS)), None)
        elif kind == "length":
            column = draw(st.sampled_from(COLUMNS))
            if isinstance(f.get(column), list):
                f[column] = f[column][:-1] if draw(st.booleans()) else f[column] + f[column][:1]
        elif kind == "share" and isinstance(f.get("allocations"), list) and f["allocations"]:
            f["allocations"][0][draw(st.sampled_from(SHARE_FIELDS))] = draw(st.sampled_from(ODD))
        elif kind == "sum" and isinstance(f.get("allocations"), list) and f["allocations"]:
            # the shares made to sum to exactly 1000, or 1001
            first = f["allocations"][0]
            others = sum(a.get("share_milli", 0) for a in f["allocations"][1:])
            if type(others) is int and 1000 - others >= 1:
                first["share_milli"] = 1000 - others + draw(st.sampled_from([0, 1]))
        elif kind == "energy" and isinstance(f.get("power_w"), list):
            i = draw(st.integers(0, n - 1))
            power, energy = f["power_w"], f.get("energy_j")
            if (
                isinstance(energy, list)
                and i < min(len(power), len(energy))
                and type(power[i]) in (int, float)
            ):
                f["energy_j"][i] = f["power_w"][i] * 3 + 50 + draw(st.sampled_from([0, 0.001]))
    return f


def _number_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """The item schema of a per-second array (through anyOf for the nullable ones)."""
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "array":
            items = option["items"]
            return next(o for o in items.get("anyOf", [items]) if o.get("type") != "null")
    raise AssertionError(prop)


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    doc = record(draw(st.lists(mutated_frame(), min_size=1, max_size=3)))
    if draw(st.integers(1, 10)) == 10:
        doc[draw(st.sampled_from(["schema_version", "node_id", "seq", "frames", "gaps", "x"]))] = (
            draw(st.sampled_from(ODD))
        )
    return doc


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(doc=mutated_records(), ascii_only=st.booleans())
def test_the_validator_and_the_published_schema_agree_on_mutated_records(
    doc: dict[str, Any], ascii_only: bool
) -> None:
    text = encode(doc, ascii_only) if ascii_only else orjson.dumps(doc)
    assert_agrees(doc, NOW, parse_record(text, now=NOW))


# -- 3. every published bound, at, just inside and just outside --------------------------------------


def _bounds() -> list[tuple[str, float, float]]:
    out = []
    for column in COLUMNS:
        items = _number_schema(DEFS["FrameWire"]["properties"][column])
        step = 1 if items["type"] == "integer" else 1e-3
        for bound, sign in ((items["minimum"], -1), (items["maximum"], 1)):
            for delta in (-sign * step, 0, sign * step):
                out.append((column, bound, delta))
    return out


@pytest.mark.parametrize(("column", "bound", "delta"), _bounds())
def test_each_published_bound_of_a_second_agrees(column: str, bound: float, delta: float) -> None:
    f = frame(3, mem_total=DEFS["FrameWire"]["properties"]["mem_total"]["maximum"])
    f[column][1] = bound + delta
    if column == "power_w":  # energy = power keeps rule energy-matches-power for any power
        f["energy_j"][1] = bound + delta
    elif column == "energy_j":  # the most power a second may have, or none
        f["power_w"][1] = 3000.0 if bound > 0 else 0.0
    doc = record([f])
    assert_agrees(doc, NOW, parse_record(orjson.dumps(doc), now=NOW))


@pytest.mark.parametrize(
    ("path", "values"),
    [
        (("start",), [1_420_070_399, 1_420_070_400, 4_102_444_797, 4_102_444_798]),
        (("mem_total",), [-1, 0, 2 * 1024**4, 2 * 1024**4 + 1]),
        (("allocations", 0, "share_milli"), [0, 1, 1000, 1001]),
        (("gpu_uuid",), ["", "x", "x" * 128, "x" * 129]),
        (("allocations", 0, "tenant"), ["", "t" * 128, "t" * 129, "__idle__"]),
    ],
)
def test_each_published_bound_of_a_field_agrees(path: tuple[Any, ...], values: list[Any]) -> None:
    for value in values:
        f = frame(3, allocations=[{"tenant": "acme", "job": "j", "share_milli": 500}])
        f["mem_used"] = [0, 0, 0]
        target: Any = f
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        doc = record([f])
        assert_agrees(doc, MAX_TS, parse_record(orjson.dumps(doc), now=MAX_TS))
