"""A billing period: one calendar month in UTC, written ``YYYY-MM`` (the kernel's
:class:`kernel.period.Period`, the one definition analytics uses too), and billing's ingest
grace."""

from __future__ import annotations

from datetime import timedelta

from kernel.period import Period, PeriodError

#: How long after a period's end usage may still arrive in the normal course (agent spools
#: draining, worker catch-up). Finalizing before ``end + grace`` needs a recorded reason.
INGEST_GRACE = timedelta(hours=24)

__all__ = ["INGEST_GRACE", "Period", "PeriodError"]
