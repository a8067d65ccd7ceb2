"""Issue 8 (ingest integrity), the contract half: one regression test per finding, each of which
failed on the validator before it. Numbers in the test names are the issue's findings."""

from __future__ import annotations

from typing import Any, get_args

import jsonschema
import orjson
import pytest

from schemas import samples_validation as validation
from schemas.topics import IDLE_TENANT
from schemas.usage import REJECTION_CODES, GpuSecond
from schemas.validation import (
    MAX_REASON_CHARS,
    Rejection,
    RejectionCode,
    parse_batch,
    parse_sample,
)
from tests.unit.schemas.test_usage import NOW, SCHEMA_FILE, batch, parse, sample

SCHEMA = orjson.loads(SCHEMA_FILE.read_bytes())
RECORD_SCHEMA = jsonschema.Draft202012Validator(SCHEMA)
BIG = b"88600000000000000000000000000000000000"  # 8.86e37: beyond any 64-bit integer


def three_samples_middle_marked() -> bytes:
    """A record of three good samples; the middle one has unique values to splice defects in.
    Non-ASCII text before it, so byte and character offsets differ."""
    first = sample(ts=NOW - 3, gpu_model="Tésla ☃ 😀")
    middle = sample(ts=NOW - 2, tenant="MARK", energy_j=548.25, flags=["nvml_error"])
    return orjson.dumps(batch([first, middle, sample(ts=NOW - 1)]))


# -- 2. one bad sample costs only itself, whatever its defect ------------------------------------

DEFECTS = {
    "nan": (b'"energy_j":548.25', b'"energy_j":NaN', "energy_j", "NaN"),
    "infinity": (b'"energy_j":548.25', b'"energy_j":Infinity', "energy_j", "finite"),
    "minus-infinity": (b'"energy_j":548.25', b'"energy_j":-Infinity', "energy_j", "finite"),
    "overflowing-double": (b'"energy_j":548.25', b'"energy_j":1e400', "energy_j", "1e400"),
    "integer-beyond-64-bits": (b'"energy_j":548.25', b'"energy_j":' + BIG, "energy_j", "38 digits"),
    "integer-of-5000-digits": (
        b'"energy_j":548.25',
        b'"energy_j":' + b"9" * 5000,
        "energy_j",
        "5000",
    ),
    "nested-500-deep": (
        b'"flags":["nvml_error"]',
        b'"flags":' + b"[" * 500 + b"]" * 500,
        "flags",
        "nested",
    ),
    "nested-100000-deep": (
        b'"flags":["nvml_error"]',
        b'"flags":' + b"[" * 100_000 + b"]" * 100_000,
        "flags",
        "nested",
    ),
    "lone-surrogate": (b'"tenant":"MARK"', b'"tenant":"MA\\ud800RK"', "tenant", "lone surrogate"),
    "invalid-utf8": (b'"tenant":"MARK"', b'"tenant":"MA\xffRK"', "tenant", "UTF-8"),
    "invalid-utf8-and-deep": (
        b'"tenant":"MARK","job":"train-1"',
        b'"tenant":"MA\xffRK","job":' + b"[" * 100_000 + b"]" * 100_000,
        "tenant",
        "UTF-8",
    ),
    "invalid-utf8-key": (b'"tenant":"MARK"', b'"tenant":"MARK","\xfe":1', "samples[1]", "UTF-8"),
    "surrogate-key": (
        b'"tenant":"MARK"',
        b'"tenant":"MARK","\\udc00":1',
        "samples[1]",
        "surrogate",
    ),
}


@pytest.mark.parametrize("defect", list(DEFECTS), ids=list(DEFECTS))
def test_2_a_sample_that_no_json_parser_reads_the_same_way_costs_only_itself(defect: str) -> None:
    old, new, field, words = DEFECTS[defect]
    raw = three_samples_middle_marked()
    assert raw.count(old) == 1
    # given a record whose middle sample holds the defect
    parsed = parse_batch(raw.replace(old, new), now=NOW)
    # then the record and its other two samples are kept
    assert parsed.batch is not None and (parsed.batch.node_id, parsed.batch.seq) == ("node-a", 7)
    assert [s.ts for s in parsed.samples] == [NOW - 3, NOW - 1]
    # and the defective one is rejected alone, with a short reason naming the field and defect
    [rej] = parsed.rejections
    assert (rej.code, rej.sample_index) == ("invalid_sample", 1)
    assert rej.reason.startswith("samples[1]") and field in rej.reason and words in rej.reason
    assert len(rej.reason) <= MAX_REASON_CHARS
    assert "surrogates not allowed" not in rej.reason
    # and it carries its own exact bytes, not the record's
    sent = raw.replace(old, new)
    first = sent.index(b'{"gpu_uuid"')
    start = sent.index(b'{"gpu_uuid"', first + 1)
    assert rej.raw == sent[start : sent.index(b',{"gpu_uuid"', start)]


@pytest.mark.parametrize(
    ("old", "new", "code", "field"),
    [
        (b'"seq":7', b'"seq":' + BIG, "invalid_envelope", "seq"),
        (b'"seq":7', b'"seq":9223372036854775808', "invalid_envelope", "seq"),  # 2^63
        (b'"node_id":"node-a"', b'"node_id":"node-\xff"', "invalid_envelope", "node_id"),
        (b'"agent_id":"agent-1"', b'"agent_id":"\\ud800"', "invalid_envelope", "agent_id"),
        (
            b'"schema_version":1',
            b'"schema_version":NaN',
            "unknown_schema_version",
            "schema_version",
        ),
        (
            b'"gaps":[]',
            b'"gaps":[' + b"[" * 100_000 + b"]" * 100_000 + b"]",
            "invalid_envelope",
            "gaps",
        ),
    ],
    ids=[
        "seq-8.86e37",
        "seq-2^63",
        "node-invalid-utf8",
        "agent-surrogate",
        "version-nan",
        "deep-gap",
    ],
)
def test_2_a_bad_envelope_costs_its_record_with_a_reason(
    old: bytes, new: bytes, code: str, field: str
) -> None:
    raw = three_samples_middle_marked()
    parsed = parse_batch(raw.replace(old, new), now=NOW)
    assert parsed.batch is None and parsed.samples == ()
    [rej] = parsed.rejections
    assert (rej.code, rej.sample_index) == (code, None)
    assert rej.reason.startswith(field) and len(rej.reason) <= MAX_REASON_CHARS


def test_2_the_seq_bound_is_in_the_schema() -> None:
    assert SCHEMA["properties"]["seq"]["maximum"] == 2**63 - 1
    assert not RECORD_SCHEMA.is_valid(batch(seq=int(BIG)))


def test_2_a_record_not_even_json_is_still_rejected_whole() -> None:
    for raw in (b'{"samples": [1, 2', b'{"a": 1,}', b"\xff\xfe", b'{"a": [}', b"{} {}"):
        [rej] = parse_batch(raw, now=NOW).rejections
        assert rej.code == "malformed_json" and "JSON" in rej.reason and rej.raw == raw


# -- 5. reserved names are refused at ingest -----------------------------------------------------


def test_5_the_reserved_idle_tenant_is_refused_and_the_schema_says_so() -> None:
    # given an allocated sample claiming the ledger's idle marker as its tenant
    parsed = parse(batch([sample(tenant=IDLE_TENANT), sample(ts=NOW - 1)]))
    # then it is rejected alone, and the reason says the name is reserved
    assert [s.ts for s in parsed.samples] == [NOW - 1]
    [rej] = parsed.rejections
    assert rej.sample_index == 0 and "reserved" in rej.reason and "tenant" in rej.reason
    # and the published schema refuses it too
    tenant = SCHEMA["$defs"]["GpuSecond"]["properties"]["tenant"]["anyOf"][0]
    assert {"not": {"enum": [IDLE_TENANT]}} in tenant["allOf"]
    assert not RECORD_SCHEMA.is_valid(batch([sample(tenant=IDLE_TENANT)]))


# -- 6. schema and validator agree both ways: no coercion, and every rule in the schema ----------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ts": str(NOW - 10)}, "ts"),
        ({"ts": True}, "ts"),
        ({"sm_util": "50"}, "sm_util"),
        ({"sm_util": True}, "sm_util"),
        ({"mem_used": True}, "mem_used"),
        ({"mem_used": 1.5}, "mem_used"),
        ({"energy_j": "548"}, "energy_j"),
        ({"temp_c": "61"}, "temp_c"),
        ({"flags": "energy_estimated"}, "flags"),
        ({"mig_uuid": 7}, "mig_uuid"),
    ],
    ids=lambda v: repr(v),
)
def test_6_a_value_of_the_wrong_json_type_is_not_coerced(
    overrides: dict[str, Any], field: str
) -> None:
    doc = batch([sample(**overrides), sample(ts=NOW - 1)])
    assert not RECORD_SCHEMA.is_valid(doc)  # the schema refuses it
    parsed = parse(doc)  # and so does the validator, for that sample only
    assert len(parsed.samples) == 1
    [rej] = parsed.rejections
    assert rej.sample_index == 0 and rej.reason.startswith(f"samples[0].{field}")


@pytest.mark.parametrize("version", ["1", True, 1.5, 2, 0])
def test_6_schema_version_is_an_integer_the_worker_supports(version: Any) -> None:
    doc = batch(schema_version=version)
    assert not RECORD_SCHEMA.is_valid(doc)
    [rej] = parse(doc).rejections
    assert rej.code == "unknown_schema_version" and rej.sample_index is None


def test_6_an_integer_written_with_a_zero_fraction_is_an_integer_as_json_schema_says() -> None:
    # given integer fields written as Python's json writes floats (valid per JSON Schema)
    gap = {"start": float(NOW - 100), "end": float(NOW - 90), "reason": "agent_stalled"}
    s = sample(ts=float(NOW - 10), mem_used=float(60 * 1024**3))
    doc = batch([s], schema_version=1.0, seq=7.0, gaps=[gap])
    assert RECORD_SCHEMA.is_valid(doc)
    # when parsed, then it is accepted, with integers
    parsed = parse(doc)
    assert parsed.rejections == [] and parsed.batch is not None
    assert parsed.batch.seq == 7 and type(parsed.batch.seq) is int
    assert parsed.samples[0].ts == NOW - 10 and type(parsed.samples[0].ts) is int
    assert parsed.batch.gaps[0].start == NOW - 100


@pytest.mark.parametrize(
    "doc",
    [
        batch(schema_version=2),
        batch(gaps=[{"start": NOW, "end": NOW, "reason": "agent_stalled"}]),
        batch([sample(ts=1_420_070_399)]),
        batch([sample(tenant=None, job=None, billing_class="spot")]),
        batch([sample(tenant="acme", job=None)]),
    ],
    ids=["version-2", "empty-gap", "ts-2014", "idle-with-class", "tenant-without-job"],
)
def test_6_what_the_validator_rejects_the_schema_states(doc: dict[str, Any]) -> None:
    rejections = parse(doc).rejections
    assert rejections
    if doc["gaps"]:
        # not expressible in JSON Schema keywords: stated as a rule in x-gpumeter-rules
        assert "(rule gap-ordered)" in rejections[0].reason
    else:
        assert not RECORD_SCHEMA.is_valid(doc)


def test_6_every_rule_the_validator_names_is_published_with_its_fields() -> None:
    from schemas.usage import RULE_IDS

    rules = {r["id"]: r for r in SCHEMA["x-gpumeter-rules"]}
    assert set(rules) == RULE_IDS
    assert {
        "mem-used-within-total",
        "energy-matches-power",
        "gap-ordered",
        "ts-not-in-future",
        "unicode-text",
    } <= set(rules)
    for rule in rules.values():
        assert rule["description"] and isinstance(rule["fields"], list)
        assert rule["rejection_code"] in REJECTION_CODES
    assert rules["ts-not-in-future"]["rejection_code"] == "future_timestamp"
    assert rules["energy-matches-power"]["params"] == {
        "factor": 3.0,
        "slack_j": 50.0,
        "exempt_flags": ["energy_estimated", "counter_reset"],
    }


def test_6_every_integer_in_the_schema_is_bounded() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                assert "enum" in node or ("minimum" in node and "maximum" in node), path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(SCHEMA, "$")


def test_6_the_rejection_codes_are_published() -> None:
    # v1's schema publishes v1's codes; the code set also holds v2's invalid_frame (contract v2)
    assert set(REJECTION_CODES) == set(SCHEMA["x-gpumeter-rejection-codes"])
    assert set(get_args(RejectionCode)) == set(REJECTION_CODES) | {"invalid_frame"}


# -- 7. reasons: short, precise, never the value whole -------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        batch([sample(tenant="x" * 2_000_000)]),
        batch([sample(**{"k" * 2_000_000: 1})]),
        batch(agent_id="a" * 600_000),
        batch([{"gpu_uuid": ["z" * 1000] * 1000, **{f"extra_{i}": i for i in range(200)}}]),
    ],
    ids=["2MB-tenant", "2MB-key", "600KB-agent_id", "every-field-wrong"],
)
def test_7_a_reason_is_bounded_whatever_the_value(doc: dict[str, Any]) -> None:
    [rej] = parse(doc).rejections
    assert len(rej.reason) <= MAX_REASON_CHARS, len(rej.reason)


def test_7_big_integers_are_shown_as_integers() -> None:
    [rej] = parse_batch(
        three_samples_middle_marked().replace(b'"seq":7', b'"seq":' + BIG)
    ).rejections
    assert "886000000000" in rej.reason and "e+" not in rej.reason and "38 digits" in rej.reason


# -- 9. the future-skew allowance is the caller's, and a future sample can come back -------------


def test_9_a_future_sample_keeps_its_index_when_other_samples_are_bad() -> None:
    # given [bad, good, future]: the slow path handles the record
    doc = batch([sample(sm_util=101.0), sample(ts=NOW - 1), sample(ts=NOW + 600)])
    parsed = parse_batch(orjson.dumps(doc), now=NOW, max_future_skew_s=300)
    assert [s.ts for s in parsed.samples] == [NOW - 1]
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [
        ("invalid_sample", 0),
        ("future_timestamp", 2),
    ]
    # and the parked sample's raw is canonical JSON that parses back once its time has come
    parked = parsed.rejections[1].raw
    assert parked == orjson.dumps(orjson.loads(parked))
    assert parse_sample(parked, now=NOW + 300, max_future_skew_s=300) == GpuSecond(
        **sample(ts=NOW + 600)
    )


def test_9_parse_sample_rejects_what_parse_batch_would_reject_in_a_sample() -> None:
    raw = orjson.dumps(sample(sm_util="50"))
    rej = parse_sample(raw, now=NOW, index=4)
    assert isinstance(rej, Rejection)
    assert (rej.code, rej.sample_index, rej.raw) == ("invalid_sample", 4, raw)
    assert rej.reason.startswith("samples[4].sm_util")
    for garbage in (b"", b"{", b"[1]", b'{"energy_j": NaN}'):
        rej = parse_sample(garbage, now=NOW)
        assert isinstance(rej, Rejection) and rej.code == "invalid_sample"


def test_9_the_fast_path_is_one_validation_of_the_whole_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a valid record with a future sample: neither needs the piecewise re-parse
    def no_slow_path(*_: object) -> None:
        raise AssertionError("a valid record went through the slow path")

    monkeypatch.setattr(validation, "_parse_piecewise", no_slow_path)
    parsed = parse_batch(
        orjson.dumps(batch([sample(), sample(ts=NOW + 301)])), now=NOW, max_future_skew_s=300
    )
    assert len(parsed.samples) == 1 and parsed.rejections[0].code == "future_timestamp"
