"""billing.showback: internal tenants' quantities and which pending lines stay invoiceable."""

from __future__ import annotations

from decimal import Decimal

from billing.invoice import InvoiceLine
from billing.showback import ShowbackUsage, invoiceable, showback_usage
from tests.unit.billing.builders import A100, H100, minutes


def test_showback_usage_sums_share_weighted_usage_per_model() -> None:
    # given 10 minutes on a 250-milli share of an H100 and 3 whole minutes of an A100
    rows = [
        r.__class__(**{**r.__dict__, "milli": r.gpu_seconds * 250})
        for r in minutes("j", "2026-01-05T10:00", 10, tenant="lab")
    ] + minutes("k", "2026-01-05T10:00", 3, tenant="lab", model=A100, gpu="g1")
    # when
    out = showback_usage("lab", rows + minutes("x", "2026-01-05T10:00", 5, tenant="other"))
    # then 600 s x 250 = 150,000 milli-GPU-s (0.041666... GPU-h); 180 s x 1000 = 180,000 (0.05)
    assert out == [ShowbackUsage("lab", A100, 180_000), ShowbackUsage("lab", H100, 150_000)]
    assert out[0].gpu_hours == Decimal("0.05")
    assert out[1].gpu_hours == Decimal(150_000) / Decimal(3_600_000)


def _adj(reference: str) -> InvoiceLine:
    return InvoiceLine(
        1, "adjustment", H100, "on_demand", "late", Decimal(1), "GPU-hour", Decimal("3.6"),
        Decimal("3.60"), reference=reference, ref_period="2026-01",
    )  # fmt: skip


def test_internal_carried_forward_usage_is_withheld_but_corrections_stay() -> None:
    carried, correction = _adj(""), _adj("GM-2026-000007")
    pending = {"lab": [carried, correction], "t": [carried], "old": [carried]}
    assert invoiceable(pending, {"lab", "old"}) == {"lab": [correction], "t": [carried]}
