"""Limits shared by every request of a sync: the pace per route group, and requests in flight.

Bolna limits an organisation to 500 requests a minute on its agent routes (executions among
them) and 1,000 on the others, shared with the customer's own apps, and answers 429 without
Retry-After. The SDK retries one request at a time and has no notion of a shared pace or
pool; with several workers a 429 must slow all of them down, not only the request that got it.
"""

from __future__ import annotations

import logging
import random
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

# Bolna's route groups: its agent routes share the 500-a-minute limit, the rest 1,000.
EXECUTIONS_ROUTES = "executions"
OTHER_ROUTES = "other"
# The pace after a 429: this share of the pace that was refused.
PACE_DECREASE = 0.8
# After a 429, successful requests per step back up, and how much a step adds to the pace
# (a share of it: from 80 % back to the setting takes some 230 requests).
SUCCESSES_PER_PACE_STEP = 20
PACE_STEP = 0.02
# Never slower than this many requests a minute (one every 10 s).
SLOWEST_PACE = 6.0
# Everyone waits after a 429 without Retry-After: this long, doubled for each 429 in a row
# (the window of Bolna's limit is not documented: a sliding one refuses until it has rolled).
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 60.0


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def route_group(path: str) -> str:
    """Which of Bolna's limits a request path counts against."""
    return EXECUTIONS_ROUTES if path.startswith("/v2/agent/") or path == "/call" else OTHER_ROUTES


class RequestPacer:
    """Spreads one route group's requests evenly, across every thread and stream.

    Starts at `per_minute` (the setting). A 429 lowers the pace to `PACE_DECREASE` of what it
    was, once per run of refusals, and holds every request back for a pause (Retry-After when
    given; otherwise `FIRST_PAUSE_SECONDS`, doubled while requests sent after the pause are
    refused too, with jitter). Requests already sent when the refusals began neither lower it
    again nor end the run. After each `SUCCESSES_PER_PACE_STEP` successes the pace goes up by
    `PACE_STEP` of itself, never above the setting.
    """

    def __init__(  # noqa: PLR0913
        self,
        per_minute: float,
        *,
        name: str = EXECUTIONS_ROUTES,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`clock`, `sleep` and `jitter` (0..1) are injectable so tests need not wait.

        The default sleep looks up `time.sleep` when it sleeps, as the backoff library does.
        """
        self.maximum = float(per_minute)
        self.pace = self.maximum
        self.name = name
        self._logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._sleep = sleep or _sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._refusals_since: float | None = None  # when the current run of 429s began
        self._refusals_in_a_row = 0
        self._successes = 0
        self.slowed = 0  # how many times the pace was lowered
        self.refused = 0  # 429s seen

    def wait(self) -> float:
        """Block until this caller's turn to send; returns that moment (pass it back below)."""
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_slot, self._paused_until)
                self._next_slot = slot + 60.0 / self.pace
            if slot > now:
                self._sleep(slot - now)
            with self._lock:
                if self._paused_until <= slot:  # no 429 held everyone back meanwhile
                    return slot

    def succeeded(self, sent_at: float) -> None:
        """A request sent at `sent_at` was answered (not 429)."""
        with self._lock:
            if self._refusals_since is not None:
                if sent_at < self._refusals_since:
                    return  # sent before the refusals began: says nothing about the pace now
                self._refusals_since = None
                self._refusals_in_a_row = 0
            self._successes += 1
            if self.pace < self.maximum and self._successes >= SUCCESSES_PER_PACE_STEP:
                self.pace = min(self.maximum, self.pace * (1 + PACE_STEP))
                self._successes = 0

    def refused_after(self, sent_at: float, retry_after: float | None) -> float:
        """A request sent at `sent_at` got 429: how long it waits (everyone else waits too)."""
        with self._lock:
            now = self._clock()
            self.refused += 1
            self._successes = 0
            if self._refusals_since is None:
                self._refusals_since = now
                self._refusals_in_a_row = 1
                self._slow_down()
            elif sent_at >= self._refusals_since:
                self._refusals_in_a_row += 1  # sent after the pause began, and still refused
            else:  # in flight when the refusals began: wait for the pause already set, or
                # as long as this answer's Retry-After asks if that is longer (everyone does)
                if retry_after is not None:
                    self._paused_until = max(self._paused_until, now + retry_after)
                    self._next_slot = max(self._next_slot, self._paused_until)
                return max(0.0, self._paused_until - now)
            if retry_after is not None:
                pause = retry_after
            else:
                doubled = FIRST_PAUSE_SECONDS * 2 ** (self._refusals_in_a_row - 1)
                pause = min(LONGEST_PAUSE_SECONDS, doubled) * (0.5 + self._jitter())
            self._paused_until = max(self._paused_until, now + pause)
            self._next_slot = max(self._next_slot, self._paused_until)
            return pause

    def _slow_down(self) -> None:
        before = self.pace
        self.pace = max(min(SLOWEST_PACE, self.maximum), before * PACE_DECREASE)
        self.slowed += 1
        self._logger.warning(
            "Bolna answered HTTP 429 on the %s routes: slowing from %.0f to %.0f requests a "
            "minute (back up slowly, at most %.0f, the setting).",
            self.name,
            before,
            self.pace,
            self.maximum,
        )


class Pacing:
    """The pace of each of Bolna's route groups, shared by every stream and worker of a run."""

    def __init__(
        self,
        per_minute: dict[str, float],
        *,
        logger: logging.Logger | None = None,
        **pacer_options: t.Any,  # noqa: ANN401
    ) -> None:
        """One pacer per route group, at `per_minute[group]` requests a minute."""
        self.pacers = {
            group: RequestPacer(rate, name=group, logger=logger, **pacer_options)
            for group, rate in per_minute.items()
        }

    def for_path(self, path: str) -> RequestPacer:
        """The pacer of the group a request path belongs to."""
        return self.pacers[route_group(path)]


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
