"""Rows to ClickHouse columns and back: the ledger (``usage_minutely``), the raw archive
(``usage_frames``) and conflicts. Pure functions over plain data, column-oriented (one list
per column: several times cheaper to build and to insert than one list per row)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.frame import WHOLE, frame_slice, frame_wire
from streams.clickhouse.columns import RAW_FRAME_COLUMNS
from streams.minute_state import Conflict, FreshSpan, MinuteRow


def stored_share(share_milli: int) -> int:
    """The ledger's ``shared_milli``: 0 for a whole GPU (0030_ledger_shares.sql)."""
    return 0 if share_milli == WHOLE else share_milli


def ledger_columns(rows: Sequence[MinuteRow]) -> list[list[Any]]:
    """The ledger's stored columns (``LEDGER_COLUMNS`` order) for rows of union state."""
    maps_sm, maps_mem, maps_energy = [], [], []
    for r in rows:
        readings, pending = r.readings, r.pending
        sm: Sequence[float]
        mem: Sequence[float]
        energy: Sequence[int]
        if not readings and len(pending) == 1:  # the usual row: one slice of a frame
            first, sm, mem, energy = pending[0]
            seconds = list(range(first, first + len(sm)))
        else:
            seconds = list(readings)  # maxMap needs no order
            sm, mem, energy = [], [], []
            if seconds:
                sm, mem, energy = (list(c) for c in zip(*readings.values(), strict=True))
            for first, sms, mems, energies in pending:
                seconds.extend(range(first, first + len(sms)))
                sm.extend(sms)
                mem.extend(mems)
                energy.extend(energies)
        maps_sm.append((seconds, sm))
        maps_mem.append((seconds, mem))
        maps_energy.append((seconds, energy))
    return [
        [r.minute for r in rows],
        [r.tenant for r in rows],
        [r.job for r in rows],
        [r.billing_class for r in rows],
        [r.gpu_uuid for r in rows],
        [r.mig_uuid for r in rows],
        [0 if r.share_milli == WHOLE else r.share_milli for r in rows],
        [r.gpu_model for r in rows],
        [r.node_id for r in rows],
        [r.claimed_mask for r in rows],
        [r.released_mask for r in rows],
        [r.claimed_active for r in rows],
        maps_sm,
        maps_mem,
        maps_energy,
        [r.peak_mem_used for r in rows],
        [r.version for r in rows],
    ]


def ledger_row(r: Sequence[Any]) -> MinuteRow:
    """One stored ledger row (``LEDGER_COLUMNS`` order, read with FINAL) as state."""
    sm_keys, sm = r[12]
    mem = dict(zip(*r[13], strict=True))
    energy = dict(zip(*r[14], strict=True))
    readings = {
        int(k): (float(v), float(mem.get(k, 0.0)), int(energy.get(k, 0)))
        for k, v in zip(sm_keys, sm, strict=True)
    }
    return MinuteRow(
        epoch(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[7],
        r[8],
        int(r[9]),
        int(r[10]),
        int(r[11]),
        readings,
        int(r[15]),
        int(r[16]),
        share_milli=int(r[6]) or WHOLE,
    )


def frame_columns(spans: Sequence[FreshSpan]) -> list[list[Any]]:
    """The raw archive's columns (``RAW_FRAME_COLUMNS`` order): one row per contiguous run of
    each span's seconds (normally the whole span), holding that piece of the frame as the v2
    wire JSON (exact: orjson writes every float so that it reads back the same)."""
    cols: list[list[Any]] = [[] for _ in range(len(RAW_FRAME_COLUMNS))]
    c_minute, c_gpu, c_mig, c_mask, c_model, c_node, c_tenants, c_jobs, c_shares, c_frame = cols
    dumps = orjson.dumps
    for node_id, f, minute, mask in spans:
        off = minute - f.start  # frame index = second of the minute + off
        shares = f.allocations
        tenants = [s.tenant for s in shares]
        jobs = [s.job for s in shares]
        milli = [s.milli for s in shares]
        mig = f.mig_uuid or ""
        for low, high in _runs(mask):
            if low + off == 0 and high + off == f.n:
                piece = f
            else:
                piece = frame_slice(f, low + off, high + off)
            c_minute.append(minute)
            c_gpu.append(f.gpu_uuid)
            c_mig.append(mig)
            c_mask.append(((1 << (high - low)) - 1) << low)
            c_model.append(f.gpu_model)
            c_node.append(node_id)
            c_tenants.append(tenants)
            c_jobs.append(jobs)
            c_shares.append(milli)
            c_frame.append(dumps(frame_wire(piece)))
    return cols


def _runs(mask: int) -> list[tuple[int, int]]:
    """The contiguous runs of set bits of a mask, as [low, high) second ranges."""
    out = []
    while mask:
        low = (mask & -mask).bit_length() - 1
        run = mask >> low
        length = (~run & (run + 1)).bit_length() - 1  # trailing ones
        out.append((low, low + length))
        mask &= ~(((1 << length) - 1) << low)
    return out


def conflict_rows(conflicts: Sequence[Conflict]) -> list[list[Any]]:
    """Conflicts as rows (``CONFLICT_SHARE_COLUMNS`` order): few, so row-oriented."""
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
                stored_share(c.winner_share_milli),
                stored_share(c.loser_share_milli),
            ]
        )
    return data


def epoch(value: datetime) -> int:
    return int((value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp())
