"""The fast paths of the invoice document give exactly the bytes of the generic ones.

Documents are hashed and stored; a run builds one per tenant, so ``canonical_json`` uses
orjson and the document's lines, jobs and rates are spelled out instead of reflected. These
tests hold both to the stdlib / reflective originals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billing.invoice import (
    InvoiceLine,
    JobUsage,
    _job_dict,
    _line_dict,
    _stdlib_canonical_json,
    _ts,
    canonical_json,
)
from billing.pricebook import Rate
from billing.pricing import _plain
from tests.unit.billing.builders import H100, make_book, minutes, rate

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text())
_docs = st.recursive(
    st.dictionaries(st.text(), _scalars, max_size=6),
    lambda inner: st.dictionaries(
        st.text(), st.one_of(_scalars, inner, st.lists(inner, max_size=3)), max_size=6
    ),
    max_leaves=30,
)


@given(_docs)
def test_orjson_writes_the_stdlib_canonical_bytes(doc: dict[str, Any]) -> None:
    try:
        expected = _stdlib_canonical_json(doc)
    except UnicodeEncodeError:  # lone surrogates: neither writes them
        return
    assert canonical_json(doc) == expected


def test_keys_beyond_the_basic_plane_sort_by_code_point() -> None:
    doc = {"\uffff": 1, "\U0001f600": 2, "a": 3, "é": 4}
    assert canonical_json(doc) == _stdlib_canonical_json(doc)


def test_spelled_out_lines_jobs_and_rates_equal_the_reflective_form() -> None:
    inv = rate(make_book(), minutes("j", "2026-01-05T10:00", 3))
    for ln in [
        *inv.lines,
        InvoiceLine(
            1,
            "adjustment",
            H100,
            "spot",
            "x",
            Decimal("-0.5"),
            "GPU-hour",
            Decimal("1.2"),
            Decimal("-0.60"),
            reference="GM-2026-000001",
            ref_period="2026-01",
            ref_kind="usage",
            seconds=-1800,
        ),
        InvoiceLine(
            2,
            "usage",
            H100,
            "on_demand",
            "a 250-milli share for 3 s",
            Decimal("0.000208"),
            "GPU-hour",
            Decimal("3.6"),
            Decimal("0.00"),
            seconds=0,
            gpu_milli_seconds=750,
        ),
    ]:
        assert _line_dict(ln) == _without_whole_milli(_plain(ln), "seconds")
    job = JobUsage(
        "j",
        H100,
        "on_demand",
        2,
        datetime(2026, 1, 5, tzinfo=UTC),
        datetime(2026, 1, 6, tzinfo=UTC),
        10,
        60,
        5,
    )
    # ``preempted`` is written only when true (documents without preemptions are unchanged)
    plain = {k: v for k, v in _plain(job).items() if k != "preempted"}
    assert _job_dict(job) == {
        **_without_whole_milli(plain, "gpu_seconds"),
        "first_minute": _ts(job.first_minute),
        "last_minute": _ts(job.last_minute),
    }
    preempted = replace(job, preempted=True)
    assert _job_dict(preempted) == {**_job_dict(job), "preempted": True}
    for r in (
        Rate(H100, "spot", Decimal("1.10"), date(2026, 1, 1)),
        Rate(H100, "on_demand", Decimal("2.7"), date(2026, 1, 1), date(2026, 2, 1), "t"),
    ):
        generic = {f.name: _plain(getattr(r, f.name)) for f in dataclasses.fields(r)}
        assert _plain(r) == generic


def _without_whole_milli(plain: dict[str, Any], seconds_key: str) -> dict[str, Any]:
    """The reflective form as documents write it: ``gpu_milli_seconds`` only where a share makes
    it differ from seconds x 1000 (so whole-GPU documents are unchanged by contract v2)."""
    if plain["gpu_milli_seconds"] == plain[seconds_key] * 1000:
        return {k: v for k, v in plain.items() if k != "gpu_milli_seconds"}
    return plain
