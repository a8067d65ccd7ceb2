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


pieces_st = st.lists(
    st.tuples(
        st.integers(1, 12),  # seconds in the piece
        st.lists(st.floats(0, 100, allow_nan=False), min_size=12, max_size=12),
        st.lists(st.integers(0, 10**9), min_size=12, max_size=12),
    ),
    max_size=5,
)


@given(readings_st, pieces_st, st.floats(0, 6000, allow_nan=False))
def test_pending_slices_sum_and_store_as_the_readings_they_stand_for(
    readings: dict[int, tuple[float, float, int]],
    pieces: list[tuple[int, list[float], list[int]]],
    dropped_sm: float,
) -> None:
    # given a row holding some readings, then frame slices of seconds it did not hold (pending)
    from streams.clickhouse.codec import ledger_columns
    from streams.minute_state import Piece

    pending: list[Piece] = []
    first = max(readings, default=-1) + 1
    for n, values, energies in pieces:
        if first + n > 60:
            break
        pending.append((first, values[:n], values[::-1][:n], energies[:n]))
        first += n
    held = sum(1 << s for s in readings)
    held |= sum(((1 << len(p[1])) - 1) << p[0] for p in pending)
    row = MinuteRow(
        0, "t", "j", "", "GPU-1", "", "m", "n", claimed_mask=held, readings=dict(readings),
        dropped_sm=dropped_sm, pending=tuple(pending),
    )  # fmt: skip
    # when its sums and ledger columns are taken from the slices, and again once folded in
    got_sums, got_cols = row.sums(), ledger_columns([row])
    settled = row.settle()
    assert row.pending == ()
    # then the sums are the left-to-right sums of every reading in the order it came
    want = _one_at_a_time(row)
    assert [repr(x) for x in got_sums] == [repr(x) for x in want]
    # and the ledger gets the same (second, value) pairs
    want_cols = ledger_columns([row])
    for got_map, want_map in zip(got_cols[12:15], want_cols[12:15], strict=True):
        (got_s, got_v), (want_s, want_v) = got_map[0], want_map[0]
        assert sorted(zip(got_s, got_v, strict=True)) == sorted(zip(want_s, want_v, strict=True))
    assert len(settled) == len(readings) + sum(len(p[1]) for p in pending)
