"""`gpumeter capacity`: idle now, the hour-of-week forecast and its measured error, against a
ledger whose idle pattern is known by construction.

The fleet: 4 whole H100s, where GPU i is idle in an hour iff i < p(hour), p = hour-of-week mod
5, except that in the most recent week before "now" GPU 0 was busy all the time (a change the
forecast has not seen); and one A100 shared all the time by `beta` at 600 milli-GPUs, its 400
remainder idle. Every figure below is computed here from that description, not by the code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from analytics.capacity import HOUR, WEEK, capacity
from gpumeter.cli import main
from schemas.capacity import capacity_json_schema

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)  # the closed minute described is 12:27
NOW_HOUR = int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp())
SINCE = NOW_HOUR - 6 * WEEK  # 4 weeks of history + 2 scored weeks
FULL = (1 << 60) - 1


def p(hour_start: int) -> int:
    return (hour_start // HOUR % 168) % 5


def h100_idle(hour_start: int) -> int:
    perturbed = NOW_HOUR - WEEK <= hour_start < NOW_HOUR
    return max(p(hour_start) - 1, 0) if perturbed else p(hour_start)


@pytest.fixture
def ledger(clickhouse):  # type: ignore[no-untyped-def]
    minutes = (NOW_HOUR + HOUR - SINCE) // 60
    cols = "minute, tenant, job, gpu_uuid, shared_milli, gpu_model, claimed_mask"
    p_sql = "intDiv(toUInt32(minute), 3600) % 168 % 5"
    perturbed = f"toUInt32(minute) >= {NOW_HOUR - WEEK} AND toUInt32(minute) < {NOW_HOUR}"
    idle = f"(i < {p_sql}) AND NOT (i = 0 AND {perturbed})"
    clickhouse.command(
        f"""INSERT INTO usage_minutely ({cols})
        SELECT minute, if({idle}, '__idle__', 'acme'), if({idle}, '', 'train'),
               concat('GPU-H', toString(i)), 0, 'H100', {FULL}
        FROM (SELECT toDateTime({SINCE} + number * 60, 'UTC') AS minute FROM numbers({minutes}))
        ARRAY JOIN [0, 1, 2, 3] AS i"""
    )
    clickhouse.command(
        f"""INSERT INTO usage_minutely ({cols})
        SELECT minute, t.1, t.2, 'GPU-A0', t.3, 'A100', {FULL}
        FROM (SELECT toDateTime({SINCE} + number * 60, 'UTC') AS minute FROM numbers({minutes}))
        ARRAY JOIN [('beta', 'serve', 600), ('__idle__', '', 400)] AS t"""
    )
    return clickhouse


def test_idle_now_forecast_and_error_match_the_constructed_fleet(ledger) -> None:  # type: ignore[no-untyped-def]
    cap = capacity(ledger, NOW, grace_s=120, horizon_h=6, weeks=4, backtest_weeks=2)
    assert cap.minute == datetime(2026, 3, 2, 12, 27, tzinfo=UTC)
    by_model = {m.now.gpu_model: m for m in cap.models}
    assert set(by_model) == {"H100", "A100"}

    a100 = by_model["A100"]
    assert (a100.now.idle_gpus, a100.now.whole_idle, a100.now.observed) == (Decimal("0.4"), 0, 1)
    assert all(f.expected == Decimal("0.4") and f.likely == Decimal("0.4") for f in a100.forecast)
    assert (a100.backtest.hours, a100.backtest.mae, a100.backtest.oversold) == (336, 0, 0)

    h100 = by_model["H100"]
    idle = p(NOW_HOUR)
    assert (h100.now.idle_gpus, h100.now.whole_idle, h100.now.observed) == (idle, idle, 4)
    for k, f in enumerate(h100.forecast, start=1):
        t = NOW_HOUR + k * HOUR
        past = sorted(h100_idle(t - w * WEEK) for w in range(1, 5))
        assert int(f.hour.timestamp()) == t and f.weeks == 4
        assert f.expected == Decimal(sum(past)) / 4, k
        assert f.likely == past[0], k  # q = 0.2 of 4 values: the lowest (nearest rank)
    # the scored fortnight: the unseen busy GPU 0 costs 1 GPU in every hour of the last week
    # where p >= 1, and those hours are oversold; the week before was forecast exactly
    missed = sum(1 for t in range(NOW_HOUR - WEEK, NOW_HOUR, HOUR) if p(t) >= 1)
    assert missed == 134
    assert h100.backtest.hours == 336
    assert h100.backtest.mae == Decimal(missed) / 336
    assert h100.backtest.oversold == Decimal(missed) / 336


def test_feed_records_follow_the_published_schema(
    ledger, chdb_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", f"chdb://{chdb_path}")
    rc = main(["capacity", "--database", ledger.database, "--at", "2026-03-02 12:30", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    schema = capacity_json_schema()
    records = [json.loads(line) for line in out]
    for r in records:
        jsonschema.validate(r, schema)
    a100 = next(r for r in records if r["gpu_model"] == "A100")
    assert a100["idle_gpus"] == "0.400" and a100["minute"] == NOW_HOUR + 27 * 60
    assert [o["likely_idle_gpus"] for o in a100["outlook"]] == ["0.400"] * 6


def test_a_minute_nobody_reported_is_an_error_not_an_empty_feed(
    ledger, chdb_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", f"chdb://{chdb_path}")
    rc = main(["capacity", "--database", ledger.database, "--at", "2026-04-01 00:00"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no device reported in the minute 2026-03-31 23:57" in err
    assert "the latest minute in the ledger is 2026-03-02 12:59" in err


def test_publish_sends_one_record_per_model_to_the_feed_topic(
    ledger, chdb_path: Path, broker, topic_factory, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaConsumer

    topic = topic_factory("capacity")
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DSN", f"chdb://{chdb_path}")
    monkeypatch.setenv("GPUMETER_KAFKA_BOOTSTRAP", broker.bootstrap)
    argv = ["capacity", "--database", ledger.database, "--at", "2026-03-02 12:30"]
    assert main([*argv, "--publish", "--topic", topic]) == 0
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    got = {m.key.decode(): json.loads(m.value) for m in consumer}
    consumer.close()
    assert set(got) == {"A100", "H100"}
    for record in got.values():
        jsonschema.validate(record, capacity_json_schema())
    assert got["H100"]["whole_idle_devices"] == p(NOW_HOUR)
    assert "idle now" in capsys.readouterr().out  # the table is printed as well


def test_a_mig_slice_without_a_rate_is_offered_at_its_parents_spot_rate_times_g_over_7() -> None:
    from analytics.capacity import spot_rate

    spot = {"NVIDIA A100-SXM4-80GB": Decimal("0.72")}
    assert spot_rate(spot, "NVIDIA A100-SXM4-80GB MIG 3g.40gb") == Decimal("0.308571")  # 2.16/7
    assert spot_rate(spot, "NVIDIA A100-SXM4-80GB") == Decimal("0.72")
    assert spot_rate(spot, "NVIDIA H100 80GB HBM3 MIG 1g.10gb") is None
