"""The approval links' guess limiter: per address, within a window, and bounded in memory."""

from __future__ import annotations

from worker.http.ratelimit import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_after_its_failures_within_the_window_only() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert not limiter.blocked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")
    clock.now = 61
    assert not limiter.blocked("10.0.0.1")


def test_look_ups_remember_nothing_and_failures_from_ever_new_addresses_stay_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=3, window=60, clock=clock)
    for n in range(1000):
        limiter.blocked(f"2001:db8::{n:x}")
    assert len(limiter) == 0
    limiter.MAX_ADDRESSES = 100
    for n in range(1000):
        limiter.failed(f"2001:db8::{n:x}")
    assert len(limiter) <= 100
    clock.now = 120  # the window passed: an address returning past the cap finds room
    limiter.failed("10.0.0.1")
    assert len(limiter) == 1
