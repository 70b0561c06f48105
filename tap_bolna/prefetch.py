"""Bounded parallel fetching of windows, handed back in order, plus a shared request limiter.

The SDK syncs partitions one after another (meltano/sdk#2121), so an account with many
agents waits on one round trip at a time. Here a small thread pool fetches the pages of the
next windows ahead of time, across agents, while the main thread still emits records and
STATE in the same order as a sequential sync: the SDK's state handling stays single-threaded.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

Job = t.TypeVar("Job")
Item = t.TypeVar("Item")
_NO_MORE_JOBS = object()
# The cancel flag of the stream a worker thread is filling, for raise_if_cancelled().
_worker = threading.local()


class FetchCancelledError(Exception):
    """A fetch ahead was cancelled; raised instead of sending a request (never retried)."""


class CancelledFetchLogFilter(logging.Filter):
    """Drops log lines of a fetch ahead that was cancelled (its retries, its give-up).

    After a fatal error the workers' last words would come after the error line a person
    needs to read; nothing they say then matters.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        """Keep the line unless this thread fills a cancelled stream."""
        cancelled = getattr(_worker, "cancelled", None)
        return cancelled is None or not cancelled.is_set()


def raise_if_cancelled() -> None:
    """Stop a worker's fetch before its next request once its stream was cancelled."""
    cancelled = getattr(_worker, "cancelled", None)
    if cancelled is not None and cancelled.is_set():
        raise FetchCancelledError


class _FirstFailure:
    """The position of the earliest job (in consumer order) whose fetch failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._position: int | None = None

    def record(self, position: int) -> None:
        with self._lock:
            if self._position is None or position < self._position:
                self._position = position

    def precedes(self, position: int) -> bool:
        with self._lock:
            return self._position is not None and self._position < position


class ChunkStream(t.Generic[Item]):
    """Chunks of items handed from one worker thread to the consumer through a bounded buffer.

    The buffer bounds memory: a worker that runs ahead waits once `max_chunks` pages are
    waiting, however large its window is. A cancelled stream stops its worker.
    """

    def __init__(
        self,
        chunks: Iterable[list[Item]],
        *,
        position: int,
        failures: _FirstFailure,
        max_chunks: int,
    ) -> None:
        """A stream over `chunks` (a lazy iterable that the worker thread runs)."""
        self._chunks = chunks
        self._position = position
        self._failures = failures
        self._queue: queue.Queue[tuple[str, t.Any]] = queue.Queue(max_chunks)
        self._cancelled = threading.Event()

    def produce(self) -> None:
        """Run in a worker: put every chunk, then the end (or the error that stopped it)."""
        if self._cancelled.is_set():
            return
        _worker.cancelled = self._cancelled
        try:
            self._produce()
        finally:
            _worker.cancelled = None

    def _produce(self) -> None:
        if self._failures.precedes(self._position):
            # An earlier window failed and will end the sync: don't spend requests (and
            # their retries) on what comes after it. The consumer fetches it itself if needed.
            self._put(("skipped", None))
            return
        try:
            for chunk in self._chunks:
                if not self._put(("chunk", chunk)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._failures.record(self._position)
            self._put(("error", exc))
        else:
            self._put(("end", None))

    def _put(self, item: tuple[str, t.Any]) -> bool:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def __iter__(self) -> Iterator[Item]:
        """The items, in order; a worker's exception is raised here, in the consumer."""
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            if kind == "skipped":
                for chunk in self._chunks:  # rare: fetch it here, in the consumer's thread
                    yield from chunk
                return
            yield from value

    def cancel(self) -> None:
        """Stop the worker at its next chunk; nothing more will be read."""
        self._cancelled.set()


class OrderedPrefetcher(t.Generic[Job, Item]):
    """Fetches a lazy sequence of jobs on `max_workers` threads; hands them back in order.

    At most `lookahead` jobs are in flight, each buffering at most `max_chunks` chunks, so
    memory is bounded by a number of pages, whatever the size of a window or the history.
    """

    def __init__(
        self,
        jobs: Iterator[Job],
        fetch: Callable[[Job], Iterable[list[Item]]],
        *,
        max_workers: int,
        lookahead: int,
        max_chunks: int,
    ) -> None:
        """Start fetching the first `lookahead` jobs right away."""
        self._jobs = jobs
        self._fetch = fetch
        self._lookahead = lookahead
        self._max_chunks = max_chunks
        # Daemon threads: after a fatal error the process exits without waiting for fetches
        # ahead (possibly asleep in a long Retry-After) whose results nobody will read.
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"bolna-fetch-{n}", daemon=True)
            for n in range(max_workers)
        ]
        for worker in self._workers:
            worker.start()
        self._queue: collections.deque[tuple[Job, ChunkStream[Item]]] = collections.deque()
        self._current: ChunkStream[Item] | None = None
        self._failures = _FirstFailure()
        self._submitted = 0
        self._exhausted = False
        self._top_up()

    def _top_up(self) -> None:
        while not self._exhausted and len(self._queue) < self._lookahead:
            job = next(self._jobs, _NO_MORE_JOBS)
            if job is _NO_MORE_JOBS:
                self._exhausted = True
                return
            job = t.cast("Job", job)
            # fetch() only builds a lazy iterable here; the worker thread runs it.
            stream = ChunkStream(
                self._fetch(job),
                position=self._submitted,
                failures=self._failures,
                max_chunks=self._max_chunks,
            )
            self._submitted += 1
            self._tasks.put(stream.produce)
            self._queue.append((job, stream))

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()

    def next_result(self, wanted: Callable[[Job], bool]) -> tuple[Job, ChunkStream[Item]]:
        """The next job accepted by `wanted` and the stream of its items.

        Earlier unwanted jobs are dropped (the SDK skipped their partition, e.g. a stream
        map filtered the agent out). Call it again only once the last stream is consumed.
        """
        while True:
            self._top_up()
            if not self._queue:
                msg = "no prefetched job left for this partition"
                raise LookupError(msg)
            job, stream = self._queue.popleft()
            if wanted(job):
                self._current = stream
                self._top_up()
                return job, stream
            stream.cancel()

    def close(self) -> None:
        """Stop every worker at its next chunk and drop what was fetched ahead."""
        streams = [stream for _, stream in self._queue]
        if self._current is not None:
            streams.append(self._current)
        for stream in streams:
            stream.cancel()
        self._queue.clear()
        for _ in self._workers:
            self._tasks.put(None)  # each worker ends after its current task


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
