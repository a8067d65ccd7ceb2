"""``preemption_losses`` against lost seconds counted independently, second by second, from the
seconds the test put in the ledger: partial minutes at both ends, a checkpoint, no checkpoint,
a share, other allocations on the same device, a record matching nothing, redelivery."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from schemas.preemption import PREEMPTION_COLUMNS, PreemptionReported
from tests.ledger_rows import LedgerRow, insert_ledger

pytestmark = pytest.mark.integration

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a minute boundary
GPU = "GPU-p0"


def ledger_rows(seconds: set[int], **kw: object) -> list[LedgerRow]:
    """The ledger rows holding exactly ``seconds`` (epoch seconds), one per minute."""
    by_minute: dict[int, int] = {}
    for s in seconds:
        by_minute[s - s % 60] = by_minute.get(s - s % 60, 0) | (1 << (s % 60))
    return [
        LedgerRow(datetime.fromtimestamp(m, UTC), seconds_mask=mask, **kw)  # type: ignore[arg-type]
        for m, mask in sorted(by_minute.items())
    ]


def report(**kw: object) -> PreemptionReported:
    base: dict[str, object] = {
        "tenant": "hooli",
        "job": "j1",
        "gpu_uuid": GPU,
        "share_milli": 1000,
        "at": T0 + 600,
    }
    return PreemptionReported.model_validate({**base, **kw}, context={"now": T0 + 10**6})


def store(client, reports: list[PreemptionReported]) -> None:  # type: ignore[no-untyped-def]
    client.insert("preemptions", [r.row() for r in reports], column_names=PREEMPTION_COLUMNS)


def losses(client) -> dict[tuple[str, int], tuple[int, int, int, str]]:  # type: ignore[no-untyped-def]
    rows = client.query(
        "SELECT job, toUnixTimestamp(at), lost_seconds, lost_milli_seconds, held_seconds, "
        "gpu_model FROM preemption_losses"
    ).result_rows
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}


def test_lost_seconds_equal_the_seconds_counted_one_by_one(clickhouse) -> None:  # type: ignore[no-untyped-def]
    # given: j1 holds the whole GPU from T0+17 to T0+600 with gaps (partial minutes, a gap
    # inside a minute), and also after `at` (must not count); j2 holds a quarter share
    rng = random.Random(5)
    j1 = {s for s in range(T0 + 17, T0 + 700) if rng.random() < 0.9}
    j2 = set(range(T0 + 30, T0 + 245))
    other = set(range(T0, T0 + 300))  # another tenant, same device: never counted
    insert_ledger(
        clickhouse,
        ledger_rows(j1, tenant="hooli", job="j1", gpu_uuid=GPU, gpu_model="H100")
        + ledger_rows(j2, tenant="hooli", job="j2", gpu_uuid=GPU, gpu_model="H100", share_milli=250)
        + ledger_rows(other, tenant="acme", job="j1", gpu_uuid=GPU, gpu_model="H100"),
    )
    at1, ck1 = T0 + 543, T0 + 77
    at2 = T0 + 200
    # when: j1 preempted at T0+543 with a checkpoint at T0+77; j2 at T0+200, no checkpoint;
    # a record matching no allocation (wrong share)
    store(
        clickhouse,
        [
            report(at=at1, checkpoint_at=ck1),
            report(job="j2", share_milli=250, at=at2),
            report(job="j3", at=at2),
        ],
    )
    got = losses(clickhouse)
    # then
    lost1 = len([s for s in j1 if ck1 <= s < at1])
    assert got[("j1", at1)] == (lost1, lost1 * 1000, len([s for s in j1 if s < at1]), "H100")
    lost2 = len([s for s in j2 if s < at2])
    assert got[("j2", at2)] == (lost2, lost2 * 250, lost2, "H100")
    assert got[("j3", at2)] == (0, 0, 0, "")


def test_a_redelivered_record_replaces_itself(clickhouse) -> None:  # type: ignore[no-untyped-def]
    insert_ledger(
        clickhouse,
        ledger_rows(
            set(range(T0, T0 + 120)), tenant="hooli", job="j1", gpu_uuid=GPU, gpu_model="A100"
        ),
    )
    store(clickhouse, [report(at=T0 + 90)])
    store(clickhouse, [report(at=T0 + 90, checkpoint_at=T0 + 61)])  # corrected checkpoint
    store(clickhouse, [report(at=T0 + 90, checkpoint_at=T0 + 61)])  # redelivered
    assert losses(clickhouse) == {("j1", T0 + 90): (29, 29_000, 90, "A100")}
