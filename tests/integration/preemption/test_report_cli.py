"""``gpumeter preemption report`` publishes exactly the record its arguments describe, on the
embedded broker; it refuses bad arguments naming them and fails (exit 1) when no broker acks."""

from __future__ import annotations

import socket

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from gpumeter.cli import main
from schemas.preemption import PreemptionReported

pytestmark = pytest.mark.integration

ARGS = [
    "preemption",
    "report",
    "--tenant",
    "hooli",
    "--job",
    "hooli-j0042",
    "--gpu",
    "GPU-abc",
    "--mig",
    "MIG-1",
    "--share-milli",
    "750",
    "--at",
    "2026-01-01T13:00:05+01:00",
    "--checkpoint-at",
    "1767268000",
    "--preempted-by",
    "research",
    "--reason",
    "internal demand",
]


def test_a_report_is_published_as_the_record_it_describes(broker, topic_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory("preemptions")
    assert main([*ARGS, "--bootstrap", broker.bootstrap, "--topic", topic]) == 0
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    for _ in range(20):
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend(records)
        if got:
            break
    consumer.close()
    assert len(got) == 1 and got[0].key == b"hooli"
    assert orjson.loads(got[0].value) == {
        "schema_version": 1,
        "tenant": "hooli",
        "job": "hooli-j0042",
        "gpu_uuid": "GPU-abc",
        "mig_uuid": "MIG-1",
        "share_milli": 750,
        "at": 1_767_225_600 + 12 * 3600 + 5,  # 13:00:05+01:00 is 12:00:05Z
        "checkpoint_at": 1_767_268_000,
        "preempted_by": "research",
        "reason": "internal demand",
    }
    record = PreemptionReported.parse(got[0].value)
    assert str(record.event_id) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--share-milli", "1001"), "share_milli"),
        (("--tenant", "__idle__"), "tenant"),
        (("--checkpoint-at", "1767268806"), "checkpoint_at"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(change, named, capsys) -> None:  # type: ignore[no-untyped-def]
    args = list(ARGS)
    args[args.index(change[0]) + 1] = change[1]
    assert main([*args, "--bootstrap", "127.0.0.1:1"]) == 2
    assert named in capsys.readouterr().err


def test_no_broker_is_an_error_not_a_silent_success(capsys) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main([*ARGS, "--bootstrap", f"127.0.0.1:{port}", "--timeout", "2"])
    assert code == 1
    assert "did not acknowledge" in capsys.readouterr().err
