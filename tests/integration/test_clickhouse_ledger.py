"""The ledger in a real (embedded) ClickHouse: exact reads before merges, idempotent migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.clickhouse.migrate import Migration, MigrationError, discover, migrate
from schemas.frame import Frame, Share
from streams.aggregate import FreshSpan, MinuteRow
from streams.clickhouse.sink import LedgerSink

pytestmark = pytest.mark.integration

MINUTE = 1_795_651_200  # 2026-11-20T00:00:00Z


def row(mask: int, tenant: str = "acme", job: str = "j1", energy: int = 0) -> MinuteRow:
    """A row whose counted seconds share ``energy`` mJ equally (given a divisible energy)."""
    seconds = [s for s in range(60) if mask >> s & 1]
    each = energy // len(seconds)
    return MinuteRow(
        MINUTE,
        tenant,
        job,
        "",
        "GPU-1",
        "",
        "NVIDIA H100 80GB HBM3",
        "n1",
        claimed_mask=mask,
        claimed_active=mask,
        readings={s: (50.0, 0.0, each) for s in seconds},
    )


def test_duplicate_and_superseded_rows_are_exact_before_any_merge(clickhouse) -> None:
    # given the same minute written three times: partial, full, and the full row replayed,
    # in separate inserts (separate parts) and with background merges stopped
    clickhouse.command("SYSTEM STOP MERGES usage_minutely")
    sink = LedgerSink(clickhouse)
    sink.write_ledger([row(0b1111, energy=4000)])
    sink.write_ledger([row((1 << 60) - 1, energy=60000)])
    sink.write_ledger([row((1 << 60) - 1, energy=60000)])

    # then a plain read sees every version (this is why billing never reads without FINAL)
    plain = clickhouse.query("SELECT sum(gpu_seconds) FROM usage_minutely").result_rows[0][0]
    assert plain == 4 + 60 + 60
    # and FINAL, the rollup views and the state reload all see exactly one full minute
    final = clickhouse.query("SELECT sum(gpu_seconds), sum(energy_mj) FROM usage_minutely FINAL")
    assert final.result_rows[0] == (60, 60000)
    hourly = clickhouse.query("SELECT sum(gpu_seconds) FROM usage_hourly").result_rows[0][0]
    daily = clickhouse.query("SELECT sum(gpu_seconds) FROM usage_daily").result_rows[0][0]
    assert hourly == daily == 60
    (loaded,) = sink.load([("GPU-1", MINUTE)])
    assert loaded.seconds_mask == (1 << 60) - 1 and loaded.energy_mj == 60000


def test_raw_archive_keeps_each_second_once_beside_the_v1_history(clickhouse) -> None:
    # given a second archived by a v1 worker (usage_seconds) and a shared frame archived now
    clickhouse.command("SYSTEM STOP MERGES usage_frames")
    clickhouse.command(
        "INSERT INTO usage_seconds (ts, gpu_uuid, gpu_model, node_id, tenant, job, sm_util, "
        "mem_util, mem_used, mem_total, power_w, energy_mj, event_id) VALUES "
        f"({MINUTE + 3}, 'GPU-1', 'H100', 'n1', 'acme', 'j1', 10, 5, 1, 2, 300, 300000, "
        "generateUUIDv4())"
    )
    f = Frame(
        "GPU-1",
        None,
        "H100",
        MINUTE + 4,
        (Share("acme", "j1", 600), Share("zeta", "j2", 300, "spot")),
        sm_util=[10.0, 20.0],
        mem_util=[5.0, 6.0],
        mem_used=[1, 2],
        mem_total=2,
        power_w=[300.0, 301.0],
        energy_j=[300.0, 301.5],
    )
    sink = LedgerSink(clickhouse)
    sink.write_raw([FreshSpan("n1", f, MINUTE, 0b110000)])
    sink.write_raw([FreshSpan("n1", f, MINUTE, 0b110000)])  # the flush replayed
    # then the frame is one stored row, and the per-second view has all three seconds once,
    # each with its allocation set (v1: a whole GPU)
    n = clickhouse.query("SELECT count() FROM usage_frames FINAL").result_rows[0][0]
    assert n == 1
    rows = clickhouse.query(
        "SELECT toUnixTimestamp(ts) - {m:UInt32}, tenants, share_milli, energy_mj "
        "FROM usage_raw_seconds ORDER BY ts",
        parameters={"m": MINUTE},
    ).result_rows
    assert [tuple(r) for r in rows] == [
        (3, ["acme"], [1000], 300000),
        (4, ["acme", "zeta"], [600, 300], 300000),
        (5, ["acme", "zeta"], [600, 300], 301500),
    ]


def test_a_whole_gpu_row_written_before_shares_merges_with_one_written_after(clickhouse) -> None:
    # given a v1 row (no shared_milli: 0) and the same row written by a v2 worker (1000)
    clickhouse.command("SYSTEM STOP MERGES usage_minutely")
    clickhouse.command(
        "INSERT INTO usage_minutely (minute, tenant, job, gpu_uuid, claimed_mask, energy_map) "
        f"VALUES ({MINUTE}, 'acme', 'j1', 'GPU-1', 3, ([0, 1], [1000, 1000]))"
    )
    LedgerSink(clickhouse).write_ledger([row(0b110, energy=4000)])
    # then they are one row of three seconds, a whole GPU
    [(n, seconds, milli)] = clickhouse.query(
        "SELECT count(), sum(gpu_seconds), sum(gpu_milli_seconds) FROM usage_minutely FINAL"
    ).result_rows
    assert (n, seconds, milli) == (1, 3, 3000)


def test_migrations_apply_once_and_refuse_edited_history(
    clickhouse, tmp_path: Path, monkeypatch
) -> None:
    # given a database the fixture already migrated: re-running applies nothing
    assert migrate(clickhouse) == []
    applied = clickhouse.query("SELECT count() FROM gpumeter_migrations").result_rows[0][0]
    assert applied == len(discover())

    # when an applied migration's text changes, migrate refuses and names it
    first = discover()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    monkeypatch.setattr("schemas.clickhouse.migrate.discover", lambda *a: [edited])
    with pytest.raises(MigrationError, match=f"{first.version:04d}_{first.name}"):
        migrate(clickhouse)


def test_upgrading_a_0001_ledger_keeps_every_total(chdb_path: Path, monkeypatch) -> None:
    import uuid

    from kernel.clickhouse import connect

    # given a database at migration 0002 whose ledger holds rows the old way (full rows,
    # replaced by version), including a superseded version
    client = connect(f"chdb://{chdb_path}", database=f"t_{uuid.uuid4().hex[:12]}")
    every = discover()
    monkeypatch.setattr(
        "schemas.clickhouse.migrate.discover", lambda *a: [m for m in every if m.version <= 2]
    )
    migrate(client)
    cols = [
        "minute",
        "tenant",
        "job",
        "billing_class",
        "gpu_uuid",
        "mig_uuid",
        "gpu_model",
        "node_id",
        "seconds_mask",
        "active_mask",
        "gpu_seconds",
        "active_seconds",
        "sm_util_sum",
        "mem_util_sum",
        "energy_mj",
        "peak_mem_used",
        "version",
    ]
    from datetime import UTC, datetime

    m = datetime.fromtimestamp(MINUTE, UTC)
    client.insert(
        "usage_minutely",
        [
            [
                m,
                "acme",
                "j1",
                "spot",
                "GPU-1",
                "",
                "H100",
                "n1",
                0b1111,
                0b0101,
                4,
                2,
                100.0,
                40.0,
                4000,
                7,
                4,
            ],
            [
                m,
                "acme",
                "j1",
                "spot",
                "GPU-1",
                "",
                "H100",
                "n1",
                (1 << 60) - 1,
                1,
                60,
                1,
                1500.5,
                600.0,
                60_000,
                9,
                60,
            ],
            [
                m,
                "__idle__",
                "",
                "",
                "GPU-2",
                "",
                "H100",
                "n1",
                1 << 59,
                0,
                1,
                0,
                0.0,
                0.0,
                250,
                0,
                1,
            ],
        ],
        column_names=cols,
    )
    # when the remaining migrations run (0003 converts the ledger to union state)
    monkeypatch.setattr("schemas.clickhouse.migrate.discover", lambda *a: every)
    migrate(client)
    # then every reader's totals are those of the newest old versions, exactly
    got = client.query(
        "SELECT tenant, sum(gpu_seconds), sum(active_seconds), sum(sm_util_sum), "
        "sum(mem_util_sum), sum(energy_mj), max(peak_mem_used), any(billing_class) "
        "FROM usage_minutely FINAL GROUP BY tenant ORDER BY tenant"
    ).result_rows
    assert got == [
        ("__idle__", 1, 0, 0.0, 0.0, 250, 0, ""),
        ("acme", 60, 1, 1500.5, 600.0, 60_000, 9, "spot"),
    ]
    hourly = client.query("SELECT sum(gpu_seconds) FROM usage_hourly").result_rows[0][0]
    assert hourly == 61
    client.command(f"DROP DATABASE {client.database}")


def test_compacting_a_month_keeps_every_total_and_leaves_one_part(clickhouse) -> None:
    # given a month of the ledger written in three inserts (three parts), one a replay
    clickhouse.command("SYSTEM STOP MERGES usage_minutely")
    sink = LedgerSink(clickhouse)
    sink.write_ledger([row(0b1111, energy=4000)])
    sink.write_ledger([row((1 << 60) - 1, energy=60000)])
    sink.write_ledger([row(0b1111, energy=4000)])
    before = clickhouse.query("SELECT sum(gpu_seconds), sum(energy_mj) FROM usage_minutely FINAL")
    # when it is compacted (what `gpumeter db compact --period 2026-11` runs)
    clickhouse.command("SYSTEM START MERGES usage_minutely")
    clickhouse.command("OPTIMIZE TABLE usage_minutely PARTITION 202611 FINAL")
    # then one part holds it, and every total read with or without FINAL is unchanged
    parts = clickhouse.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'usage_minutely' AND active"
    ).result_rows[0][0]
    assert parts == 1
    after = clickhouse.query("SELECT sum(gpu_seconds), sum(energy_mj) FROM usage_minutely")
    assert before.result_rows == after.result_rows == [(60, 60000)]
