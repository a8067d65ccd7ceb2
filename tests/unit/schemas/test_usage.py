"""The ``gpu.usage.v1`` contract: what parses, what is rejected (and why, in words a human can act
on), the record/sample rejection policy, deterministic sample ids, and the published JSON Schema."""

from __future__ import annotations

import calendar
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.usage import Gap, GpuSecond
from schemas.validation import Rejection, parse_batch, parse_sample

NOW = 1_700_000_000  # the validator's clock in these tests (2023-11-14T22:13:20Z)
# 2015-01-01T00:00:00Z, computed here rather than taken from the module under test.
Y2015 = calendar.timegm((2015, 1, 1, 0, 0, 0))
# The namespace published in the JSON Schema description; ids already stored depend on it.
NAMESPACE = uuid.UUID("6f1c7a52-3b0e-5d2a-9a51-7c7e0c2a9d11")
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "json" / "gpu.usage.v1.schema.json"


def sample(**overrides: Any) -> dict[str, Any]:
    """A plausible allocated H100 second, as a producer would send it."""
    doc: dict[str, Any] = {
        "gpu_uuid": "GPU-0001",
        "mig_uuid": None,
        "gpu_model": "H100-SXM5-80GB",
        "ts": NOW - 10,
        "tenant": "acme",
        "job": "train-1",
        "billing_class": "on_demand",
        "sm_util": 87.5,
        "mem_util": 40.0,
        "mem_used": 60 * 1024**3,
        "mem_total": 80 * 1024**3,
        "power_w": 550.0,
        "energy_j": 548.0,
        "temp_c": 61.0,
        "flags": [],
    }
    doc.update(overrides)
    return doc


def batch(samples: list[Any] | None = None, /, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "node_id": "node-a",
        "agent_id": "agent-1",
        "seq": 7,
        "samples": [sample()] if samples is None else samples,
        "gaps": [],
    }
    doc.update(overrides)
    return doc


def parse(doc: Any, now: float = NOW):  # type: ignore[no-untyped-def]
    return parse_batch(orjson.dumps(doc), now=now)


def reject_one_sample(**overrides: Any) -> str:
    """Parse a batch whose only sample has ``overrides``; assert it was rejected alone; give the
    reason."""
    parsed = parse(batch([sample(**overrides)]))
    assert parsed.batch is not None, "a bad sample must not reject the envelope"
    assert parsed.samples == ()
    assert len(parsed.rejections) == 1
    rej = parsed.rejections[0]
    assert rej.code == "invalid_sample"
    assert rej.sample_index == 0
    return rej.reason


# -- accepted ------------------------------------------------------------------------------------


def test_a_valid_batch_parses_with_every_field() -> None:
    # given a well-formed batch with an allocated sample, an idle MIG sample and a gap
    idle = sample(
        gpu_uuid="GPU-0002",
        mig_uuid="MIG-0002-a",
        tenant=None,
        job=None,
        billing_class=None,
        sm_util=0.0,
        power_w=60.0,
        energy_j=61.0,
    )
    gap = {"start": NOW - 100, "end": NOW - 90, "reason": "agent_stalled", "gpu_uuid": None}
    # when it is parsed
    parsed = parse(batch([sample(), idle], gaps=[gap]))
    # then nothing is rejected and the fields arrive as sent
    assert parsed.rejections == []
    assert parsed.batch is not None
    assert (parsed.batch.node_id, parsed.batch.agent_id, parsed.batch.seq) == (
        "node-a",
        "agent-1",
        7,
    )
    first, second = parsed.samples
    assert first.tenant == "acme" and first.job == "train-1" and first.allocated
    assert first.mem_used == 60 * 1024**3 and first.energy_j == 548.0
    assert second.tenant is None and second.mig_uuid == "MIG-0002-a" and not second.allocated
    assert parsed.batch.gaps == (Gap(start=NOW - 100, end=NOW - 90, reason="agent_stalled"),)


@pytest.mark.parametrize("field", ["sm_util", "mem_util"])
@pytest.mark.parametrize("value", [0.0, 100.0])
def test_utilization_bounds_are_inclusive(field: str, value: float) -> None:
    parsed = parse(batch([sample(**{field: value})]))
    assert parsed.rejections == [] and len(parsed.samples) == 1


def test_energy_inconsistent_with_power_is_accepted_when_flagged_estimated() -> None:
    # given a second whose energy is far from power x 1 s, but flagged as estimated
    doc = sample(power_w=300.0, energy_j=2_000.0, flags=["energy_estimated"])
    # when parsed, then it is kept
    parsed = parse(batch([doc]))
    assert parsed.rejections == []
    assert parsed.samples[0].flags == ("energy_estimated",)


def test_timestamp_boundaries() -> None:
    # 2015-01-01T00:00:00Z itself and exactly the allowed skew into the future are accepted
    assert parse(batch([sample(ts=Y2015)])).rejections == []
    assert parse(batch([sample(ts=NOW + 300)])).rejections == []


# -- rejected, one reason at a time --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sm_util": -0.5}, "sm_util"),
        ({"sm_util": 100.5}, "sm_util"),
        ({"mem_util": -1.0}, "mem_util"),
        ({"mem_util": 250.0}, "mem_util"),
        ({"colour": "green"}, "colour"),
        ({"gpu_uuid": "GPU-\x00001"}, "gpu_uuid"),
        ({"tenant": "ac\nme"}, "tenant"),
        ({"job": "train\x7f1"}, "job"),
        ({"tenant": "__idle__"}, "tenant"),  # finding 5: the ledger's idle marker
    ],
    ids=[
        "sm_util-negative",
        "sm_util-over-100",
        "mem_util-negative",
        "mem_util-over-100",
        "unknown-field",
        "nul-in-gpu_uuid",
        "newline-in-tenant",
        "del-in-job",
        "reserved-idle-tenant",
    ],
)
def test_an_implausible_sample_is_rejected_with_a_message_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    # given a batch whose only sample has one bad field; when parsed
    reason = reject_one_sample(**overrides)
    # then the reason says which sample and which field
    assert reason.startswith(f"samples[0].{field}:"), reason


@pytest.mark.parametrize(
    ("overrides", "rule", "field"),
    [
        ({"mem_used": 81 * 1024**3}, "mem-used-within-total", "mem_used"),  # above 80 GiB total
        ({"power_w": 300.0, "energy_j": 2_000.0}, "energy-matches-power", "energy_j"),
        ({"power_w": 600.0, "energy_j": 1.0}, "energy-matches-power", "energy_j"),
        ({"tenant": "acme", "job": None}, "allocation-complete", "job"),
        (
            {"tenant": None, "job": "train-1", "billing_class": None},
            "allocation-complete",
            "tenant",
        ),
        (
            {"tenant": None, "job": None, "billing_class": "spot"},
            "idle-no-billing-class",
            "billing",
        ),
    ],
    ids=[
        "mem_used-over-total",
        "energy-too-high",
        "energy-too-low",
        "tenant-without-job",
        "job-without-tenant",
        "idle-with-billing-class",
    ],
)
def test_a_broken_cross_field_rule_is_named_by_its_published_id(
    overrides: dict[str, Any], rule: str, field: str
) -> None:
    # given a sample breaking one rule of the schema's x-gpumeter-rules; when parsed
    reason = reject_one_sample(**overrides)
    # then the reason cites the rule by the id producers read in the schema, not "record"
    assert reason.startswith(f"samples[0] (rule {rule}): "), reason
    assert field in reason and ".record" not in reason
    assert rule in {r["id"] for r in orjson.loads(SCHEMA_FILE.read_bytes())["x-gpumeter-rules"]}


def test_a_timestamp_far_in_the_future_is_parked_relative_to_the_given_clock() -> None:
    # given a sample 301 s ahead of the validator's clock, next to a good one
    future = sample(ts=NOW + 301)
    parsed = parse_batch(orjson.dumps(batch([sample(), future])), now=NOW, max_future_skew_s=300)
    # then only it is rejected, with its own code, a reason naming ts and the node's clock,
    # and its canonical JSON, which parses back as a sample once its time has come
    assert [s.ts for s in parsed.samples] == [NOW - 10]
    [rej] = parsed.rejections
    assert (rej.code, rej.sample_index) == ("future_timestamp", 1)
    assert "ts" in rej.reason and "future" in rej.reason and "clock" in rej.reason
    assert parse_sample(rej.raw, now=NOW + 1, max_future_skew_s=300) == GpuSecond(**future)
    again = parse_sample(rej.raw, now=NOW, max_future_skew_s=300)
    assert isinstance(again, Rejection) and again.code == "future_timestamp"
    # and the same sample is fine for a validator whose clock is 10 minutes later
    assert parse(batch([future]), now=NOW + 600).rejections == []


def test_the_future_skew_allowance_is_a_parameter() -> None:
    raw = orjson.dumps(batch([sample(ts=NOW + 60)]))
    assert parse_batch(raw, now=NOW, max_future_skew_s=60).rejections == []
    [rej] = parse_batch(raw, now=NOW, max_future_skew_s=59).rejections
    assert rej.code == "future_timestamp"


def test_a_timestamp_before_2015_is_rejected() -> None:
    reason = reject_one_sample(ts=Y2015 - 1)
    assert "ts" in reason and "2015" in reason


def test_a_timestamp_in_milliseconds_is_rejected() -> None:
    # a common producer mistake: epoch milliseconds
    [rej] = parse(batch([sample(ts=NOW * 1000)])).rejections
    assert "ts" in rej.reason


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "1e400"])
def test_non_finite_energy_is_rejected_even_when_flagged_estimated(value: str) -> None:
    # given a record whose energy is not a finite number (pydantic's JSON parser reads
    # `Infinity` and overflowing literals as float inf); the flag skips the power check
    raw = orjson.dumps(batch([sample(flags=["energy_estimated"])])).replace(
        b'"energy_j":548.0', b'"energy_j":' + value.encode()
    )
    # when parsed
    parsed = parse_batch(raw, now=NOW)
    # then no sample with a non-finite energy gets through (the aggregator would crash on it:
    # round(inf * 1000) raises OverflowError)
    assert parsed.samples == ()
    assert len(parsed.rejections) == 1
    assert (
        "energy_j" in parsed.rejections[0].reason or parsed.rejections[0].code == "malformed_json"
    )


def test_absurd_energy_is_rejected_even_when_flagged_estimated() -> None:
    # given an "estimated" energy of a terawatt-second: no GPU within MAX_POWER_W can use that
    reason = reject_one_sample(energy_j=1e12, flags=["energy_estimated"])
    assert "energy_j" in reason


def test_unknown_schema_version_rejects_the_record() -> None:
    # given a record from a newer agent
    parsed = parse(batch(schema_version=2))
    # then the whole record is rejected with a code of its own and an actionable message
    assert parsed.batch is None and parsed.samples == ()
    [rej] = parsed.rejections
    assert rej.code == "unknown_schema_version"
    assert rej.sample_index is None
    assert "schema_version" in rej.reason and "2" in rej.reason


@pytest.mark.parametrize("raw", [b'{"schema_version": 1, "node_id": ', b"\xff\xfe", b""])
def test_malformed_json_rejects_the_record(raw: bytes) -> None:
    parsed = parse_batch(raw, now=NOW)
    assert parsed.batch is None
    [rej] = parsed.rejections
    assert rej.code == "malformed_json"
    assert rej.sample_index is None
    assert rej.raw == raw  # the offending payload is kept for the rejected table
    assert "JSON" in rej.reason


@pytest.mark.parametrize(
    ("doc", "kind"), [([1, 2], "an array"), ("hello", "a string"), (42, "a number")]
)
def test_json_that_is_not_an_object_is_rejected(doc: Any, kind: str) -> None:
    parsed = parse(doc)
    assert parsed.batch is None
    [rej] = parsed.rejections
    assert rej.code == "malformed_json"
    assert "object" in rej.reason and kind in rej.reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"seq": -1}, "seq"),
        ({"node_id": ""}, "node_id"),
        ({"node_id": "node\ta"}, "node_id"),
        ({"agent_id": None}, "agent_id"),
        ({"priority": "high"}, "priority"),
        ({"samples": {"0": sample()}}, "samples"),
        ({"gaps": [{"start": NOW, "end": NOW, "reason": "agent_stalled"}]}, "gaps"),
    ],
    ids=[
        "negative-seq",
        "empty-node",
        "tab-in-node",
        "null-agent",
        "unknown-field",
        "samples-not-array",
        "empty-gap",
    ],
)
def test_a_bad_envelope_rejects_the_whole_record_with_its_good_samples(
    overrides: dict[str, Any], field: str
) -> None:
    # given a record with three good samples but a bad envelope
    good = [sample(ts=NOW - 3), sample(ts=NOW - 2), sample(ts=NOW - 1)]
    doc = batch(good, **overrides)
    # when parsed
    parsed = parse(doc)
    # then nothing is kept, and the one rejection is for the whole record
    assert parsed.batch is None and parsed.samples == ()
    [rej] = parsed.rejections
    assert rej.code == "invalid_envelope"
    assert rej.sample_index is None
    assert field in rej.reason, rej.reason


def test_a_bad_sample_rejects_only_that_sample() -> None:
    # given five samples of which the 2nd and 4th are bad in different ways
    docs = [sample(ts=NOW - 5 + i) for i in range(5)]
    docs[1]["sm_util"] = 101.0
    docs[3] = {"gpu_uuid": "GPU-0001"}  # most fields missing
    # when parsed
    parsed = parse(batch(docs))
    # then the three good samples are kept, in order, and each bad one is rejected on its own
    assert parsed.batch is not None
    assert [s.ts for s in parsed.samples] == [NOW - 5, NOW - 3, NOW - 1]
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [
        ("invalid_sample", 1),
        ("invalid_sample", 3),
    ]
    assert parsed.rejections[0].reason.startswith("samples[1].sm_util")
    assert "samples[3].gpu_model" in parsed.rejections[1].reason  # missing fields are named
    # and each rejection carries the offending sample itself, not the whole record
    assert orjson.loads(parsed.rejections[0].raw) == docs[1]
    assert orjson.loads(parsed.rejections[1].raw) == docs[3]


def test_a_sample_that_is_not_an_object_is_rejected_alone() -> None:
    parsed = parse(batch([sample(), 5, None]))
    assert len(parsed.samples) == 1
    assert [r.sample_index for r in parsed.rejections] == [1, 2]
