"""Limits shared by every request of a sync: requests per second, and requests in flight.

The SDK retries one request at a time and has no notion of a pool; with several workers a
429 must slow all of them down, not only the request that got it.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

# Successful requests per allowed request in flight before one more is allowed again:
# slow enough that a server which keeps refusing the extra request sees few 429s.
SUCCESSES_PER_RAISE = 16
# Requests in flight before any success: a server that allows fewer refuses only a few.
STARTING_LIMIT = 2


class RequestRateLimiter:
    """Spaces requests at least 1/`per_second` apart, across every thread and stream.

    Parallel fetching must not turn into a 429 storm; the SDK has no shared limiter.
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`clock` and `sleep` are injectable so tests need not wait."""
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0

    def wait(self) -> None:
        """Block until this caller's turn to send a request."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


class AdaptiveConcurrency:
    """Requests in flight: halved when Bolna answers 429, raised again slowly after successes.

    Never above `maximum` (`max_workers`). It starts low and doubles after each run of
    successes (as TCP's slow start does), so a server with a lower limit refuses a few
    requests, not a burst of `maximum`; after the first 429 it only adds one at a time.
    A 429 lowers the limit once: requests already in flight when it was lowered do not lower
    it again. The refused request itself waits as long as `Retry-After` says (the retry loop
    does that); the other workers go on at the lower limit.
    """

    def __init__(self, maximum: int, *, logger: logging.Logger | None = None) -> None:
        """Start at `min(maximum, STARTING_LIMIT)` requests in flight."""
        self.maximum = maximum
        self.limit = min(maximum, STARTING_LIMIT)
        self._logger = logger or logging.getLogger(__name__)
        self._condition = threading.Condition()
        self._in_flight = 0
        self._generation = 0  # bumped whenever the limit is lowered
        self._successes = 0
        self._slow_start = True  # doubling until the first 429
        self.throttled = 0  # how many times the limit was lowered

    def acquire(self) -> int:
        """Wait for a free slot; returns a token for `release`."""
        with self._condition:
            while self._in_flight >= self.limit:
                self._condition.wait()
            self._in_flight += 1
            return self._generation

    def release(self, token: int, *, throttled: bool) -> None:
        """Give the slot back, saying whether Bolna answered 429."""
        with self._condition:
            self._in_flight -= 1
            if throttled:
                self._slow_start = False
                if token == self._generation:
                    self._lower()
            else:
                self._successes += 1
                self._raise_after_successes()
            self._condition.notify_all()

    def _raise_after_successes(self) -> None:
        if self.limit >= self.maximum:
            return
        if self._slow_start and self._successes >= self.limit:
            self.limit = min(self.maximum, 2 * self.limit)
            self._successes = 0
        elif self._successes >= SUCCESSES_PER_RAISE * self.limit:
            self.limit += 1
            self._successes = 0

    def _lower(self) -> None:
        before = self.limit
        self.limit = max(1, (before + 1) // 2)
        self._generation += 1
        self._successes = 0
        if self.limit == before:
            return
        self.throttled += 1
        self._logger.warning(
            "Bolna answered HTTP 429: lowering requests in flight from %d to %d "
            "(raised again by one after %d successful requests).",
            before,
            self.limit,
            SUCCESSES_PER_RAISE * self.limit,
        )
