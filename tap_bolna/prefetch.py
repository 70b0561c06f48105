"""Bounded parallel fetching of windows, handed back in order, plus a shared request limiter.

The SDK syncs partitions one after another (meltano/sdk#2121), so an account with many
agents waits on one round trip at a time. Here a small thread pool fetches whole windows
ahead of time, across agents, while the main thread still emits records and STATE in the
same order as a sequential sync: the SDK's state handling stays single-threaded.
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Job = t.TypeVar("Job")
Result = t.TypeVar("Result")
_NO_MORE_JOBS = object()


class OrderedPrefetcher(t.Generic[Job, Result]):
    """Runs `fetch(job)` for a lazy sequence of jobs on `max_workers` threads, in order.

    At most `lookahead` results are in flight or waiting, so memory stays bounded by that
    many windows however long the history is.
    """

    def __init__(
        self,
        jobs: Iterator[Job],
        fetch: Callable[[Job], Result],
        *,
        max_workers: int,
        lookahead: int,
    ) -> None:
        """Start fetching the first `lookahead` jobs right away."""
        self._jobs = jobs
        self._fetch = fetch
        self._lookahead = lookahead
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bolna-fetch")
        self._queue: collections.deque[tuple[Job, Future[Result]]] = collections.deque()
        self._exhausted = False
        self._top_up()

    def _top_up(self) -> None:
        while not self._exhausted and len(self._queue) < self._lookahead:
            job = next(self._jobs, _NO_MORE_JOBS)
            if job is _NO_MORE_JOBS:
                self._exhausted = True
                return
            job = t.cast("Job", job)
            self._queue.append((job, self._pool.submit(self._fetch, job)))

    def next_result(self, wanted: Callable[[Job], bool]) -> tuple[Job, Result]:
        """The next job accepted by `wanted` and its result; earlier unwanted jobs are dropped.

        Jobs are dropped when the SDK skips a partition (e.g. a stream map filters an agent).
        A job's exception is raised here, in the consumer's thread.
        """
        while True:
            self._top_up()
            if not self._queue:
                msg = "no prefetched job left for this partition"
                raise LookupError(msg)
            job, future = self._queue.popleft()
            if wanted(job):
                result = future.result()
                self._top_up()
                return job, result
            future.cancel()

    def close(self) -> None:
        """Cancel what has not started and let running fetches finish in the background."""
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


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
