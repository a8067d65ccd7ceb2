"""Values of the agent's command-line options, parsed and checked: durations, start times,
node ids, bootstrap servers, topics. Each parser raises ``argparse.ArgumentTypeError`` with a
message that says what was expected; the demo uses the same ones."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kernel.dsn import parse_bootstrap as kernel_parse_bootstrap


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {lo}..{hi}")
        return value

    return parse


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {lo:g}..{hi:g}")
        return value

    return parse


_DURATION_PART = re.compile(r"(\d+)\s*([smhd]?)")


def _duration_seconds(text: str) -> int:
    t = text.strip().lower()
    if (
        not t
        or not re.fullmatch(r"(\d+\s*[smhd]?\s*)+", t)
        or (len(_DURATION_PART.findall(t)) > 1 and not re.fullmatch(r"(\d+\s*[smhd]\s*)+", t))
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number with s/m/h/d, e.g. 6h or 1h30m"
        )
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in _DURATION_PART.findall(t))


def parse_duration(text: str) -> int:
    """A positive duration (90s, 30m, 6h, 1d, 1h30m; a plain number is seconds), at most 366 days."""
    value = _duration_seconds(text)
    if not 1 <= value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be 1 s..366 d")
    return value


def parse_retention(text: str) -> int:
    value = _duration_seconds(text)
    if value > 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: retention is at most 7 d")
    return value


def parse_speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or 'max'") from None
    if not 0 < value <= 1e7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: speed must be > 0 and at most 1e7, or 'max'")
    return value


#: 2015-01-01T00:00:00Z: the contract rejects earlier samples (schemas.usage.MIN_TS).
_MIN_START = 1_420_070_400


def parse_start(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = int(dt.timestamp())
    if ts < _MIN_START:
        raise argparse.ArgumentTypeError(f"{text!r}: the start must be 2015-01-01 or later")
    if ts > time.time() + 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future: the worker rejects samples from the future"
        )
    return ts


def parse_since(text: str, now: float | None = None) -> int:
    """A UTC instant, friendly: ISO date/time (UTC unless it says otherwise), an epoch second,
    'today', 'yesterday', 'now', or an age ('90m', '2h', '1d', '2h ago')."""
    t = text.strip().lower()
    now = time.time() if now is None else now
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if t in ("today", "yesterday", "now"):
        return (
            int(now)
            if t == "now"
            else int((midnight - timedelta(days=1 if t == "yesterday" else 0)).timestamp())
        )
    if t.endswith(" ago"):
        t = t[:-4].strip()
    if re.fullmatch(r"\d{9,11}", t):
        return int(t)
    if re.fullmatch(r"(\d+\s*[smhd]\s*)+", t):
        return int(now) - _duration_seconds(t)
    try:
        dt = datetime.fromisoformat(
            text.strip().replace(" ", "T", 1).removesuffix("Z").removesuffix("z")
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a UTC time like 2026-11-20T10:00, an epoch second, 'today', "
            "or an age like 2h"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def parse_node_id(text: str) -> str:
    if (
        not 1 <= len(text) <= 128
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
        or "/" in text
        or text in (".", "..")
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a node id is 1..128 printable characters, without '/'"
        )
    return text


def parse_bootstrap(text: str) -> str:
    """``host:port[,host:port]``, checked by the same rule as ``GPUMETER_KAFKA_BOOTSTRAP``."""
    try:
        kernel_parse_bootstrap(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_topic(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._\-]{1,249}", text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a Kafka topic name is 1..249 of letters, digits, '.', '_' and '-'"
        )
    return text


def default_start() -> int:
    """Yesterday 00:00 UTC: the default first simulated second."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=1)).timestamp())
