"""The root of analytics' errors: the CLI catches it and prints the message, exit status 1."""

from __future__ import annotations

from kernel.period import PeriodError as KernelPeriodError


class AnalyticsError(Exception):
    """Something analytics cannot compute as asked (a bad register file, a bad period)."""


class PeriodError(AnalyticsError, KernelPeriodError):
    """A report period that is neither ``YYYY-MM`` nor ``YYYY-MM-DD``."""
