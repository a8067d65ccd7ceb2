"""Invoice numbers: ``<PREFIX>-<YEAR>-<SEQ6>``, gapless per issuer and issue year.

Gapless means: the finalized numbers of an issuer for a year are exactly 1..n. Numbers are
allocated only at finalization (drafts have none), in tenant order within a period, so the
same finalization history always produces the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from billing.errors import BillingError

_NUMBER = re.compile(r"^([A-Za-z0-9]+)-(\d{4})-(\d{6})$")


def format_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year:04d}-{seq:06d}"


def parse_number(number: str) -> tuple[str, int, int]:
    m = _NUMBER.match(number)
    if not m:
        raise BillingError(f"{number!r} is not an invoice number like GM-2026-000001")
    return m.group(1), int(m.group(2)), int(m.group(3))


def next_numbers(existing: Iterable[str], prefix: str, year: int, count: int) -> list[str]:
    """The next ``count`` numbers after the issuer's finalized ones; refuses a gapped history."""
    seqs = sorted(s for p, y, s in map(parse_number, existing) if p == prefix and y == year)
    if seqs != list(range(1, len(seqs) + 1)):
        raise BillingError(
            f"finalized invoice numbers of {prefix} for {year} are not gapless 1..{len(seqs)} "
            f"(found {seqs[:5]}...): two finalizations ran at once or rows were lost; "
            "investigate before finalizing more"
        )
    return [format_number(prefix, year, len(seqs) + i + 1) for i in range(count)]
