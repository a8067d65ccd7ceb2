"""The preemption contract: what it accepts and refuses, the published JSON Schema agrees with
the model on the same documents, and the worker's processor never raises on input."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest

from schemas.preemption import PreemptionReported, render_schema, schema_file
from streams.preemption import REJECT_CODE, PreemptionProcessor
from streams.records import RejectedRecord, SourceRecord

NOW = 1_767_300_000
GOOD: dict[str, Any] = {
    "schema_version": 1,
    "tenant": "hooli",
    "job": "hooli-j0001",
    "gpu_uuid": "GPU-1",
    "share_milli": 1000,
    "at": NOW - 100,
}

BAD: list[tuple[dict[str, Any], str]] = [
    ({**GOOD, "share_milli": 0}, "share_milli"),
    ({**GOOD, "share_milli": 1001}, "share_milli"),
    ({**GOOD, "share_milli": "1000"}, "share_milli"),  # no coercion
    ({**GOOD, "share_milli": True}, "share_milli"),
    ({**GOOD, "at": 1_767_225_600_000}, "at"),  # milliseconds
    ({**GOOD, "at": 1.5e9 + 0.5}, "at"),
    ({**GOOD, "tenant": "__idle__"}, "tenant"),
    ({**GOOD, "preempted_by": "__idle__"}, "preempted_by"),
    ({**GOOD, "job": ""}, "job"),
    ({**GOOD, "job": "a\nb"}, "job"),
    ({**GOOD, "mig_uuid": "a\tb"}, "mig_uuid"),
    ({**GOOD, "schema_version": 2}, "schema_version"),
    ({**GOOD, "extra": 1}, "extra"),
    ({k: v for k, v in GOOD.items() if k != "gpu_uuid"}, "gpu_uuid"),
]


def test_the_committed_schema_is_current() -> None:
    assert schema_file().read_text() == render_schema(), (
        "run: gpumeter schema export --topic gpu.preemptions.v1"
    )


def test_valid_records_and_their_identity() -> None:
    r = PreemptionReported.parse(orjson.dumps(GOOD), now=NOW)
    assert r.mig_uuid is None and r.checkpoint_at is None
    # an integral float is an integer (as JSON Schema says); identity ignores non-key fields
    same = PreemptionReported.parse(
        orjson.dumps({**GOOD, "at": float(GOOD["at"]), "checkpoint_at": NOW - 200}), now=NOW
    )
    assert same.at == r.at and same.event_id == r.event_id
    other = PreemptionReported.parse(orjson.dumps({**GOOD, "mig_uuid": "MIG-1"}), now=NOW)
    assert other.event_id != r.event_id
    for whole in (None, ""):  # null or empty: the whole GPU, the same identity and row
        same = PreemptionReported.parse(orjson.dumps({**GOOD, "mig_uuid": whole}), now=NOW)
        assert same.event_id == r.event_id and same.row() == r.row()
    assert PreemptionReported.parse(r.to_json(), now=NOW) == r


@pytest.mark.parametrize(("doc", "field"), BAD)
def test_model_and_published_schema_refuse_the_same_records(
    doc: dict[str, Any], field: str
) -> None:
    schema = json.loads(schema_file().read_text())
    with pytest.raises(ValueError, match=field):
        PreemptionReported.parse(orjson.dumps(doc), now=NOW)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc)), doc


def test_the_published_schema_accepts_what_the_model_accepts() -> None:
    schema = json.loads(schema_file().read_text())
    full = {**GOOD, "mig_uuid": "MIG-1", "checkpoint_at": NOW - 500, "preempted_by": "research"}
    for doc in (GOOD, full, {**full, "reason": "internal demand"}, {**GOOD, "mig_uuid": ""}):
        jsonschema.Draft202012Validator(schema).validate(doc)
        PreemptionReported.parse(orjson.dumps(doc), now=NOW)


def test_rules_beyond_the_schema_are_stated_and_enforced() -> None:
    with pytest.raises(ValueError, match="checkpoint_at .* is after at"):
        PreemptionReported.parse(orjson.dumps({**GOOD, "checkpoint_at": GOOD["at"] + 1}), now=NOW)
    with pytest.raises(ValueError, match="in the future"):
        PreemptionReported.parse(orjson.dumps({**GOOD, "at": NOW + 301}), now=NOW)
    description = json.loads(schema_file().read_text())["description"]
    assert "checkpoint_at <= at" in description and "300 s in the future" in description


class FakeSink:
    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.rejected: list[RejectedRecord] = []

    def write_preemptions(self, rows: Any) -> None:
        self.rows.extend(rows)

    def write_rejected(self, records: Any) -> None:
        self.rejected.extend(records)


def test_the_processor_stores_good_records_and_rejects_each_bad_one_with_its_reason() -> None:
    # given a chunk of good records and hostile ones
    values = [orjson.dumps(GOOD), b"{not json", b"[1, 2]", b"\xff\xfe"] + [
        orjson.dumps(doc) for doc, _ in BAD
    ]
    chunk = [SourceRecord(v, "gpu.preemptions.v1", 0, i) for i, v in enumerate(values)]
    sink = FakeSink()
    # when
    rejected = PreemptionProcessor(sink, clock=lambda: NOW).process(chunk)
    # then: one row; every other record rejected, in order, with its offset and bytes
    assert len(sink.rows) == 1 and sink.rows[0][1:3] == ["hooli", "hooli-j0001"]
    assert [r.offset for r in rejected] == list(range(1, len(values)))
    assert all(r.code == REJECT_CODE and r.reason for r in rejected)
    assert [r.raw for r in rejected] == values[1:]
    assert sink.rejected == rejected
    for r, (_, field) in zip(rejected[3:], BAD, strict=True):
        assert field in r.reason, r.reason


def test_schema_export_writes_the_committed_preemption_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from gpumeter.admin import _export_schema

    out = tmp_path / "p.json"
    args = argparse.Namespace(out=out, version=2, topic="gpu.preemptions.v1")
    assert _export_schema(args, None) == 0  # type: ignore[arg-type]
    assert out.read_text() == schema_file().read_text()
