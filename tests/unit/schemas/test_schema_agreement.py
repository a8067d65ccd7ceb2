"""The published JSON Schema and the validator agree, on records generated from the schema file.

Records come from ``schemas/json/gpu.usage.v1.schema.json`` itself (hypothesis-jsonschema), as
a producer in another language would build them. The expected verdict is computed here without
the code under test: the ``jsonschema`` package validates the envelope and each sample, and the
rules of the schema's ``x-gpumeter-rules`` are implemented below from their published
description and params. ``parse_batch`` must agree on every record: which samples are counted,
which are rejected and with what code, and whether the whole record is rejected.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.validation import MAX_REASON_CHARS, ParsedBatch, parse_batch
from tests.unit.schemas.schema_gen import (
    PROPERTY_SETTINGS,
    encode,
    from_schema,
    has_lone_surrogate,
)
from tests.unit.schemas.test_usage import SCHEMA_FILE

SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
DEFS = SCHEMA["$defs"]
RULES = {r["id"]: r for r in SCHEMA["x-gpumeter-rules"]}
SKEW = 300
MAX_TS = DEFS["GpuSecond"]["properties"]["ts"]["maximum"]


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "$defs": DEFS})


RECORD = jsonschema.Draft202012Validator(SCHEMA)
SAMPLE = _validator({"$ref": "#/$defs/GpuSecond"})
VERSION = _validator(SCHEMA["properties"]["schema_version"])
PIECES = {  # the properties of each part of a record, for mutations
    "envelope": SCHEMA,
    "sample": DEFS["GpuSecond"],
    "gap": DEFS["Gap"],
}

# -- the oracle: jsonschema plus x-gpumeter-rules, implemented from their published text ---------


def sample_breaks_a_rule(s: dict[str, Any]) -> bool:
    for rule_id, rule in RULES.items():
        if rule["scope"] != "sample" or rule_id == "ts-not-in-future":
            continue
        if rule_id == "allocation-complete":
            broken = (s.get("tenant") is None) != (s.get("job") is None)
        elif rule_id == "idle-no-billing-class":
            idle = s.get("tenant") is None and s.get("job") is None
            broken = idle and s.get("billing_class") is not None
        elif rule_id == "mem-used-within-total":
            broken = s["mem_used"] > s["mem_total"]
        elif rule_id == "energy-matches-power":
            p = rule["params"]
            if set(s.get("flags", ())) & set(p["exempt_flags"]):
                continue
            low = s["power_w"] / p["factor"] - p["slack_j"]
            high = s["power_w"] * p["factor"] + p["slack_j"]
            broken = not low <= s["energy_j"] <= high
        else:
            raise AssertionError(f"the oracle does not implement published rule {rule_id}")
        if broken:
            return True
    return False


def expected_sample(s: Any, now: int) -> str:
    """'counted', 'invalid_sample' or 'future_timestamp'."""
    if has_lone_surrogate(s) or not SAMPLE.is_valid(s) or sample_breaks_a_rule(s):
        return "invalid_sample"
    if s["ts"] > now + SKEW:  # rule ts-not-in-future
        return "future_timestamp"
    return "counted"


def expected_envelope(doc: dict[str, Any]) -> str | None:
    """None if the envelope is good, else the rejection code of the whole record."""
    envelope = dict(doc)
    if isinstance(doc.get("samples"), list):
        envelope["samples"] = []
    if "schema_version" in doc and (
        has_lone_surrogate(doc["schema_version"]) or not VERSION.is_valid(doc["schema_version"])
    ):
        return "unknown_schema_version"
    if has_lone_surrogate(envelope) or not RECORD.is_valid(envelope):
        return "invalid_envelope"
    if any(g["end"] <= g["start"] for g in doc.get("gaps", ())):  # rule gap-ordered
        return "invalid_envelope"
    return None


def assert_agrees(doc: dict[str, Any], raw: bytes, now: int, parsed: ParsedBatch) -> None:
    for r in parsed.rejections:
        assert len(r.reason) <= MAX_REASON_CHARS, r.reason
    record_code = expected_envelope(doc)
    if record_code is not None:
        assert parsed.batch is None, f"schema says {record_code}; validator accepted {raw[:300]!r}"
        assert [(r.code, r.sample_index) for r in parsed.rejections] == [(record_code, None)]
        return
    assert parsed.batch is not None, f"schema accepts the envelope; got {parsed.rejections}"
    verdicts = [expected_sample(s, now) for s in doc.get("samples", ())]
    got = [(r.sample_index, r.code) for r in parsed.rejections]
    want = [(i, v) for i, v in enumerate(verdicts) if v != "counted"]
    assert got == want, (got, want, [r.reason for r in parsed.rejections])
    counted = [s for s, v in zip(doc.get("samples", ()), verdicts, strict=True) if v == "counted"]
    assert [s.model_dump(mode="json", exclude_defaults=True) for s in parsed.samples] == [
        without_defaults(s) for s in counted
    ]


def without_defaults(s: dict[str, Any]) -> dict[str, Any]:
    props = DEFS["GpuSecond"]["properties"]
    return {k: v for k, v in s.items() if "default" not in props[k] or v != props[k]["default"]}


# -- generating records from the published schema ------------------------------------------------


def _generation_schema() -> dict[str, Any]:
    """The published schema with samples generated separately and few gaps (speed only: every
    value still comes from the published subschemas)."""
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["samples"] = {"type": "array", "maxItems": 0}
    schema["properties"]["gaps"]["maxItems"] = 2
    return schema


ENVELOPES = from_schema(_generation_schema())
SAMPLES = from_schema({"$ref": "#/$defs/GpuSecond", "$defs": DEFS})


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(ENVELOPES)
    samples = draw(st.lists(SAMPLES, max_size=4))
    if samples or draw(st.booleans()):
        doc["samples"] = samples
    else:
        doc.pop("samples", None)
    return doc


def repaired(doc: dict[str, Any]) -> dict[str, Any]:
    """The record with the x-gpumeter-rules made to hold (what the schema alone cannot)."""
    doc = copy.deepcopy(doc)
    for g in doc.get("gaps", ()):
        g["start"], g["end"] = sorted((g["start"], g["end"]))
        if g["end"] == g["start"]:
            g["end"] += 1
    for s in doc.get("samples", ()):
        if s["mem_used"] > s["mem_total"]:
            s["mem_used"], s["mem_total"] = s["mem_total"], s["mem_used"]
        if not set(s.get("flags", ())) & set(
            RULES["energy-matches-power"]["params"]["exempt_flags"]
        ):
            s["energy_j"] = s["power_w"]
    return doc


# -- the properties ------------------------------------------------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(doc=records(), ascii_only=st.booleans(), ints_as_floats=st.booleans())
def test_every_record_valid_per_the_schema_and_its_rules_is_accepted_whole(
    doc: dict[str, Any], ascii_only: bool, ints_as_floats: bool
) -> None:
    # given a record generated from the published schema, with its x-gpumeter-rules holding
    doc = repaired(doc)
    assert RECORD.is_valid(doc)
    # when a validator whose clock is past every valid ts parses it
    raw = encode(doc, ascii_only, ints_as_floats)
    parsed = parse_batch(raw, now=MAX_TS, max_future_skew_s=SKEW)
    # then nothing is rejected and every sample is counted, as sent
    assert parsed.rejections == [], [r.reason for r in parsed.rejections]
    assert len(parsed.samples) == len(doc.get("samples", ()))
    assert_agrees(doc, b"", MAX_TS, parsed)


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(
    doc=records(),
    now=st.integers(1_420_070_400, MAX_TS),
    ascii_only=st.booleans(),
    ints_as_floats=st.booleans(),
)
def test_the_validator_agrees_with_the_schema_on_generated_records(
    doc: dict[str, Any], now: int, ascii_only: bool, ints_as_floats: bool
) -> None:
    # given a record from the schema (its rules may or may not hold) and any validator clock
    raw = encode(doc, ascii_only, ints_as_floats)
    # then the validator's verdict is the schema's, sample by sample
    assert_agrees(doc, raw, now, parse_batch(raw, now=now, max_future_skew_s=SKEW))


WRONG_TYPED = ["7", "", True, False, None, 1.5, 7, [], ["x"], {}, {"a": 1}]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A record from the schema, repaired, then broken once in one place; and what broke."""
    doc = repaired(draw(records()))
    targets: list[tuple[str, dict[str, Any]]] = [("envelope", doc)]
    targets += [("sample", s) for s in doc.get("samples", ())]
    targets += [("gap", g) for g in doc.get("gaps", ())]
    piece_kind, piece = draw(st.sampled_from(targets))
    props = PIECES[piece_kind]["properties"]
    required = PIECES[piece_kind].get("required", [])
    ops = ["wrong_type", "out_of_range", "extra_field", "lone_surrogate"]
    ops += ["missing_required"] if required else []
    ops += ["reserved_tenant"] if piece_kind == "sample" else []
    op = draw(st.sampled_from(ops))
    if op == "wrong_type":
        name = draw(st.sampled_from(sorted(props)))
        check = _validator(props[name])
        value = draw(st.sampled_from([v for v in WRONG_TYPED if not check.is_valid(v)]))
        piece[name] = value
    elif op == "out_of_range":
        bounded = sorted(n for n, p in props.items() if _bounds(p))
        name = draw(st.sampled_from(bounded))
        low, high = _bounds(props[name])
        over = draw(st.sampled_from([1, 0.5, 10**6, 10**30]))
        if high is not None and (low is None or draw(st.booleans())):
            piece[name] = high + over
        else:
            piece[name] = low - over
    elif op == "extra_field":
        piece[draw(st.sampled_from(["extra", "Tenant", "ts ", "samples_"]))] = draw(
            st.sampled_from(WRONG_TYPED)
        )
    elif op == "lone_surrogate":
        strings = sorted(n for n, v in piece.items() if isinstance(v, str))
        name = draw(st.sampled_from(strings or ["extra"]))
        piece[name] = "\ud800" + str(piece.get(name, ""))
    elif op == "missing_required":
        name = draw(st.sampled_from(required))
        piece.pop(name, None)
    else:  # reserved_tenant
        piece["tenant"], piece["job"] = "__idle__", piece.get("job") or "job-1"
    return doc, f"{op} in {piece_kind}"


def _bounds(prop: dict[str, Any]) -> tuple[Any, Any] | None:
    branch = next((b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"), prop)
    if "minimum" in branch or "maximum" in branch:
        return branch.get("minimum"), branch.get("maximum")
    return None


@settings(PROPERTY_SETTINGS, max_examples=120)
@given(case=mutated(), now=st.integers(1_420_070_400, MAX_TS + 1))
def test_a_record_broken_in_one_place_is_rejected_where_the_schema_says(
    case: tuple[dict[str, Any], str], now: int
) -> None:
    # given a valid record broken once: a wrong type, an out-of-range value, a missing or an
    # unknown field, a lone surrogate, the reserved tenant
    doc, what = case
    raw = encode(doc, ascii_only=True)
    # then the schema (with its rules) refuses something...
    samples = doc.get("samples", ())
    assert expected_envelope(doc) is not None or any(
        expected_sample(s, MAX_TS) == "invalid_sample" for s in samples
    ), f"the mutation ({what}) did not break the schema: {doc}"
    # ...and the validator refuses exactly that: the record, or only the broken sample
    assert_agrees(doc, raw, now, parse_batch(raw, now=now, max_future_skew_s=SKEW))


# -- exhaustive, per field: every wrong type and every bound the schema states -------------------

VALID_RECORD = {
    "schema_version": 1,
    "node_id": "node-a",
    "agent_id": "agent-1",
    "seq": 7,
    "samples": [
        {
            "gpu_uuid": "GPU-1",
            "gpu_model": "H100",
            "ts": 1_700_000_000,
            "tenant": "acme",
            "job": "j",
            "billing_class": "spot",
            "sm_util": 50,
            "mem_util": 50.0,
            "mem_used": 1,
            "mem_total": 2,
            "power_w": 100.0,
            "energy_j": 100,
            "temp_c": 50.0,
            "flags": ["nvml_error"],
        }
    ],
    "gaps": [{"start": 1_700_000_000, "end": 1_700_000_001, "reason": "agent_stalled"}],
}


def _cases() -> list[tuple[str, str, Any]]:
    """(piece, field, value) for each value the field's published subschema refuses: wrong
    JSON types, and just past each stated bound (as an integer and as a fraction)."""
    cases = []
    for piece in ("envelope", "sample", "gap"):
        for name, prop in PIECES[piece]["properties"].items():
            if name == "samples":
                continue
            candidates = list(WRONG_TYPED)
            bounds = _bounds(prop)
            if bounds is not None:
                low, high = bounds
                candidates += [] if low is None else [low - 1, low - 0.5]
                candidates += [] if high is None else [high + 1, high + 0.5]
            check = _validator(prop)
            cases += [(piece, name, v) for v in candidates if not check.is_valid(v)]
    return cases


@pytest.mark.parametrize(("piece", "field", "value"), _cases(), ids=repr)
def test_each_value_a_field_schema_refuses_is_refused_there(
    piece: str, field: str, value: Any
) -> None:
    # given the valid record with one field set to a value its published subschema refuses
    doc = copy.deepcopy(VALID_RECORD)
    target = {"envelope": doc, "sample": doc["samples"][0], "gap": doc["gaps"][0]}[piece]
    target[field] = value
    # then the validator refuses it where the schema does: the record, or only the sample
    raw = encode(doc, ascii_only=True)
    assert_agrees(doc, raw, MAX_TS, parse_batch(raw, now=MAX_TS, max_future_skew_s=SKEW))
    assert parse_batch(raw, now=MAX_TS).rejections


def test_the_valid_record_is_valid() -> None:
    assert RECORD.is_valid(VALID_RECORD)
    raw = encode(VALID_RECORD, ascii_only=True)
    parsed = parse_batch(raw, now=MAX_TS)
    assert parsed.rejections == [] and len(parsed.samples) == 1
