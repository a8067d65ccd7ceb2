"""Which tenants are internal: read from the price book file, never from billing's code.

A tenant's kind (``[tenants.<id>] kind = "internal" | "external"``, billing/README.md "Price
book format") is configuration the price book owns: one truth for billing (which does not
invoice internal tenants) and the report (which shows their use back at cost and splits
capacity into internal use, external sales and idle). Analytics imports nothing from billing,
so it reads only that key of the TOML file; the rest of the book is billing's to validate.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from analytics.errors import AnalyticsError

#: The demo's price book, the default like the demo's asset register (``gpumeter invoices``
#: defaults to it too).
DEMO_PRICEBOOK = Path(__file__).resolve().parent.parent / "billing" / "pricebook.demo.toml"
KINDS = ("external", "internal")


class TenantKindError(AnalyticsError, ValueError):
    """The price book cannot say which tenants are internal; lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(
            f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = problems


def load_internal_tenants(path: Path | None = None) -> frozenset[str]:
    """The internal tenants of the price book at ``path`` (default: the demo's; none when the
    default is absent, so every tenant then counts as external)."""
    if path is None:
        if not DEMO_PRICEBOOK.exists():
            return frozenset()
        path = DEMO_PRICEBOOK
    try:
        with Path(path).open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise TenantKindError(str(path), ["price book not found"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TenantKindError(str(path), [f"not valid TOML: {exc}"]) from exc
    return internal_tenants(raw, source=str(path))


def internal_tenants(raw: dict[str, Any], *, source: str = "<memory>") -> frozenset[str]:
    tenants = raw.get("tenants", {})
    if not isinstance(tenants, dict):
        raise TenantKindError(source, ["tenants: must be a table of [tenants.<id>] contracts"])
    problems, internal = [], set()
    for tenant, t in tenants.items():
        kind = t.get("kind", "external") if isinstance(t, dict) else "external"
        if kind not in KINDS:
            problems.append(f"tenants.{tenant}: kind {kind!r} is not one of {', '.join(KINDS)}")
        elif kind == "internal":
            internal.add(tenant)
    if problems:
        raise TenantKindError(source, problems)
    return frozenset(internal)
