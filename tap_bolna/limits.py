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

    Never above `maximum` (`max_workers`). After a 429 with `Retry-After`, no new request
    starts before that time, on any worker. A 429 lowers the limit once per limit: requests
    already in flight when it was lowered do not lower it again.
    """

    def __init__(
        self,
        maximum: int,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start at `maximum` requests in flight."""
        self.maximum = maximum
        self.limit = maximum
        self._logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._condition = threading.Condition()
        self._in_flight = 0
        self._generation = 0  # bumped whenever the limit is lowered
        self._successes = 0
        self._resume_at = 0.0
        self.throttled = 0  # how many times the limit was lowered (for the sync summary)

    def acquire(self) -> int:
        """Wait for a free slot (and for any Retry-After); returns a token for `release`."""
        with self._condition:
            while True:
                pause = self._resume_at - self._clock()
                if pause > 0:
                    self._condition.wait(pause)
                elif self._in_flight >= self.limit:
                    self._condition.wait()
                else:
                    self._in_flight += 1
                    return self._generation

    def release(self, token: int, *, throttled: bool, retry_after: float | None = None) -> None:
        """Give the slot back, saying whether Bolna answered 429 (and its Retry-After)."""
        with self._condition:
            self._in_flight -= 1
            if throttled:
                if retry_after:
                    self._resume_at = max(self._resume_at, self._clock() + retry_after)
                if token == self._generation:
                    self._lower(retry_after)
            else:
                self._successes += 1
                if (
                    self.limit < self.maximum
                    and self._successes >= SUCCESSES_PER_RAISE * self.limit
                ):
                    self.limit += 1
                    self._successes = 0
            self._condition.notify_all()

    def _lower(self, retry_after: float | None) -> None:
        before = self.limit
        self.limit = max(1, (before + 1) // 2)
        self._generation += 1
        self._successes = 0
        if self.limit == before:
            return
        self.throttled += 1
        wait = f", pausing {retry_after:g} s as Retry-After asks" if retry_after else ""
        self._logger.warning(
            "Bolna answered HTTP 429: lowering requests in flight from %d to %d%s "
            "(raised again by one after %d successful requests).",
            before,
            self.limit,
            wait,
            SUCCESSES_PER_RAISE * self.limit,
        )
