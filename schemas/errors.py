"""The root of the contracts' errors: the CLI catches it and prints the message, exit 1.

Validation of usage records does not raise: it returns reasons (``schemas/validation.py``)."""

from __future__ import annotations


class SchemaError(Exception):
    """A contract cannot be applied as asked (a ClickHouse migration, an exported schema)."""
