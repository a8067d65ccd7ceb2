"""JSON export: the canonical invoice document, byte for byte what was hashed and stored.

``sha256(file) == content_hash`` for every exported file, so a customer or auditor can check
an invoice without access to our database. Schema: schemas/json/invoice.v1.schema.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from billing.invoice import Invoice


def file_stem(inv: Invoice) -> str:
    return stem(inv.number, inv.period, inv.tenant)


def stem(number: str, period: str, tenant: str) -> str:
    return number or f"DRAFT-{period}-{tenant}"


def write_document(document: str, out_dir: Path) -> Path:
    """A stored document written as it was stored and hashed (no re-serialization)."""
    doc = json.loads(document)
    path = out_dir / f"{stem(doc['number'], doc['period'], doc['tenant'])}.json"
    path.write_bytes(document.encode())
    return path


def write_json(inv: Invoice, out_dir: Path) -> Path:
    path = out_dir / f"{file_stem(inv)}.json"
    path.write_bytes(inv.canonical_json())
    return path
