"""Energies in millijoules, column-wise (:func:`streams.minute_state.milli_joules`), are exactly
what rounding each reading on its own gives: ``round(e * 1000)``, half to even, for every
energy the contract allows (floats and integers, ties included)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.common import MAX_ENERGY_J
from streams.minute_state import milli_joules

energy = st.one_of(
    st.floats(0, MAX_ENERGY_J, allow_nan=False, allow_infinity=False),
    st.integers(0, int(MAX_ENERGY_J)),
    # readings with 2-3 decimals, as agents send them, and exact ties after * 1000
    st.integers(0, int(MAX_ENERGY_J * 1000)).map(lambda m: m / 1000),
    st.integers(0, int(MAX_ENERGY_J * 1000)).map(lambda m: (m + 0.5) / 1000),
)


@given(st.lists(st.lists(energy, min_size=1, max_size=70), min_size=1, max_size=12))
def test_column_wise_millijoules_equal_rounding_each_reading(columns: list[list[float]]) -> None:
    # Given columns of energies (a record's frames); when rounded column-wise
    got = milli_joules(columns)
    # Then each is the per-reading rounding, as Python ints, in the same shape
    assert got == [[round(e * 1000) for e in column] for column in columns]
    assert all(type(v) is int for column in got for v in column)


def test_exact_ties_round_half_to_even() -> None:
    # Given energies whose product with 1000 is exactly k + 0.5 mJ
    ties = [0.0005, 0.0015, 0.0025, 0.0035, 1.0005, 12.3445]
    exact = [e for e in ties if (e * 1000) % 1 == 0.5]
    assert len(exact) >= 3  # the test must exercise ties
    # Then they round to even, as round() does (2.5 -> 2, 3.5 -> 4)
    assert milli_joules([exact]) == [[round(e * 1000) for e in exact]]
    assert milli_joules([[0.0025, 0.0035]]) == [[2, 4]]
