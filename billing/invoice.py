"""The invoice document: lines, per-job usage, totals, the prices used; canonical JSON and hash.

The canonical JSON (sorted keys, no whitespace, UTF-8, every number an exact decimal string)
is what is stored in ``invoices.document``, exported as ``<number>.json`` and hashed: the
content hash of a finalized invoice is ``sha256`` of exactly those bytes, so anyone can verify
an exported file against the ledger of record.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

import orjson

from billing.pricing import TenantPricing, _plain
from kernel.names import MILLI_PER_GPU_HOUR

SCHEMA_VERSION = "invoice.v1"
Status = Literal["draft", "finalized"]
LineKind = Literal[
    "usage",
    "commitment",
    "overage",
    "discount",
    "minimum",
    "credit",
    "energy",
    "tax",
    "adjustment",
]
#: Kinds that follow from usage and prices, so a re-rating can prove or correct them. Credits
#: depend on other invoices' consumption and tax on the invoice it sits on: neither is re-rated.
RATED_KINDS: frozenset[str] = frozenset(
    {"usage", "commitment", "overage", "discount", "minimum", "energy"}
)
_ID_NAMESPACE = uuid.UUID("6f1c7a52-2f0e-4b8e-9a57-3c1b0c7e4d10")


def invoice_id_for(issuer_prefix: str, tenant: str, period: str) -> str:
    """Deterministic: a re-run of a draft replaces the same row instead of adding one."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{issuer_prefix}/{tenant}/{period}"))


def _clean(d: Decimal) -> Decimal:
    # -0.00 and 0.00 are the same money; one spelling keeps documents byte-identical.
    return abs(d) if d == 0 else d


@dataclass(frozen=True)
class InvoiceLine:
    line_no: int
    kind: LineKind
    gpu_model: str
    billing_class: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    #: adjustment: the original invoice number; credit: the credit id.
    reference: str = ""
    #: adjustment: the period and the kind of line it corrects.
    ref_period: str = ""
    ref_kind: str = ""
    #: billable GPU-seconds behind usage/commitment/overage/adjustment lines (quantity is
    #: rounded): exact for whole GPUs; for shares the whole part (toward zero) of
    #: ``gpu_milli_seconds / 1000``.
    seconds: int = 0
    #: exact billable milli-GPU-seconds behind the line, what its amount is computed from
    #: (0 given with ``seconds``: ``seconds x 1000``, a whole GPU). The document carries it
    #: only when it differs from ``seconds x 1000`` (a line with shared usage).
    gpu_milli_seconds: int = 0

    def __post_init__(self) -> None:
        for name in ("quantity", "unit_price", "amount"):
            object.__setattr__(self, name, _clean(getattr(self, name)))
        if self.gpu_milli_seconds == 0 and self.seconds:
            object.__setattr__(self, "gpu_milli_seconds", self.seconds * 1000)


@dataclass(frozen=True)
class JobUsage:
    """The customer's per-job breakdown: what ran, on how many GPUs, for how long."""

    job: str
    gpu_model: str
    billing_class: str
    gpus: int
    first_minute: datetime
    last_minute: datetime
    gpu_seconds: int  # metered: distinct allocated GPU-seconds held, whatever the share
    billable_seconds: int  # share-weighted, after the plan's minimum duration and increment
    energy_mj: int
    #: metered milli-GPU-seconds (seconds x share); 0 given: ``gpu_seconds x 1000`` (whole
    #: GPUs). The document carries it only when it differs from that (shared usage).
    gpu_milli_seconds: int = 0
    #: preempted in the period (a gpu.preemptions.v1 record): the plan's minimum duration was
    #: waived unless the plan says preempted_minimum = "charged". In the document only when true.
    preempted: bool = False

    def __post_init__(self) -> None:
        if self.gpu_milli_seconds == 0 and self.gpu_seconds:
            object.__setattr__(self, "gpu_milli_seconds", self.gpu_seconds * 1000)


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    tenant: str
    period: str
    currency: str
    minor_unit: int
    pricing: TenantPricing
    lines: tuple[InvoiceLine, ...]
    jobs: tuple[JobUsage, ...]
    status: Status = "draft"
    number: str = ""
    issued_on: date | None = None
    due_on: date | None = None
    subtotal: Decimal = field(init=False)
    tax: Decimal = field(init=False)
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        # Totals are sums of rounded lines; nothing is rounded here.
        sub = sum((ln.amount for ln in self.lines if ln.kind != "tax"), Decimal(0))
        tax = sum((ln.amount for ln in self.lines if ln.kind == "tax"), Decimal(0))
        object.__setattr__(self, "subtotal", _clean(sub))
        object.__setattr__(self, "tax", _clean(tax))
        object.__setattr__(self, "total", _clean(sub + tax))

    @property
    def gpu_seconds(self) -> int:
        return sum(j.gpu_seconds for j in self.jobs)

    @property
    def gpu_milli_seconds(self) -> int:
        return sum(j.gpu_milli_seconds for j in self.jobs)

    @property
    def gpu_hours(self) -> Decimal:
        """Share-weighted GPU-hours metered (a 250-milli share for an hour: 0.25)."""
        return Decimal(self.gpu_milli_seconds) / MILLI_PER_GPU_HOUR

    def finalized(self, number: str, issued_on: date) -> Invoice:
        due = date.fromordinal(issued_on.toordinal() + self.pricing.issuer.payment_terms_days)
        return replace(self, status="finalized", number=number, issued_on=issued_on, due_on=due)

    # -- the document ----------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        p = self.pricing
        return {
            "schema_version": SCHEMA_VERSION,
            "invoice_id": self.invoice_id,
            "status": self.status,
            "number": self.number,
            "issued_on": self.issued_on.isoformat() if self.issued_on else None,
            "due_on": self.due_on.isoformat() if self.due_on else None,
            "period": self.period,
            "tenant": self.tenant,
            "currency": self.currency,
            "minor_unit": self.minor_unit,
            "issuer": _plain(p.issuer),
            "customer": _plain(p.contract.customer),
            "lines": [_line_dict(ln) for ln in self.lines],
            "subtotal": format(self.subtotal, "f"),
            "tax": format(self.tax, "f"),
            "total": format(self.total, "f"),
            "usage": {
                "gpu_seconds": self.gpu_seconds,
                "jobs": [_job_dict(j) for j in self.jobs],
            },
            "pricing": p.to_dict(),
        }

    def canonical_json(self) -> bytes:
        return self._canonical

    @cached_property
    def _canonical(self) -> bytes:
        # The invoice is frozen, so its document is built once: a run or finalization stores
        # it and hashes it, and a second build would cost as much as the first.
        return canonical_json(self.document())

    @property
    def content_hash(self) -> str:
        return self._hash

    @cached_property
    def _hash(self) -> str:
        return hashlib.sha256(self._canonical).hexdigest()

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Invoice:
        lines = tuple(
            InvoiceLine(
                **{**ln, **{k: Decimal(ln[k]) for k in ("quantity", "unit_price", "amount")}}
            )
            for ln in doc["lines"]
        )
        jobs = tuple(
            JobUsage(
                **{
                    **j,
                    "first_minute": datetime.fromisoformat(j["first_minute"]),
                    "last_minute": datetime.fromisoformat(j["last_minute"]),
                }
            )
            for j in doc["usage"]["jobs"]
        )
        return cls(
            invoice_id=doc["invoice_id"],
            tenant=doc["tenant"],
            period=doc["period"],
            currency=doc["currency"],
            minor_unit=doc["minor_unit"],
            pricing=TenantPricing.from_dict(doc["pricing"]),
            lines=lines,
            jobs=jobs,
            status=doc["status"],
            number=doc["number"],
            issued_on=date.fromisoformat(doc["issued_on"]) if doc["issued_on"] else None,
            due_on=date.fromisoformat(doc["due_on"]) if doc["due_on"] else None,
        )


def _line_dict(ln: InvoiceLine) -> dict[str, Any]:
    """``_plain(ln)`` spelled out (the document is built for every invoice of a run)."""
    return {
        "line_no": ln.line_no,
        "kind": ln.kind,
        "gpu_model": ln.gpu_model,
        "billing_class": ln.billing_class,
        "description": ln.description,
        "quantity": format(ln.quantity, "f"),
        "unit": ln.unit,
        "unit_price": format(ln.unit_price, "f"),
        "amount": format(ln.amount, "f"),
        "reference": ln.reference,
        "ref_period": ln.ref_period,
        "ref_kind": ln.ref_kind,
        "seconds": ln.seconds,
        **_milli(ln.seconds, ln.gpu_milli_seconds),
    }


def _job_dict(j: JobUsage) -> dict[str, Any]:
    return {
        "job": j.job,
        "gpu_model": j.gpu_model,
        "billing_class": j.billing_class,
        "gpus": j.gpus,
        "first_minute": _ts(j.first_minute),
        "last_minute": _ts(j.last_minute),
        "gpu_seconds": j.gpu_seconds,
        "billable_seconds": j.billable_seconds,
        "energy_mj": j.energy_mj,
        **_milli(j.gpu_seconds, j.gpu_milli_seconds),
        # only when true: a document without preemptions is byte for byte what it was before
        **({"preempted": True} if j.preempted else {}),
    }


def _milli(seconds: int, milli: int) -> dict[str, int]:
    """``gpu_milli_seconds`` only where shares make it differ from ``seconds x 1000``: a
    whole-GPU document is byte for byte what it was before shares existed."""
    return {} if milli == seconds * 1000 else {"gpu_milli_seconds": milli}


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII unescaped). orjson writes exactly these
    bytes about ten times faster than ``json.dumps`` (tests/unit/billing/test_canonical_json.py
    holds the two to the same output); ``json`` remains for values orjson refuses."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _stdlib_canonical_json(doc)


def _stdlib_canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
