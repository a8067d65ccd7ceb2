"""Back-pressure is a named signal the persist path acts on: the sink classifies, the caller
waits and retries the same chunk (safe: the processor reloads after a failed write), bounded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from streams.aggregate import MinuteRow
from streams.backpressure import process_with_backpressure
from streams.clickhouse.sink import LedgerSink
from streams.errors import SinkBackpressure, SinkError
from streams.processor import UsageProcessor
from streams.records import RejectedRecord
from tests.fakes.ledger import FakeLedger
from tests.unit.streams.test_processor import record, sample

M0 = 1_795_651_200


class Busy(FakeLedger):
    """A store that pushes back on the first ``times`` ledger writes."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        if self.times:
            self.times -= 1
            raise SinkBackpressure(
                "insert usage_minutely",
                "too many parts",
                retry_after=0.5,
                code=252,
                name="TOO_MANY_PARTS",
            )
        super().write_ledger(rows)


def test_a_chunk_the_store_pushed_back_on_is_retried_whole_and_counted_once() -> None:
    store = Busy(times=2)
    proc = UsageProcessor(store)
    waits: list[float] = []
    chunk = [record(0, [sample("GPU-A", M0 + i) for i in range(60)])]
    process_with_backpressure(proc.process, chunk, sleep=waits.append)
    assert waits == [0.5, 0.5]
    assert store.seconds_by_allocation() == Counter({("acme", "train"): 60})


def test_back_pressure_beyond_the_bound_reaches_the_caller() -> None:
    proc = UsageProcessor(Busy(times=100))
    with pytest.raises(SinkBackpressure):
        process_with_backpressure(
            proc.process, [record(0, [sample("GPU-A", M0)])], max_wait_s=2.0, sleep=lambda s: None
        )


class Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def insert(self, *a: Any, **k: Any) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (OperationalError("connection refused"), SinkBackpressure, None),
        (
            DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"),
            SinkBackpressure,
            252,
        ),
        (
            DatabaseError("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"),
            SinkError,
            60,
        ),
    ],
)
def test_the_sink_classifies_failures_and_keeps_the_server_code(
    exc: Exception, kind: type, code: int | None
) -> None:
    sink = LedgerSink(Raising(exc))  # type: ignore[arg-type]
    with pytest.raises(SinkError) as caught:
        sink.write_rejected([RejectedRecord("t", 0, 0, -1, "c", "r", "n", b"x")])
    assert type(caught.value) is kind and caught.value.code == code
