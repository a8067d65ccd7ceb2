"""Collecting every problem of a configuration file (the price book, the asset register)
instead of stopping at the first: each is ``where: what``, and the caller raises one error that
lists them all, so one edit fixes them all."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def unknown(self, where: str, table: Mapping[str, Any], allowed: Collection[str]) -> None:
        """Keys of ``table`` that are not ``allowed`` (a typo would otherwise be ignored)."""
        extra = set(table) - set(allowed)
        if extra:
            self.add(where, f"unknown keys {sorted(extra)} (allowed: {sorted(allowed)})")
