"""The published JSON Schemas of the usage record, by ``schema_version``, and where they are
committed (``schemas/json/``; ``gpumeter schema export`` writes them, a test checks they are
current)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.usage import SCHEMA_VERSION, json_schema
from schemas.usage_v2 import SCHEMA_VERSION_V2, json_schema_v2

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
#: The current version (what ``gpumeter schema export`` writes by default).
CURRENT = SCHEMA_VERSION_V2
_SCHEMAS: dict[int, Callable[[], dict[str, Any]]] = {
    SCHEMA_VERSION: json_schema,
    SCHEMA_VERSION_V2: json_schema_v2,
}
VERSIONS = tuple(sorted(_SCHEMAS))


def schema_path(version: int = CURRENT) -> Path:
    """The committed schema file of a version (``gpu.usage.v<version>.schema.json``; the topic
    is ``gpu.usage.v1`` for both)."""
    return SCHEMA_DIR / f"gpu.usage.v{version}.schema.json"


def render_schema(version: int = CURRENT) -> str:
    """The schema file's exact text."""
    return json.dumps(_SCHEMAS[version](), indent=2, sort_keys=True) + "\n"
