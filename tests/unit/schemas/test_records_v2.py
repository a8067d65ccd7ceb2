"""Contract v2, the record: versions, the envelope, defects in the bytes (each costing one
frame), future-dated seconds parked and re-admitted, version 1 still accepted and translated,
and the published schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.frame import Frame, Share
from schemas.validation import (
    Rejection,
    parse_batch,
    parse_parked,
    parse_record,
)
from tests.unit.schemas.test_usage import batch, sample
from tests.unit.schemas.v2docs import NOW, SCHEMA_V2_FILE, expanded, frame, raw, record

# -- versions and the envelope --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "code"),
    [
        (3, "unknown_schema_version"),
        (0, "unknown_schema_version"),
        ("2", "unknown_schema_version"),
        (True, "unknown_schema_version"),
        (None, "unknown_schema_version"),
        (2.5, "unknown_schema_version"),
    ],
)
def test_an_unknown_schema_version_rejects_the_record(version: Any, code: str) -> None:
    parsed = parse_record(raw(record(schema_version=version)), now=NOW)
    assert parsed.node_id is None and parsed.frames == []
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [(code, None)]
    assert "schema_version" in parsed.rejections[0].reason


def test_version_2_as_a_float_is_version_2_and_a_missing_version_is_version_1() -> None:
    assert parse_record(raw(record(schema_version=2.0)), now=NOW).schema_version == 2
    v1 = batch([sample()])
    del v1["schema_version"]
    parsed = parse_record(raw(v1), now=NOW)
    assert parsed.schema_version == 1 and parsed.rejections == [] and parsed.seconds == 1


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": ""},
        {"node_id": 7},
        {"agent_id": "a\x00b"},
        {"seq": -1},
        {"seq": 2**63},
        {"seq": "7"},
        {"frames": {}},
        {"frames": None},
        {"gaps": [{"start": NOW, "end": NOW, "reason": "agent_stalled"}]},  # rule gap-ordered
        {"gaps": [{"start": NOW, "end": NOW + 1, "reason": "coffee"}]},
        {"extra": 1},
        {"samples": []},  # a v1 key in a v2 record
    ],
)
def test_a_bad_envelope_rejects_the_whole_record_with_its_good_frames(
    change: dict[str, Any],
) -> None:
    parsed = parse_record(raw(record(**change)), now=NOW)
    assert parsed.node_id is None and parsed.frames == []
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("invalid_envelope", None)]


def test_the_envelope_is_returned_with_gaps() -> None:
    gap = {"start": NOW - 100, "end": NOW - 90, "reason": "agent_restarted", "gpu_uuid": "GPU-0001"}
    parsed = parse_record(raw(record(gaps=[gap], seq=9.0)), now=NOW)
    assert (parsed.node_id, parsed.agent_id, parsed.seq, parsed.schema_version) == (
        "node-a",
        "agent-1",
        9,
        2,
    )
    assert [g.model_dump() for g in parsed.gaps] == [gap]


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b'"x"', b"null", b'{"a":1} x'])
def test_what_is_not_a_json_object_is_malformed(text: bytes) -> None:
    parsed = parse_record(text, now=NOW)
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("malformed_json", None)]


# -- defects in the bytes cost one frame -----------------------------------------------------------

MARK = 123.456  # a value replaced in the record's text by the defect under test


@pytest.mark.parametrize(
    ("defect", "why"),
    [
        (b"NaN", "NaN is not a finite number"),
        (b"Infinity", "Infinity is not a finite number"),
        (b"-Infinity", "-Infinity is not a finite number"),
        (b"1e400", "too large for a double"),
        (b"1" * 30, "must be within 0..3000"),  # a double for orjson: a number out of range
        (b"1" * 5000, "out of range"),
        (b'"\\ud800"', "lone surrogate"),
        (b'"\xff\xfe"', "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested more than"),
    ],
)
def test_a_defect_in_one_frame_costs_that_frame_only(defect: bytes, why: str) -> None:
    bad = frame(gpu_uuid="GPU-X")
    bad["power_w"][1] = MARK
    text = raw(record([frame(gpu_uuid="GPU-A"), bad, frame(gpu_uuid="GPU-B")]))
    assert text.count(b"123.456") == 1
    text = text.replace(b"123.456", defect)
    parsed = parse_record(text, now=NOW)
    assert [f.gpu_uuid for f in parsed.frames] == ["GPU-A", "GPU-B"]
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("invalid_frame", 1)]
    reason = parsed.rejections[0].reason
    assert reason.startswith("frames[1].power_w[1]") and why in reason, reason
    assert defect in parsed.rejections[0].raw  # the frame's exact bytes, defect included


def test_a_defect_in_the_envelope_costs_the_record() -> None:
    text = raw(record(node_id="node-\u00e9")).replace("node-\u00e9".encode(), b"node-\xff")
    parsed = parse_record(text, now=NOW)
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("invalid_envelope", None)]


# -- future-dated seconds ----------------------------------------------------------------------------


def test_the_future_part_of_a_frame_is_parked_and_the_past_part_counted() -> None:
    # a 10-second frame whose last 4 seconds are more than 300 s ahead of the clock
    f = frame(10, start=NOW + 300 - 5, flags=[{"index": 8, "flags": ["nvml_error"]}])
    f["allocations"][0]["sm_util"] = [float(i) for i in range(10)]
    parsed = parse_record(raw(record([frame(), f])), now=NOW, max_future_skew_s=300)
    assert [(x.start, x.n) for x in parsed.frames] == [(NOW - 14, 4), (NOW + 295, 6)]
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("future_timestamp", 1)]
    parked = parsed.rejections[0]
    assert "frames[1]" in parked.reason and "check the node's clock" in parked.reason
    # the parked raw is the future part, as a valid frame
    doc = orjson.loads(parked.raw)
    assert expanded(doc) == expanded(f)[6:]
    assert doc["allocations"][0]["sm_util"] == [6.0, 7.0, 8.0, 9.0]
    # not re-admitted before its last second is within the allowance, then re-admitted whole
    # (its last second is NOW + 304)
    early = parse_parked(parked.raw, now=NOW + 3, max_future_skew_s=300, index=1)
    assert isinstance(early, Rejection) and early.code == "future_timestamp"
    assert early.sample_index == 1 and early.raw == parked.raw
    due = parse_parked(parked.raw, now=NOW + 4, max_future_skew_s=300, index=1)
    assert isinstance(due, Frame) and (due.start, due.n) == (NOW + 301, 4)
    assert due.flags == {2: ("nvml_error",)}
    assert due.allocations[0].sm_util == (6.0, 7.0, 8.0, 9.0)


def test_a_frame_wholly_in_the_future_is_parked_whole_and_the_allowance_is_inclusive() -> None:
    parsed = parse_record(raw(record([frame(3, start=NOW + 301)])), now=NOW)
    assert parsed.frames == [] and [r.code for r in parsed.rejections] == ["future_timestamp"]
    parsed = parse_record(raw(record([frame(3, start=NOW + 298)])), now=NOW)
    assert parsed.rejections == [] and parsed.frames[0].end - 1 == NOW + 300
    parsed = parse_record(raw(record([frame(3, start=NOW + 298)])), now=NOW, max_future_skew_s=299)
    assert [(x.start, x.n) for x in parsed.frames] == [(NOW + 298, 2)]


def test_an_invalid_parked_frame_is_refused_not_readmitted() -> None:
    got = parse_parked(raw(frame(sm_util=[1.0])), now=NOW, index=4)
    assert isinstance(got, Rejection) and (got.code, got.sample_index) == ("invalid_frame", 4)


# -- version 1, still accepted for one release --------------------------------------------------------


def test_a_v1_record_becomes_frames_second_for_second() -> None:
    samples = [sample(ts=NOW - 20 + i, sm_util=float(i)) for i in range(3)]
    samples += [
        sample(ts=NOW - 17 + i, tenant=None, job=None, billing_class=None) for i in range(2)
    ]
    samples += [sample(ts=NOW - 5, gpu_uuid="GPU-0002", flags=["nvml_error"], temp_c=None)]
    parsed = parse_record(raw(batch(samples)), now=NOW)
    assert parsed.schema_version == 1 and parsed.rejections == [] and parsed.seconds == 6
    # each frame, expanded per second, gives back the v1 samples' readings
    seconds = [s for f in parsed.frames for s in expanded(_wire(f))]
    assert seconds == [
        {
            k: s[k]
            for k in (
                "ts",
                "sm_util",
                "mem_util",
                "mem_used",
                "power_w",
                "energy_j",
                "temp_c",
                "flags",
            )
        }
        for s in samples
    ]
    assert [f.allocations for f in parsed.frames] == [
        (Share("acme", "train-1", 1000, "on_demand"),),
        (),
        (Share("acme", "train-1", 1000, "on_demand"),),
    ]


def test_v1_rejections_are_unchanged() -> None:
    doc = batch([sample(), sample(ts=NOW - 9, sm_util=101.0), sample(ts=NOW + 400)])
    v1 = parse_batch(raw(doc), now=NOW)
    v2 = parse_record(raw(doc), now=NOW)
    assert v2.rejections == v1.rejections and len(v2.rejections) == 2
    assert v2.seconds == 1


def test_a_parked_v1_sample_is_readmitted_as_a_one_second_frame() -> None:
    parked = parse_batch(raw(batch([sample(ts=NOW + 400)])), now=NOW).rejections[0]
    assert isinstance(parse_parked(parked.raw, now=NOW), Rejection)
    got = parse_parked(parked.raw, now=NOW + 100)
    assert isinstance(got, Frame) and (got.start, got.n, got.gpu_uuid) == (NOW + 400, 1, "GPU-0001")


def _wire(f: Frame) -> dict[str, Any]:
    from schemas.frame import frame_wire

    return frame_wire(f)


# -- the published schema -----------------------------------------------------------------------------


def test_the_committed_v2_json_schema_is_up_to_date() -> None:
    from gpumeter.admin import render_schema

    assert SCHEMA_V2_FILE.read_text() == render_schema(2), (
        f"{SCHEMA_V2_FILE} is stale: run `gpumeter schema export` and commit the result."
    )


def test_schema_export_writes_either_version(tmp_path: Path) -> None:
    from gpumeter.admin import _export_schema

    for version, name in ((1, "gpu.usage.v1.schema.json"), (2, "gpu.usage.v2.schema.json")):
        out = tmp_path / f"v{version}.json"
        args = argparse.Namespace(out=out, version=version)
        assert _export_schema(args, None) == 0  # type: ignore[arg-type]
        committed = SCHEMA_V2_FILE.parent / name
        assert out.read_text() == committed.read_text()


def test_the_v2_schema_states_the_contract() -> None:
    doc = json.loads(SCHEMA_V2_FILE.read_text())
    text = doc["description"]
    for phrase in (
        "1..1000",
        "at most 1000",
        "remainder idle",
        "(tenant, job) twice",
        "slice wins",
        "still accepted for one release",
        "start .. start + n - 1",
    ):
        assert phrase in text, phrase
    rules = {r["id"]: r for r in doc["x-gpumeter-rules"]}
    assert rules["mig-slices-only"]["scope"] == "worker"
    assert rules["mig-slices-only"]["rejection_code"] is None
    assert rules["shares-within-device"]["params"] == {"whole_milli": 1000}
    assert rules["frame-columns-aligned"]["params"] == {"max_seconds": 3600}
    assert set(doc["x-gpumeter-rejection-codes"]) == {
        "malformed_json",
        "unknown_schema_version",
        "invalid_envelope",
        "invalid_frame",
        "future_timestamp",
    }
    assert doc["properties"]["schema_version"]["const"] == 2
    assert doc["$defs"]["ShareWire"]["properties"]["share_milli"]["minimum"] == 1
