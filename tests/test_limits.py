"""Unit tests of the request limits: requests per second, and requests in flight on 429."""

from __future__ import annotations

import logging
import threading

import pytest

from tap_bolna.limits import (
    STARTING_LIMIT,
    SUCCESSES_PER_RAISE,
    AdaptiveConcurrency,
    RequestRateLimiter,
)


def test_rate_limiter_spaces_requests() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RequestRateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()

    assert waits == [0.25, 0.25, 0.25, 0.25]
    assert now[0] == pytest.approx(1.0)


def full_speed(pool: AdaptiveConcurrency) -> None:
    """Successes until the slow start has reached the maximum."""
    while pool.limit < pool.maximum:
        pool.release(pool.acquire(), throttled=False)


def test_the_pool_starts_low_and_doubles_until_the_first_429() -> None:
    pool = AdaptiveConcurrency(8)
    assert pool.limit == STARTING_LIMIT == 2
    limits = []
    while pool.limit < 8:
        pool.release(pool.acquire(), throttled=False)
        limits.append(pool.limit)
    assert sorted(set(limits)) == [2, 4, 8]
    assert len(limits) == 2 + 4, "doubled after as many successes as the limit"


def test_a_429_halves_the_requests_in_flight_once_per_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = AdaptiveConcurrency(8, logger=logging.getLogger("limits-test"))
    full_speed(pool)
    tokens = [pool.acquire() for _ in range(8)]
    with caplog.at_level(logging.WARNING, logger="limits-test"):
        for token in tokens[:6]:  # six requests sent at 8 in flight are all refused
            pool.release(token, throttled=True)
    assert pool.limit == 4, "requests already in flight lower the limit only once"
    later = pool.acquire()
    pool.release(later, throttled=True)
    assert pool.limit == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, "one WARNING line each time the limit goes down"
    assert "lowering requests in flight from 8 to 4" in lines[0]
    assert "lowering requests in flight from 4 to 2" in lines[1]
    for token in tokens[6:]:
        pool.release(token, throttled=False)


def test_after_a_429_the_limit_rises_slowly_and_never_above_the_maximum() -> None:
    pool = AdaptiveConcurrency(3)
    full_speed(pool)
    pool.release(pool.acquire(), throttled=True)
    assert pool.limit == 2
    for _ in range(SUCCESSES_PER_RAISE * 2 - 1):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 2, "no more doubling once Bolna has refused"
    pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3
    for _ in range(SUCCESSES_PER_RAISE * 10):
        pool.release(pool.acquire(), throttled=False)
    assert pool.limit == 3


def test_no_more_requests_than_the_limit_are_in_flight() -> None:
    pool = AdaptiveConcurrency(2)
    first, second = pool.acquire(), pool.acquire()
    third_started = threading.Event()

    def third() -> None:
        token = pool.acquire()
        third_started.set()
        pool.release(token, throttled=False)

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not third_started.wait(0.1)
    pool.release(first, throttled=False)
    assert third_started.wait(1)
    waiter.join()
    pool.release(second, throttled=False)
