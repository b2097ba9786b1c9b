"""The circuit breaker's counts and states (jobd/core/breaker.py), no daemon."""
from __future__ import annotations

from jobd.core.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerSpec


def test_consecutive_failures_open_it_and_a_success_resets_the_streak() -> None:
    b = Breaker(BreakerSpec(failures=3, min_calls=1000))
    for ok in (False, False, True, False, False):
        b.ended(1.0, not ok)
    assert b.streak == 2 and not b.should_open()
    b.ended(1.0, True, "boom")
    assert b.should_open() and b.last_error == "boom"


def test_the_failure_rate_counts_only_within_the_window() -> None:
    b = Breaker(BreakerSpec(failures=100, rate=0.5, window=60.0, min_calls=10))
    for i in range(10):
        b.ended(float(i), i % 2 == 0)           # 5 of 10 failed, never 2 in a row
    assert b.streak <= 1 and b.should_open() and b.failure_rate() == 0.5
    c = Breaker(BreakerSpec(failures=100, rate=0.5, window=60.0, min_calls=10))
    for i in range(5):
        c.ended(float(i), True)
    for i in range(10):
        c.ended(200.0 + i, False)               # the failures left the window
    assert not c.should_open() and c.failure_rate() == 0.0


def test_cooldown_doubles_at_each_reopen_up_to_the_max_and_one_trial_at_a_time() -> None:
    b = Breaker(BreakerSpec(failures=1, cooldown=10.0, max_cooldown=35.0))
    b.open(100.0, b.next_cooldown())
    assert b.state == OPEN and b.until == 110.0 and b.holds(105.0)
    assert b.current(110.0) == HALF_OPEN and not b.holds(110.0)
    b.started("j1", 110.0)
    assert b.state == HALF_OPEN and b.trial == "j1" and b.holds(111.0)
    assert b.next_cooldown() == 20.0
    b.open(111.0, b.next_cooldown())
    b.started("j2", 131.0)
    assert b.next_cooldown() == 35.0            # 40, capped
    b.close()
    assert b.state == CLOSED and not b.holds(0.0) and b.next_cooldown() == 10.0
    assert b.trips_within_hour(131.0) == 2 and b.trips_within_hour(111.0 + 3600.0) == 0


def test_off_when_breaker_failures_is_zero() -> None:
    b = Breaker(BreakerSpec(failures=0))
    for _ in range(50):
        b.ended(1.0, True)
    assert not b.should_open()
