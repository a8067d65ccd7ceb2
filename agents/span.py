"""Spans of seconds as sorted ``[start, end)`` ranges: the spool's record of dropped seconds."""

from __future__ import annotations


def describe(spans: list[tuple[int, int]], limit: int = 3) -> str:
    from datetime import UTC, datetime

    def utc(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")

    text = ", ".join(f"{utc(s)}..{utc(e - 1)}" for s, e in spans[:limit])
    return text + (f" and {len(spans) - limit} more" if len(spans) > limit else "") + " UTC"


def subtract(spans: list[tuple[int, int]], remove: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` without the seconds in ``remove`` (both [start, end) ranges)."""
    out = merge(spans)
    for rs, re_ in merge(remove):
        nxt: list[tuple[int, int]] = []
        for s, e in out:
            if e <= rs or s >= re_:
                nxt.append((s, e))
                continue
            if s < rs:
                nxt.append((s, rs))
            if e > re_:
                nxt.append((re_, e))
        out = nxt
    return out


def merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged [start, end) ranges."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
