"""Adjustments: the difference between a finalized invoice and a re-rating of its period.

A finalized invoice is never rewritten. When usage for its period arrives late, the period
is re-rated with the prices the invoice carries; per line key (kind, GPU model, class, unit,
unit price) the difference against the original plus every adjustment already written for it
becomes an ``adjustment`` line on the tenant's next invoice, referencing the original number
and period. Reconcile uses the same difference and must find it empty.

A difference may be negative (a job re-rated across a price change loses minimum padding on one
line and gains it on another): the adjustment then carries negative seconds, quantity and
amount, a credit-note line like any other. Usage is compared in exact milli-GPU-seconds (a
share's usage is fractional in GPU-seconds); a line's ``seconds`` is their whole part. Late usage of a tenant that had no invoice in a
finalized period is carried forward the same way against an empty original (no number).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from billing.invoice import RATED_KINDS, Invoice, InvoiceLine
from billing.lines import gpu_hours, whole_seconds

LineKey = tuple[str, str, str, str, Decimal]  # (kind, gpu_model, billing_class, unit, unit_price)


@dataclass(frozen=True)
class Delta:
    key: LineKey
    milli: int  # milli-GPU-seconds
    quantity: Decimal
    amount: Decimal
    description: str

    @property
    def seconds(self) -> int:
        return whole_seconds(self.milli)

    @property
    def is_zero(self) -> bool:
        return self.amount == 0 and self.milli == 0 and self.quantity == 0


def _key(ln: InvoiceLine) -> LineKey:
    kind = ln.ref_kind if ln.kind == "adjustment" else ln.kind
    return (kind, ln.gpu_model, ln.billing_class, ln.unit, ln.unit_price)


def _sums(lines: Iterable[InvoiceLine]) -> dict[LineKey, tuple[int, Decimal, Decimal, str]]:
    out: dict[LineKey, tuple[int, Decimal, Decimal, str]] = {}
    for ln in lines:
        if ln.kind not in RATED_KINDS and ln.kind != "adjustment":
            continue
        k = _key(ln)
        s, q, a, d = out.get(k, (0, Decimal(0), Decimal(0), ln.description))
        out[k] = (s + ln.gpu_milli_seconds, q + ln.quantity, a + ln.amount, d)
    return out


def differences(
    original: Invoice, rerated: Invoice, already: Sequence[InvoiceLine] = ()
) -> list[Delta]:
    """rerated - (original + already), per line key; only keys that differ."""
    # The original's own adjustment lines correct *other* invoices; only ``already`` (the lines
    # that reference the original) count towards it.
    own = [ln for ln in original.lines if ln.kind != "adjustment"]
    have = _sums([*own, *already])
    want = _sums(rerated.lines)
    deltas = []
    for k in sorted(set(have) | set(want), key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        hs, hq, ha, hd = have.get(k, (0, Decimal(0), Decimal(0), ""))
        ws, wq, wa, wd = want.get(k, (0, Decimal(0), Decimal(0), ""))
        milli = ws - hs
        # GPU-hour quantities are derived from exact milli-GPU-seconds, so rounding never
        # accumulates.
        quantity = gpu_hours(milli) if k[3] == "GPU-hour" and k[0] != "commitment" else wq - hq
        d = Delta(k, milli, quantity, wa - ha, wd or hd)
        if not d.is_zero:
            deltas.append(d)
    return deltas


def adjustment_lines(original: Invoice, deltas: Sequence[Delta]) -> list[InvoiceLine]:
    """Lines for the next invoice (numbered by the rating that places them)."""
    what = (
        f"Adjustment to {original.number} ({original.period})"
        if original.number
        else f"Late usage of {original.period} (no invoice was issued for it)"
    )
    return [
        InvoiceLine(
            0,
            "adjustment",
            d.key[1],
            d.key[2],
            f"{what}: {d.description}",
            d.quantity,
            d.key[3],
            d.key[4],
            d.amount,
            reference=original.number,
            ref_period=original.period,
            ref_kind=d.key[0],
            seconds=d.seconds,
            gpu_milli_seconds=d.milli,
        )
        for d in deltas
    ]
