"""Closing and evicting GPU-minutes on event time: the aggregator's clock.

A GPU-minute closes once its node's newest second is ``grace_s`` past the minute's end; its
rows are then emitted (``usage.minutely.v1``). A physical GPU-minute is evicted from memory
once all its minutes are closed and ``keep_s`` further behind (it can be reloaded from the
ledger). Both look only at minutes the newest watermark has passed, through two indexes the
aggregator keeps: every held physical GPU-minute by minute (``by_minute``), and those that may
still hold an open GPU-minute (``open_``); never at the whole state on every chunk.
"""

from __future__ import annotations

from streams.minute_state import GpuGroupKey, GpuMinute, GpuMinuteKey, MinuteRow, row_order

Groups = dict[GpuGroupKey, dict[str, GpuMinute]]
MinuteIndex = dict[int, set[GpuGroupKey]]


def close_ready(
    groups: Groups,
    open_: MinuteIndex,
    watermark: dict[str, int],
    corrections: set[GpuMinuteKey],
    grace_s: int,
) -> list[MinuteRow]:
    """Rows of minutes that just closed, plus corrections of already closed minutes (the
    corrections are consumed)."""
    out: list[MinuteRow] = []
    horizon = 60 + grace_s
    top = max(watermark.values(), default=0)
    for minute in [m for m in open_ if m + horizon <= top]:
        keys = open_[minute]
        for key in list(keys):
            group = groups.get(key)
            still_open = False
            for gm in group.values() if group is not None else ():
                if gm.closed:
                    continue
                if gm.rows and watermark.get(node_of(gm), 0) >= minute + horizon:
                    gm.closed = True
                    out.extend(gm.rows.values())
                else:  # its node is behind, or it has no rows yet
                    still_open = True
            if not still_open:
                keys.discard(key)
        if not keys:
            del open_[minute]
    for gpu, mig, minute in corrections:
        out.extend(groups[(gpu, minute)][mig].rows.values())
    corrections.clear()
    out.sort(key=row_order)
    return out


def evict_closed(
    groups: Groups,
    by_minute: MinuteIndex,
    open_: MinuteIndex,
    watermark: dict[str, int],
    grace_s: int,
    keep_s: int,
) -> int:
    """Forget physical GPU-minutes whose minutes are all closed and well behind the
    watermark. Returns the number of GPU-minutes dropped."""
    horizon = 60 + grace_s + keep_s
    top = max(watermark.values(), default=0)
    drop = []
    for minute in [m for m in by_minute if m + horizon <= top]:
        for key in by_minute[minute]:
            group = groups[key]
            held = [gm for gm in group.values() if gm.rows]  # a parent may only be claimed
            if held and all(
                gm.closed and watermark.get(node_of(gm), 0) >= minute + horizon for gm in held
            ):
                drop.append(key)
    dropped = 0
    for key in drop:
        dropped += len(groups.pop(key))
        minute_keys = by_minute[key[1]]
        minute_keys.discard(key)
        if not minute_keys:
            del by_minute[key[1]]
        open_keys = open_.get(key[1])
        if open_keys is not None:
            open_keys.discard(key)
            if not open_keys:
                del open_[key[1]]
    return dropped


def node_of(gm: GpuMinute) -> str:
    for row in gm.rows.values():
        return row.node_id
    return ""
