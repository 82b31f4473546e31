"""The ids a sender gives its messages (``jti``) and envelopes."""

from __future__ import annotations

import itertools
import string

from parley.client.sender import _SortableIds


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = _SortableIds()
    made = [ids() for _ in range(5000)]  # more than one read of random bytes
    assert all(len(i) == 32 and set(i) <= set(string.hexdigits.lower()) for i in made)
    assert len(set(made)) == len(made)


def test_ids_sort_by_the_millisecond_they_were_made() -> None:
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)  # 1 ms apart, in ns
    ids = _SortableIds(clock=lambda: next(ticks))
    made = [ids() for _ in range(300)]
    assert made == sorted(made)
    assert made[0][:12] == f"{1_700_000_000_000:012x}"


def test_ids_of_one_millisecond_differ_in_their_random_part() -> None:
    ids = _SortableIds(clock=lambda: 5_000_000)
    first, second = ids(), ids()
    assert first[:12] == second[:12] == f"{5:012x}"
    assert first[12:] != second[12:]
