"""The gpu.work.v1 contract: validation and deterministic identity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.work import WorkUnitsReported

T0 = 1_740_787_200  # 2025-03-01T00:00:00Z


def event(**kw: object) -> WorkUnitsReported:
    base: dict[str, object] = {
        "tenant": "acme",
        "job": "llm-serve",
        "source": "replica-0",
        "unit": "tokens",
        "quantity": 1000,
        "window_start": T0,
        "window_end": T0 + 60,
    }
    return WorkUnitsReported.model_validate({**base, **kw})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"window_end": T0}, "must be after window_start"),
        ({"window_end": T0 + 90_000}, "longer than"),
        ({"quantity": -1}, "greater than or equal to 0"),
        ({"quantity": 10**13}, "exceeds"),
        ({"unit": "bananas"}, "Input should be"),
        ({"tenant": "__idle__"}, "reserved"),
        ({"window_start": 1000, "window_end": 1060}, "before 2015"),
        ({"schema_version": 2}, "unknown schema_version"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_rejects_what_cannot_be_real(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        event(**kw)


def test_future_windows_are_rejected_against_the_given_clock() -> None:
    with pytest.raises(ValidationError, match="in the future"):
        WorkUnitsReported.model_validate(
            event().model_dump() | {"window_start": T0 + 3600, "window_end": T0 + 3660},
            context={"now": T0},
        )


@given(st.integers(min_value=0, max_value=600_000_000))
def test_identity_ignores_quantity_so_a_replay_replaces_itself(q: int) -> None:
    # a corrected re-report of the same window keeps the same id (ReplacingMergeTree key)
    assert event(quantity=q).event_id == event().event_id
    assert event(source="replica-1").event_id != event().event_id
    assert WorkUnitsReported.model_validate_json(event(quantity=q).to_json()) == event(quantity=q)
