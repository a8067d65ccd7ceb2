"""Rows to ClickHouse columns and back: the ledger (``usage_minutely``), the raw archive
(``usage_frames``) and conflicts. Pure functions over plain data, column-oriented (one list
per column: several times cheaper to build and to insert than one list per row)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.frame import WHOLE
from streams.minute_state import Conflict, FreshSpan, MinuteRow


def stored_share(share_milli: int) -> int:
    """The ledger's ``shared_milli``: 0 for a whole GPU (0030_ledger_shares.sql)."""
    return 0 if share_milli == WHOLE else share_milli


def ledger_columns(rows: Sequence[MinuteRow]) -> list[list[Any]]:
    """The ledger's stored columns (``LEDGER_COLUMNS`` order) for rows of union state."""
    maps_sm, maps_mem, maps_energy = [], [], []
    for r in rows:
        readings = r.readings
        seconds = list(readings)  # maxMap needs no order
        if seconds:
            sm, mem, energy = zip(*readings.values(), strict=True)
        else:
            sm = mem = energy = ()
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
    """The raw archive's columns (``RAW_FRAME_COLUMNS`` order): one row per span, its
    per-second arrays holding the seconds of ``mask`` in order."""
    cols: list[list[Any]] = [[] for _ in range(20)]
    (
        c_minute,
        c_gpu,
        c_mig,
        c_mask,
        c_model,
        c_node,
        c_tenants,
        c_jobs,
        c_shares,
        c_classes,
        c_share_sm,
        c_sm,
        c_mu,
        c_used,
        c_total,
        c_power,
        c_energy,
        c_temp,
        c_flag_s,
        c_flags,
    ) = cols
    for node_id, f, minute, mask in spans:
        off = minute - f.start  # frame index = second of the minute + off
        low = (mask & -mask).bit_length() - 1
        high = mask.bit_length()
        if mask == ((1 << (high - low)) - 1) << low:  # contiguous: slices
            i0, i1 = low + off, high + off
            pick: Any = slice(i0, i1)
            sm, mu, used = f.sm_util[pick], f.mem_util[pick], f.mem_used[pick]
            power, energy_j = f.power_w[pick], f.energy_j[pick]
            temp = f.temp_c[pick] if f.temp_c is not None else [None] * (i1 - i0)
            index: Any = range(i0, i1)
        else:
            index = [s + off for s in range(low, high) if mask >> s & 1]
            sm = [f.sm_util[i] for i in index]
            mu = [f.mem_util[i] for i in index]
            used = [f.mem_used[i] for i in index]
            power = [f.power_w[i] for i in index]
            energy_j = [f.energy_j[i] for i in index]
            temp = [f.temp_c[i] for i in index] if f.temp_c is not None else [None] * len(index)
        c_minute.append(minute)
        c_gpu.append(f.gpu_uuid)
        c_mig.append(f.mig_uuid or "")
        c_mask.append(mask)
        c_model.append(f.gpu_model)
        c_node.append(node_id)
        shares = f.allocations
        c_tenants.append([s.tenant for s in shares])
        c_jobs.append([s.job for s in shares])
        c_shares.append([s.milli for s in shares])
        c_classes.append([s.billing_class or "" for s in shares])
        c_share_sm.append(
            [[s.sm_util[i] for i in index] if s.sm_util is not None else [] for s in shares]
        )
        c_sm.append(sm)
        c_mu.append(mu)
        c_used.append(used)
        c_total.append(f.mem_total)
        c_power.append(power)
        c_energy.append([round(e * 1000) for e in energy_j])
        c_temp.append(temp)
        if f.flags:
            flagged = [
                (i - off, v)
                for i, v in sorted(f.flags.items())
                if 0 <= i - off < 60 and mask >> (i - off) & 1
            ]
            c_flag_s.append([s for s, _ in flagged])
            c_flags.append([list(v) for _, v in flagged])
        else:
            c_flag_s.append([])
            c_flags.append([])
    return cols


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
