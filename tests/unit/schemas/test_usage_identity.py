"""The ``gpu.usage.v1`` contract's identity and publication: deterministic sample ids, the
published JSON Schema of version 1, and the agent's encoding round-tripping through the
worker's validator."""

from __future__ import annotations

import uuid

import orjson
import pytest

from schemas.usage import Gap, GpuSecond, encode_batch, sample_event_id
from schemas.validation import parse_batch
from tests.unit.schemas.test_usage import NAMESPACE, NOW, SCHEMA_FILE, batch, parse, sample

# -- deterministic event ids ---------------------------------------------------------------------


def test_the_event_id_is_deterministic_and_a_uuid5_of_the_documented_name() -> None:
    # given the documented name scheme '<gpu_uuid>|<mig_uuid or empty>|<ts>'
    expected = uuid.uuid5(NAMESPACE, "GPU-0001|MIG-7|1700000000")
    # when the id is computed twice, and from a parsed sample
    first = sample_event_id("GPU-0001", "MIG-7", 1_700_000_000)
    second = sample_event_id("GPU-0001", "MIG-7", 1_700_000_000)
    parsed = parse(batch([sample(mig_uuid="MIG-7", ts=1_700_000_000)]), now=NOW + 1).samples[0]
    # then all agree with the documented UUIDv5
    assert first == second == parsed.event_id == expected
    assert first.version == 5


def test_no_mig_and_empty_mig_have_the_same_event_id() -> None:
    assert sample_event_id("GPU-0001", None, NOW) == sample_event_id("GPU-0001", "", NOW)
    assert sample_event_id("GPU-0001", None, NOW) == uuid.uuid5(NAMESPACE, f"GPU-0001||{NOW}")


@pytest.mark.parametrize(
    "other",
    [("GPU-0002", None, NOW), ("GPU-0001", "MIG-1", NOW), ("GPU-0001", None, NOW + 1)],
    ids=["other-gpu", "other-mig", "other-second"],
)
def test_the_event_id_differs_when_any_part_of_the_identity_differs(
    other: tuple[str, str | None, int],
) -> None:
    assert sample_event_id("GPU-0001", None, NOW) != sample_event_id(*other)


def test_the_event_id_does_not_depend_on_the_measurements() -> None:
    # a replayed second with re-read (different) measurements is the same event
    a = parse(batch([sample(sm_util=10.0)])).samples[0]
    b = parse(batch([sample(sm_util=90.0, tenant="other", job="j")])).samples[0]
    assert a.event_id == b.event_id


# -- the published JSON Schema -------------------------------------------------------------------


def test_the_committed_json_schema_is_up_to_date() -> None:
    from gpumeter.admin import render_schema

    # given the schema file producers in other languages use, and the one the models give now
    committed = SCHEMA_FILE.read_text()
    fresh = render_schema(1)  # v1: still published (--version 1); v2 in test_usage_v2
    # then they are the same
    assert committed == fresh, (
        f"{SCHEMA_FILE} is stale: the usage models changed. Run `gpumeter schema export` "
        "and commit the result."
    )


def test_the_json_schema_forbids_unknown_fields_and_control_characters() -> None:
    doc = orjson.loads(SCHEMA_FILE.read_bytes())
    gpu_second = doc["$defs"]["GpuSecond"]
    assert doc["additionalProperties"] is False and gpu_second["additionalProperties"] is False
    # unanchored: "$" differs between regex dialects (Python's matches before a final "\n")
    assert gpu_second["properties"]["gpu_uuid"]["not"] == {"pattern": "[\\x00-\\x1f\\x7f]"}
    assert str(NAMESPACE) in doc["description"]


# -- what the agent sends, the worker accepts ----------------------------------------------------


def test_a_batch_encoded_by_the_agent_validates_and_round_trips() -> None:
    # given samples built the fast, unchecked way the agent builds them, and a gap
    fields = sample(ts=NOW - 2, flags=("energy_estimated",))
    allocated = GpuSecond.unchecked(dict(fields))
    idle = GpuSecond.unchecked(
        dict(
            sample(
                gpu_uuid="GPU-0002",
                mig_uuid="MIG-2",
                ts=NOW - 1,
                tenant=None,
                job=None,
                billing_class=None,
                sm_util=0.0,
                temp_c=None,
                flags=(),
            )
        )
    )
    gap = Gap(start=NOW - 30, end=NOW - 20, reason="agent_restarted", gpu_uuid="GPU-0002")
    # when the agent encodes the batch and the worker parses it
    raw = encode_batch("node-a", "agent-9", 3, [allocated, idle], [gap])
    parsed = parse_batch(raw, now=NOW)
    # then nothing is rejected and everything comes back equal
    assert parsed.rejections == []
    assert parsed.batch is not None
    assert (parsed.batch.node_id, parsed.batch.agent_id, parsed.batch.seq) == (
        "node-a",
        "agent-9",
        3,
    )
    assert parsed.batch.schema_version == 1
    assert parsed.samples == (allocated, idle)
    assert parsed.batch.gaps == (gap,)
    # and the parsed samples carry the same field values as the dicts they were built from
    assert parsed.samples[0].model_dump() == {**fields, "flags": ("energy_estimated",)}
