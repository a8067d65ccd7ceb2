"""JSON export: the canonical invoice document, byte for byte what was hashed and stored.

``sha256(file) == content_hash`` for every exported file, so a customer or auditor can check
an invoice without access to our database. Schema: schemas/json/invoice.v1.schema.json.
"""

from __future__ import annotations

from pathlib import Path

from billing.invoice import Invoice


def file_stem(inv: Invoice) -> str:
    return inv.number or f"DRAFT-{inv.period}-{inv.tenant}"


def write_json(inv: Invoice, out_dir: Path) -> Path:
    path = out_dir / f"{file_stem(inv)}.json"
    path.write_bytes(inv.canonical_json())
    return path
