"""MinuteRow.sums() adds a row's readings at C speed (functools.reduce); it must give exactly
what adding them one at a time, left to right, in the order they came, gives (the sums a closed
minute's message carries were always taken that way)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.minute_state import MinuteRow

readings_st = st.dictionaries(
    st.integers(0, 59),
    st.tuples(
        st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False)),
        st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False)),
        st.integers(0, 10**9),
    ),
    max_size=60,
)


def _one_at_a_time(row: MinuteRow) -> tuple[float, float, int]:
    sm, mem, energy = row.dropped_sm, row.dropped_mem, row.dropped_energy
    mask = row.seconds_mask
    for s, (a, b, c) in row.readings.items():
        if mask >> s & 1:
            sm += a
            mem += b
            energy += c
    return sm, mem, int(energy)


@given(
    readings_st,
    st.floats(0, 6000, allow_nan=False),
    st.floats(0, 6000, allow_nan=False),
    st.integers(0, 10**11),
    st.integers(0, (1 << 60) - 1),
)
def test_sums_equal_the_left_to_right_sums_bit_for_bit(
    readings: dict[int, tuple[float, float, int]],
    dropped_sm: float,
    dropped_mem: float,
    dropped_energy: int,
    released: int,
) -> None:
    # given a row holding these readings (all claimed), some seconds released or not
    claimed = sum(1 << s for s in readings)
    for released_mask in (0, released & claimed):
        row = MinuteRow(
            0, "t", "j", "", "GPU-1", "", "m", "n", claimed_mask=claimed,
            released_mask=released_mask, readings=dict(readings),
            dropped_sm=dropped_sm, dropped_mem=dropped_mem, dropped_energy=dropped_energy,
        )  # fmt: skip
        # when summed, then the floats are the same bits and the types the same
        got, want = row.sums(), _one_at_a_time(row)
        assert [repr(x) for x in got] == [repr(x) for x in want]
        assert [type(x) for x in got] == [type(x) for x in want]
