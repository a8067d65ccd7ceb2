"""The ClickHouse implementation of the usage sink (:class:`streams.sink.UsageSink`): reload
minute state, write the raw archive (``usage_frames``), the ledger, conflicts, rejections and
work units. Every write is idempotent on its identity and ledger rows merge by union, so
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
from schemas.work import WORK_UNITS_COLUMNS
from streams.clickhouse.codec import (
    conflict_rows,
    epoch,
    frame_columns,
    ledger_columns,
    ledger_row,
)
from streams.clickhouse.columns import (
    CONFLICT_COLUMNS,
    CONFLICT_SHARE_COLUMNS,
    LEDGER_COLUMNS,
    LEDGER_KEY,
    LEDGER_MERGED,
    RAW_FRAME_COLUMNS,
    READMITTED_COLUMNS,
    REJECTED_COLUMNS,
)
from streams.errors import SinkBackpressure, SinkError
from streams.minute_state import Conflict, FreshSpan, GpuGroupKey, MinuteRow
from streams.records import RejectedRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "CONFLICT_COLUMNS",
    "LEDGER_COLUMNS",
    "RAW_CAP_BYTES",
    "RAW_FRAME_COLUMNS",
    "REJECTED_COLUMNS",
    "LedgerSink",
]

#: Inserts leave merging to the table's merges and to FINAL (every reader's rule): merging
#: rows within the inserted block first (``optimize_on_insert``, on by default) runs the
#: ledger's maxMap union per row and made an insert several times slower, for no change in
#: what FINAL reads (each row of a block is a distinct key, or merges later all the same).
MERGE_LATER = {"optimize_on_insert": 0}
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
        """The stored rows of these physical GPU-minutes, the parent's and its MIG slices',
        merged as ``FINAL`` merges them: grouped by the table's key, each column through the
        aggregate function the table declares for it (:data:`LEDGER_MERGED`). Same rows as
        ``FINAL``, about 15x faster on chDB (measured: ``FINAL`` merged the ``maxMap``
        columns of every granule in range, ~1 s for 274 rows of a 14k-row ledger; the
        ``GROUP BY`` reads only the matching rows, ~70 ms), and only for the GPU-minutes a
        first, cheaper query (~10 ms) found stored."""
        wanted = set(keys)
        if not wanted:
            return []
        # First which of them the ledger holds at all (two key columns, no merging): a live
        # worker mostly asks for minutes nobody has written yet, and then this is all it reads.
        # (Without the pairs filter: its parameter costs more to send and parse than the few
        # extra key pairs it would leave out.)
        held = self._select_pairs(
            "find stored GPU-minutes", "DISTINCT gpu_uuid, minute", wanted, exact=False
        )
        found = {(g, epoch(m)) for g, m in held} & wanted
        if not found:
            return []
        result = self._select_pairs(
            "load ledger state", LEDGER_MERGED, found, f"GROUP BY {LEDGER_KEY}"
        )
        rows = [ledger_row(r) for r in result]
        return [r for r in rows if (r.gpu_uuid, r.minute) in found]

    def _select_pairs(
        self, op: str, what: str, pairs: set[GpuGroupKey], tail: str = "", exact: bool = True
    ) -> Sequence[Sequence[Any]]:
        """``SELECT what FROM usage_minutely`` of these (GPU, minute) pairs (``exact``), or of
        every one of their GPUs x every one of their minutes."""
        minutes = sorted({k[1] for k in pairs})
        parameters: dict[str, Any] = {
            "minutes": [datetime.fromtimestamp(m, UTC) for m in minutes],
            "gpus": sorted({k[0] for k in pairs}),
        }
        # minute and gpu_uuid lead the sorting key (the index)
        where = "minute IN {minutes:Array(DateTime)} AND gpu_uuid IN {gpus:Array(String)}"
        if exact:  # not every GPU x every minute: only the GPU-minutes asked for
            where += " AND (gpu_uuid, minute) IN {pairs:Array(Tuple(String, DateTime))}"
            parameters["pairs"] = [(g, datetime.fromtimestamp(m, UTC)) for g, m in sorted(pairs)]
        result = self._call(
            op,
            lambda: self.client.query(
                f"SELECT {what} FROM usage_minutely WHERE {where} {tail}", parameters=parameters
            ),
        )
        return result.result_rows

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
    def write_raw(self, spans: Sequence[FreshSpan]) -> None:
        """Archive the newly counted seconds: one ``usage_frames`` row per frame-minute, its
        readings as per-second arrays, column-oriented. ``usage_seconds`` (v1's archive, one
        row per second) is no longer written: it keeps the history from before v2."""
        if not spans or not self.archive_raw:
            return
        cols = frame_columns(spans)
        self._call(
            "insert usage_frames",
            lambda: self.client.insert(
                "usage_frames",
                cols,
                column_names=RAW_FRAME_COLUMNS,
                column_oriented=True,
                settings=MERGE_LATER,
            ),
        )

    def write_ledger(self, rows: Sequence[MinuteRow]) -> None:
        """Upsert rows as union state (column-oriented): any order or repetition of writes
        merges the same."""
        if not rows:
            return
        cols = ledger_columns(rows)
        self._call(
            "insert usage_minutely",
            lambda: self.client.insert(
                "usage_minutely",
                cols,
                column_names=LEDGER_COLUMNS,
                column_oriented=True,
                settings=MERGE_LATER,
            ),
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
        data = conflict_rows(conflicts)
        self._call(
            "insert usage_conflicts",
            lambda: self.client.insert(
                "usage_conflicts", data, column_names=CONFLICT_SHARE_COLUMNS
            ),
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
                column_names=READMITTED_COLUMNS,
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
