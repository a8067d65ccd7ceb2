"""The plan rule for preempted jobs (``preempted_minimum``), computed by hand.

Spot A100 at 36.00/GPU-hour is 0.01 per GPU-second, so amounts read as seconds / 100.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.errors import PriceBookError
from billing.pricing import TenantPricing
from billing.rating import rate_invoice
from tests.unit.billing.builders import A100, JAN, amounts, make_book, minutes

INVOICE_SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "json" / "invoice.v1.schema.json"
SPOT_36 = [
    {
        "gpu_model": A100,
        "billing_class": "spot",
        "price_per_gpu_hour": "36.00",
        "effective_from": "2026-01-01",
    }
]


def invoice(plan: dict[str, object], preempted: set[str]):  # type: ignore[no-untyped-def]
    book = make_book(plans={"p": plan}, tenant={"plan": "p"}, rates=SPOT_36)
    rows = minutes("pre", "2026-01-05T10:00", 1, seconds=20, model=A100, klass="spot") + minutes(
        "full", "2026-01-05T11:00", 1, seconds=20, model=A100, klass="spot", gpu="g1"
    )
    pricing = TenantPricing.from_pricebook(book, "t", JAN)
    return rate_invoice(pricing, "t", JAN, rows, preempted=preempted)


def billed(inv) -> dict[str, tuple[int, bool]]:  # type: ignore[no-untyped-def]
    return {j.job: (j.billable_seconds, j.preempted) for j in inv.jobs}


def test_a_preempted_job_is_billed_what_it_held_and_another_the_minimum() -> None:
    # given a plan with a 60 s minimum, per second; two 20 s spot jobs, one preempted
    inv = invoice({"minimum_seconds": 60, "increment_seconds": 1}, {"pre"})
    # then the preempted job is billed 20 s, the other 60 s: 80 s x 0.01 = 0.80
    assert billed(inv) == {"pre": (20, True), "full": (60, False)}
    assert amounts(inv) == [("usage", "0.80")]


def test_the_increment_still_applies_to_a_preempted_job() -> None:
    # 20 s rounded up to the 15 s increment is 30 s; the other job is padded to 60 s: 0.90
    inv = invoice({"minimum_seconds": 60, "increment_seconds": 15}, {"pre"})
    assert billed(inv) == {"pre": (30, True), "full": (60, False)}
    assert amounts(inv) == [("usage", "0.90")]


def test_a_plan_may_charge_the_minimum_to_preempted_jobs_too() -> None:
    plan = {"minimum_seconds": 60, "increment_seconds": 1, "preempted_minimum": "charged"}
    inv = invoice(plan, {"pre"})
    assert billed(inv) == {"pre": (60, True), "full": (60, False)}
    assert amounts(inv) == [("usage", "1.20")]


def test_without_preemptions_the_invoice_is_unchanged() -> None:
    plan = {"minimum_seconds": 60, "increment_seconds": 1}
    book = make_book(plans={"p": plan}, tenant={"plan": "p"}, rates=SPOT_36)
    rows = minutes("pre", "2026-01-05T10:00", 1, seconds=20, model=A100, klass="spot")
    pricing = TenantPricing.from_pricebook(book, "t", JAN)
    before = rate_invoice(pricing, "t", JAN, rows)
    other_jobs = rate_invoice(pricing, "t", JAN, rows, preempted={"another-job"})
    assert before.canonical_json() == other_jobs.canonical_json()
    assert b"preempted" not in before.canonical_json().split(b'"pricing"')[0]
    assert amounts(before) == [("usage", "0.60")]


def test_the_document_marks_preempted_jobs_and_reads_back() -> None:
    from billing.invoice import Invoice

    inv = invoice({"minimum_seconds": 60, "increment_seconds": 1}, {"pre"})
    jobs = {j["job"]: j for j in inv.document()["usage"]["jobs"]}
    assert jobs["pre"]["preempted"] is True and "preempted" not in jobs["full"]
    again = Invoice.from_document(inv.document())
    assert again.canonical_json() == inv.canonical_json()
    # the published invoice schema states the key
    schema = json.loads(INVOICE_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(inv.canonical_json()))
    doc = json.loads(inv.canonical_json())
    doc["usage"]["jobs"][0]["preempted"] = False  # only ever written as true
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"preempted_minimum": "maybe"}, "plans.p: preempted_minimum = 'maybe' must be one of"),
        ({"preempted_minimum": True}, "plans.p: preempted_minimum = True must be one of"),
        ({"minimum_second": 60}, "plans.p: unknown key 'minimum_second'"),
    ],
)
def test_bad_plan_options_are_refused_naming_the_entry(
    plan: dict[str, object], message: str
) -> None:
    with pytest.raises(PriceBookError, match=message):
        make_book(plans={"p": plan}, tenant={"plan": "p"})


@settings(max_examples=60, deadline=None)
@given(
    jobs=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=6),
    preempted=st.sets(st.integers(min_value=0, max_value=5)),
    minimum=st.sampled_from([0, 60, 300]),
    increment=st.sampled_from([1, 15, 60]),
    charged=st.booleans(),
)
def test_billable_seconds_follow_the_rule_for_any_jobs(
    jobs: list[int], preempted: set[int], minimum: int, increment: int, charged: bool
) -> None:
    # given jobs of `s` seconds each (one ledger row each), some preempted
    plan: dict[str, object] = {"minimum_seconds": minimum, "increment_seconds": increment}
    if charged:
        plan["preempted_minimum"] = "charged"
    book = make_book(plans={"p": plan}, tenant={"plan": "p"}, rates=SPOT_36)
    rows = [
        r
        for i, s in enumerate(jobs)
        for r in minutes(
            f"j{i}", "2026-01-05T10:00", 1, seconds=s, model=A100, klass="spot", gpu=f"g{i}"
        )
    ]
    names = {f"j{i}" for i in preempted}
    inv = rate_invoice(
        TenantPricing.from_pricebook(book, "t", JAN), "t", JAN, rows, preempted=names
    )

    # then each job's billable seconds are the plan's rule, written out independently
    def rule(s: int, job: str) -> int:
        rounded = -(-s // increment) * increment
        waived = job in names and not charged
        return rounded if waived else max(minimum, rounded)

    expected = {f"j{i}": rule(s, f"j{i}") for i, s in enumerate(jobs)}
    assert {j.job: j.billable_seconds for j in inv.jobs} == expected
    assert {j.job for j in inv.jobs if j.preempted} == names & set(expected)
    total = Decimal(sum(expected.values())) / 100  # 0.01 per second
    assert amounts(inv) == [("usage", str(total.quantize(Decimal("0.01"))))]


@pytest.mark.parametrize("rule", ["waived", "charged"])
def test_the_rule_survives_the_invoice_documents_pricing_snapshot(rule: str) -> None:
    # given a tenant's pricing with the rule, written into a document and read back (reconcile
    # and adjustments re-rate with the pricing read from the finalized document)
    book = make_book(
        plans={"p": {"minimum_seconds": 60, "preempted_minimum": rule}},
        tenant={"plan": "p"},
        rates=SPOT_36,
    )
    pricing = TenantPricing.from_pricebook(book, "t", JAN)
    again = TenantPricing.from_dict(json.loads(json.dumps(pricing.to_dict())))
    # then it is the same rule, not the default
    assert again.contract.plan.preempted_minimum == rule
    assert again == pricing


def test_a_snapshot_written_before_the_rule_existed_reads_as_waived() -> None:
    book = make_book(plans={"p": {"minimum_seconds": 60}}, tenant={"plan": "p"}, rates=SPOT_36)
    doc = TenantPricing.from_pricebook(book, "t", JAN).to_dict()
    del doc["contract"]["plan"]["preempted_minimum"]
    assert TenantPricing.from_dict(doc).contract.plan.preempted_minimum == "waived"
