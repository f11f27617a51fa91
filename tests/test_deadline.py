"""time_limit: a deadline fires in the limited thread, also after many blocks that ended in
time (the watchdog then sleeps towards a long-gone deadline and must be woken)."""

from __future__ import annotations

import pytest

from dtf.deadline import TimeLimitExceeded, time_limit


def test_a_short_limit_after_many_long_ones_still_fires() -> None:
    for _ in range(200):
        with time_limit(30.0):
            pass
    with pytest.raises(TimeLimitExceeded):
        with time_limit(0.2):
            while True:
                pass


def test_a_block_that_ends_in_time_raises_nothing_later() -> None:
    with time_limit(0.05):
        pass
    total = sum(range(2_000_000))  # keeps running past the old deadline: nothing may surface here
    assert total > 0
