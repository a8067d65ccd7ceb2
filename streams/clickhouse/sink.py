"""The ClickHouse implementation of the usage sink (:class:`streams.sink.UsageSink`): reload
minute state, write the raw archive, the ledger, conflicts, rejections and work units. Every
write is idempotent on its identity and ledger rows merge by union (0001-0003 migrations), so
replaying a flush after a crash, or another worker writing the same rows, changes nothing.
Failures are classified, never slept on here (see :mod:`streams.errors`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as DriverError
from clickhouse_connect.driver.exceptions import OperationalError

from kernel.clickhouse import ClickHouseError
from kernel.names import IDLE_TENANT
from schemas.usage import GpuSecond, sample_event_int
from schemas.work import WORK_UNITS_COLUMNS
from streams.aggregate import Conflict, GpuGroupKey, MinuteRow
from streams.errors import SinkBackpressure, SinkError
from streams.records import RejectedRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The ledger's stored (union-merged) columns; gpu_seconds, energy_mj, ... are ALIAS columns
#: computed from them (0003_ledger_union.sql).
LEDGER_COLUMNS = [
    "minute",
    "tenant",
    "job",
    "billing_class",
    "gpu_uuid",
    "mig_uuid",
    "gpu_model",
    "node_id",
    "claimed_mask",
    "released_mask",
    "claimed_active",
    "sm_util_map",
    "mem_util_map",
    "energy_map",
    "peak_mem_used",
    "version",
]
RAW_COLUMNS = [
    "ts",
    "gpu_uuid",
    "mig_uuid",
    "gpu_model",
    "node_id",
    "tenant",
    "job",
    "billing_class",
    "sm_util",
    "mem_util",
    "mem_used",
    "mem_total",
    "power_w",
    "energy_mj",
    "temp_c",
    "flags",
    "event_id",
]
REJECTED_COLUMNS = [
    "received_at",
    "topic",
    "partition",
    "offset",
    "sample_index",
    "code",
    "reason",
    "node_id",
    "raw",
    "raw_size",
    "raw_sha256",
]
CONFLICT_COLUMNS = [
    "ts",
    "gpu_uuid",
    "kind",
    "winner_mig_uuid",
    "winner_tenant",
    "winner_job",
    "loser_mig_uuid",
    "loser_tenant",
    "loser_job",
    "loser_node_id",
    "loser_billing_class",
    "loser_sm_util",
    "loser_energy_mj",
]
#: A rejected payload is stored exactly up to this many bytes; its size and SHA-256 are always
#: stored, so a longer one can be matched with the record still on the topic.
RAW_CAP_BYTES = 1 << 20
#: How far back a restarted worker looks for a node's newest stored minute.
WATERMARK_LOOKBACK_DAYS = 35
#: Reasons are short by construction (schemas.validation); this only guards the table.
REASON_CAP_CHARS = 1000


class LedgerSink:
    def __init__(self, client: Client, *, archive_raw: bool = True) -> None:
        self.client = client
        self.archive_raw = archive_raw

    # -- reads -----------------------------------------------------------------------------
    def load(self, keys: Iterable[GpuGroupKey]) -> list[MinuteRow]:
        """The stored (FINAL, i.e. newest version) rows of these physical GPU-minutes, the
        parent's and its MIG slices'."""
        wanted = set(keys)
        if not wanted:
            return []
        minutes = sorted({k[1] for k in wanted})
        gpus = sorted({k[0] for k in wanted})
        result = self._call(
            "load ledger state",
            lambda: self.client.query(
                f"SELECT {', '.join(LEDGER_COLUMNS)} FROM usage_minutely FINAL "
                "WHERE minute IN {minutes:Array(DateTime)} AND gpu_uuid IN {gpus:Array(String)}",
                parameters={
                    "minutes": [datetime.fromtimestamp(m, UTC) for m in minutes],
                    "gpus": gpus,
                },
            ),
        )
        rows = []
        for r in result.result_rows:
            minute = _epoch(r[0])
            if (r[4], minute) not in wanted:
                continue
            sm_keys, sm = r[11]
            mem = dict(zip(*r[12], strict=True))
            energy = dict(zip(*r[13], strict=True))
            readings = {
                int(k): (float(v), float(mem.get(k, 0.0)), int(energy.get(k, 0)))
                for k, v in zip(sm_keys, sm, strict=True)
            }
            rows.append(
                MinuteRow(
                    minute,
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    int(r[8]),
                    int(r[9]),
                    int(r[10]),
                    readings,
                    int(r[14]),
                    int(r[15]),
                )
            )
        return rows

    def node_watermarks(self, nodes: Iterable[str]) -> dict[str, int]:
        """The newest second each node has in the ledger (its last stored minute's end), for a
        restarted worker to know which reloaded minutes had already closed. Looks back
        :data:`WATERMARK_LOOKBACK_DAYS` days (cheap: the ledger is ordered by minute)."""
        nodes = sorted(set(nodes))
        if not nodes:
            return {}
        result = self._call(
            "load node watermarks",
            lambda: self.client.query(
                "SELECT node_id, toUnixTimestamp(max(minute)) + 59 FROM usage_minutely "
                "WHERE minute >= now() - INTERVAL {days:UInt32} DAY AND node_id IN {n:Array(String)} "
                "GROUP BY node_id",
                parameters={"days": WATERMARK_LOOKBACK_DAYS, "n": nodes},
            ),
        )
        return {node: int(ts) for node, ts in result.result_rows}

    def load_parked(self, topic: str) -> list[RejectedRecord]:
        """Samples rejected for a future timestamp and not yet re-admitted."""
        result = self._call(
            "load parked samples",
            lambda: self.client.query(
                "SELECT topic, partition, offset, sample_index, code, reason, node_id, raw "
                "FROM usage_rejected FINAL WHERE code = 'future_timestamp' AND topic = {t:String} "
                "AND (topic, partition, offset, sample_index) NOT IN "
                "(SELECT topic, partition, offset, sample_index FROM usage_readmitted)",
                parameters={"t": topic},
                column_formats={"raw": "bytes"},
            ),
        )
        return [
            RejectedRecord(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5], r[6], r[7])
            for r in result.result_rows
        ]

    # -- writes ----------------------------------------------------------------------------
    def write_raw(self, samples: Sequence[tuple[str, GpuSecond]]) -> None:
        """Archive samples (node_id, sample). Column-oriented: several times faster than rows.

        Built one column at a time (a comprehension per column is cheaper than appending to 17
        lists per sample). Event ids go in as the UUIDs' 128-bit integers, which
        clickhouse-connect writes exactly as it writes ``uuid.UUID`` values (from ``.int``)."""
        if not samples or not self.archive_raw:
            return
        nodes = [n for n, _ in samples]
        ss = [s for _, s in samples]
        ts = [s.ts for s in ss]
        gpu = [s.gpu_uuid for s in ss]
        mig = [s.mig_uuid or "" for s in ss]
        cols: list[list[Any]] = [
            ts,
            gpu,
            mig,
            [s.gpu_model for s in ss],
            nodes,
            [s.tenant if s.tenant is not None else IDLE_TENANT for s in ss],
            [s.job or "" for s in ss],
            [s.billing_class or "" for s in ss],
            [s.sm_util for s in ss],
            [s.mem_util for s in ss],
            [s.mem_used for s in ss],
            [s.mem_total for s in ss],
            [s.power_w for s in ss],
            [round(s.energy_j * 1000) for s in ss],
            [s.temp_c for s in ss],
            [s.flags for s in ss],  # tuples: written exactly as lists, without a copy each
            list(map(sample_event_int, gpu, mig, ts)),
        ]
        self._call(
            "insert usage_seconds",
            lambda: self.client.insert(
                "usage_seconds", cols, column_names=RAW_COLUMNS, column_oriented=True
            ),
        )

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        """Upsert rows as union state: any order or repetition of writes merges the same."""
        if not rows:
            return
        data = []
        for r in rows:
            seconds = list(r.readings)  # maxMap needs no order
            sm, mem, energy = zip(*r.readings.values(), strict=True) if seconds else ((), (), ())
            data.append(
                [
                    r.minute,
                    r.tenant,
                    r.job,
                    r.billing_class,
                    r.gpu_uuid,
                    r.mig_uuid,
                    r.gpu_model,
                    r.node_id,
                    r.claimed_mask,
                    r.released_mask,
                    r.claimed_active,
                    (seconds, sm),
                    (seconds, mem),
                    (seconds, energy),
                    r.peak_mem_used,
                    r.version,
                ]
            )
        self._call(
            "insert usage_minutely",
            lambda: self.client.insert("usage_minutely", data, column_names=LEDGER_COLUMNS),
        )

    def write_rejected(self, records: Sequence[RejectedRecord]) -> None:
        """Rejections with the exact offending bytes (up to :data:`RAW_CAP_BYTES`), their
        full size and SHA-256: nothing is decoded, so nothing is lost or inflated."""
        if not records:
            return
        now = datetime.now(UTC)
        data = [
            [
                now,
                r.topic,
                r.partition,
                r.offset,
                r.sample_index,
                r.code,
                r.reason[:REASON_CAP_CHARS],
                r.node_id[:256],
                r.raw[:RAW_CAP_BYTES],
                len(r.raw),
                hashlib.sha256(r.raw).digest(),
            ]
            for r in records
        ]
        self._call(
            "insert usage_rejected",
            lambda: self.client.insert("usage_rejected", data, column_names=REJECTED_COLUMNS),
        )

    def write_conflicts(self, conflicts: Sequence[Conflict]) -> None:
        if not conflicts:
            return
        data = []
        for c in conflicts:
            r = c.loser_readings
            data.append(
                [
                    datetime.fromtimestamp(c.ts, UTC),
                    c.gpu_uuid,
                    c.kind,
                    c.winner_mig_uuid,
                    c.winner[0],
                    c.winner[1],
                    c.loser_mig_uuid,
                    c.loser[0],
                    c.loser[1],
                    c.loser_node_id[:256],
                    c.loser_billing_class,
                    r[0] if r else None,
                    r[2] if r else None,
                ]
            )
        self._call(
            "insert usage_conflicts",
            lambda: self.client.insert("usage_conflicts", data, column_names=CONFLICT_COLUMNS),
        )

    def mark_readmitted(self, records: Sequence[RejectedRecord]) -> None:
        if not records:
            return
        data = [[r.topic, r.partition, r.offset, r.sample_index] for r in records]
        self._call(
            "insert usage_readmitted",
            lambda: self.client.insert(
                "usage_readmitted",
                data,
                column_names=["topic", "partition", "offset", "sample_index"],
            ),
        )

    def write_work_units(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._call(
                "insert work_units",
                lambda: self.client.insert(
                    "work_units", rows, column_names=list(WORK_UNITS_COLUMNS)
                ),
            )

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        """Run one ClickHouse operation; classify its failure for the caller (no sleeping and
        no retrying here: back-pressure is the caller's decision, see streams/errors.py)."""
        try:
            return fn()
        except (DriverError, OSError, RuntimeError) as exc:  # chDB raises RuntimeError
            err = ClickHouseError.from_driver(exc)
            if _transient(exc, err.code):
                raise SinkBackpressure(
                    op, err.render(), retry_after=BACKPRESSURE_WAIT_S, code=err.code, name=err.name
                ) from exc
            raise SinkError(op, err.render(), code=err.code, name=err.name) from exc


#: How long to wait before retrying a chunk the store pushed back on.
BACKPRESSURE_WAIT_S = 1.0
#: Server error codes that mean "not now" rather than "never": timeouts, network, too many
#: simultaneous queries or parts, memory pressure, a read-only replica, Keeper trouble.
TRANSIENT_CODES = frozenset({159, 164, 202, 203, 209, 210, 241, 242, 252, 319, 425, 999})


def _transient(exc: BaseException, code: int | None) -> bool:
    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError)):
        return True
    return code in TRANSIENT_CODES


def _epoch(value: datetime) -> int:
    return int((value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp())
