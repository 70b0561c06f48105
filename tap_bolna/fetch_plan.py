"""The fetch plan of the executions stream: windows -> page jobs -> workers -> records in order.

The SDK syncs partitions one after another and pages one after another (meltano/sdk#2121),
so a sync waits on one round trip at a time. Here a window's first page gives `total`, its
other pages are then fetched concurrently, and the first pages of the next windows (of this
agent and the next ones) are fetched meanwhile, all by one pool of `max_workers` threads.
The consumer (the SDK's main thread) still receives every window's records page by page in
exactly the order a one-worker sync reads them, so records and STATE come out the same.

A window is read again when its pages did not fit together (`total` changed between pages,
more pages than `total` said, or a call on two pages): calls appeared or vanished while it
was paged, so one may have been skipped. Memory is bounded by a number of pages (workers x
`PAGES_AHEAD_PER_WORKER`), whatever the size of a window or of the history.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import queue
import threading
import typing as t
from dataclasses import dataclass, field

if t.TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_bolna.windows import AgentSync, Window

# Pages each worker may have fetched (or be fetching) ahead of the consumer.
PAGES_AHEAD_PER_WORKER = 4
# Reads of a window whose pages keep shifting, before its records are taken as they are.
MAX_READS_PER_WINDOW = 3
# The cancel flag of the plan a worker thread fetches for, for raise_if_cancelled().
_worker = threading.local()


class FetchCancelledError(Exception):
    """A fetch ahead was cancelled; raised instead of sending a request (never retried)."""


def raise_if_cancelled() -> None:
    """Stop a worker before its next request (or retry) once its plan was closed."""
    cancelled = getattr(_worker, "cancelled", None)
    if cancelled is not None and cancelled.is_set():
        raise FetchCancelledError


class CancelledFetchLogFilter(logging.Filter):
    """Drops log lines of workers whose plan was closed (their retries, their give-up).

    After a fatal error the workers' last words would come after the error line a person
    needs to read; nothing they say then matters.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        """Keep the line unless this thread works for a closed plan."""
        cancelled = getattr(_worker, "cancelled", None)
        return cancelled is None or not cancelled.is_set()


@dataclass(frozen=True)
class WindowJob:
    """One window of one agent."""

    agent_id: str
    context: Context
    window: Window


@dataclass
class Page:
    """One page of a window as the API answered it."""

    records: list[dict[str, t.Any]]
    total: int | None  # None when the API gave no usable total
    has_more: bool


FetchPage = t.Callable[[WindowJob, int], Page]


@dataclass(eq=False)
class _WindowState:
    """Scheduling state of one window between the workers and the consumer."""

    sequence: int
    job: WindowJob
    read: int = 0  # which read of the window the pages belong to (re-reads after shifts)
    needed_through: int = 1  # pages known to be needed in this read
    submitted_through: int = 0
    results: dict[tuple[int, int], Page | BaseException] = field(default_factory=dict)
    sized: bool = False  # this read's first page has told how many pages it has
    cancelled: bool = False


class WindowRead:
    """The records of one window, page by page in API order, read again if pages shifted."""

    def __init__(self, plan: FetchPlan, state: _WindowState) -> None:
        """Handed out by `FetchPlan.next_window`."""
        self.job = state.job
        self.pages = 0  # requests this window took, re-reads included
        self.reads = 0
        self._plan = plan
        self._state = state

    def records(self) -> Iterator[dict[str, t.Any]]:
        """Every record of the window; after a shift, the records of each further read too."""
        while True:
            self.reads += 1
            fitted = yield from self._read_once()
            if fitted or self.reads >= MAX_READS_PER_WINDOW:
                if not fitted:
                    self._plan.logger.warning(
                        "Agent %s: calls kept appearing or vanishing while %s..%s was paged "
                        "(%d reads); the next sync reads this range again.",
                        self.job.agent_id,
                        self.job.window.params()["from"],
                        self.job.window.params()["to"],
                        self.reads,
                    )
                self._plan.finish(self._state)
                return
            self._plan.logger.info(
                "Agent %s: calls appeared or vanished while %s..%s was paged; reading it again.",
                self.job.agent_id,
                self.job.window.params()["from"],
                self.job.window.params()["to"],
            )
            self._plan.restart(self._state)

    def _read_once(self) -> t.Generator[dict[str, t.Any], None, bool]:
        """Yield one read's records; return whether its pages fitted together."""
        read = self._state.read
        first = self._plan.take(self._state, read, 1)
        self.pages += 1
        total = first.total
        expected = None if total is None else max(1, math.ceil(total / self._plan.page_size))
        keys: set[Hashable] = set()
        fitted = self._plan.distinct(first.records, keys)
        received = len(first.records)
        yield from first.records
        page, last = 1, first
        while (expected is not None and page < expected) or last.has_more:
            page += 1
            last = self._plan.take(self._state, read, page)
            self.pages += 1
            fitted = self._plan.distinct(last.records, keys) and fitted and last.total == total
            received += len(last.records)
            yield from last.records
            if not last.records and (expected is None or page >= expected):
                break  # `has_more` on an empty page past the end: no more pages, whatever it says
        return fitted and (total is None or (received == total and page == expected))


class FetchPlan:
    """Fetches a lazy sequence of windows on `workers` threads; hands back pages in order.

    With one worker nothing runs ahead: each page is fetched when the consumer needs it.
    `fetch_page(job, page_number)` runs in a worker thread; the window sequence is planned
    lazily in the consumer's thread (planning reads SDK state, which is not thread-safe).
    """

    def __init__(  # noqa: PLR0913
        self,
        windows: Iterator[WindowJob],
        fetch_page: FetchPage,
        *,
        workers: int,
        page_size: int,
        record_key: Callable[[dict[str, t.Any]], Hashable],
        logger: logging.Logger,
    ) -> None:
        """Start the workers (none with one worker); nothing is fetched before the first window."""
        self.page_size = page_size
        self.logger = logger
        self._windows = windows
        self._fetch_page = fetch_page
        self._record_key = record_key
        self._budget = workers * PAGES_AHEAD_PER_WORKER if workers > 1 else 0
        self._condition = threading.Condition()
        self._ahead: collections.deque[_WindowState] = collections.deque()
        self._sequence = itertools.count()
        self._order = itertools.count()  # tie-breaker: the queue never compares window states
        self._exhausted = False
        self._outstanding = 0  # pages submitted and not yet consumed or dropped
        # The first page (window in order, page) whose fetch failed: the consumer stops
        # there, so nothing after it is worth a request (or its retries), in its window or
        # in later ones.
        self._failed_at: tuple[int, int] | None = None
        self._cancelled = threading.Event()
        self._tasks: queue.PriorityQueue[tuple[tuple[float, ...], int, t.Any]] = (
            queue.PriorityQueue()
        )
        # Daemon threads: after a fatal error the process exits without waiting for fetches
        # ahead (possibly asleep in a long Retry-After) whose pages nobody will read.
        self._workers = [
            threading.Thread(target=self._work, name=f"bolna-fetch-{n}", daemon=True)
            for n in range(workers if workers > 1 else 0)
        ]
        for worker in self._workers:
            worker.start()

    # The consumer side

    def next_window(self, wanted: Callable[[WindowJob], bool]) -> WindowRead:
        """The next window accepted by `wanted`.

        Earlier unwanted windows are dropped (the SDK skipped their partition, e.g. a stream
        map filtered the agent out). Call it again only once the last window is consumed.
        """
        while True:
            with self._condition:
                state = self._ahead[0] if self._ahead else None
            if state is None and not self._pull_window():
                msg = "no planned window left for this partition"
                raise LookupError(msg)
            if state is None:
                continue
            if wanted(state.job):
                self._top_up()
                return WindowRead(self, state)
            self.finish(state)

    def take(self, state: _WindowState, read: int, page: int) -> Page:
        """Page `page` of read `read` of a window: fetched ahead, or fetched now."""
        if not self._workers:
            return self._fetch_page(state.job, page)
        while True:
            with self._condition:
                result = state.results.pop((read, page), None)
                if result is not None:
                    self._outstanding -= 1
                    self._pump()
                    break
                if state.submitted_through < page:
                    # Needed now: submit it whatever the budget says, or nothing would run it.
                    state.needed_through = max(state.needed_through, page)
                    while state.submitted_through < page:
                        self._submit(state)
                can_plan = (
                    not self._exhausted
                    and len(self._ahead) <= self._budget
                    and self._outstanding < self._budget
                )
                if not can_plan:
                    self._condition.wait()
                    continue
            self._pull_window()  # the pool has room: plan one more window while waiting
        if isinstance(result, BaseException):
            raise result
        return result

    def distinct(self, records: list[dict[str, t.Any]], keys: set[Hashable]) -> bool:
        """Add the records' keys to `keys`; False if one was there already (a shifted page)."""
        fitted = True
        for record in records:
            key = self._record_key(record)
            if key in keys:
                fitted = False
            keys.add(key)
        return fitted

    def restart(self, state: _WindowState) -> None:
        """Read the window again from its first page (its pages shifted)."""
        with self._condition:
            self._drop_results(state)
            state.read += 1
            state.needed_through = 1
            state.submitted_through = 0
            state.sized = False
            self._pump()

    def finish(self, state: _WindowState) -> None:
        """The consumer is done with a window (or skips it): forget it, drop what is left."""
        with self._condition:
            state.cancelled = True
            if self._failed_at is not None and self._failed_at[0] == state.sequence:
                self._failed_at = None  # a skipped window failed: the rest is needed after all
            self._drop_results(state)
            if self._ahead and self._ahead[0] is state:
                self._ahead.popleft()
            self._pump()

    def close(self) -> None:
        """Stop every worker before its next request and drop everything fetched ahead."""
        self._cancelled.set()
        with self._condition:
            for state in self._ahead:
                state.cancelled = True
                state.results.clear()
            self._ahead.clear()
            self._exhausted = True
            self._condition.notify_all()
        for _ in self._workers:
            self._tasks.put(((math.inf,), next(self._order), None))  # each worker then ends

    # Planning, in the consumer thread

    def _pull_window(self) -> bool:
        """Plan one more window (in the consumer's thread); False when there are no more."""
        with self._condition:
            if self._exhausted:
                return False
        job = next(self._windows, None)  # may send requests (an agent's oldest call)
        with self._condition:
            if job is None or self._cancelled.is_set():
                self._exhausted = True
                return False
            self._ahead.append(_WindowState(next(self._sequence), job))
            self._pump()
            return True

    def _top_up(self) -> None:
        """Plan windows ahead until the pool has enough to work on."""
        while True:
            with self._condition:
                enough = self._exhausted or len(self._ahead) > self._budget
                idle = self._outstanding < self._budget
            if enough or not idle or not self._pull_window():
                return

    # Scheduling, under the lock

    def _pump(self) -> None:
        """Submit the earliest pages known to be needed, within the budget.

        Windows after the consumer's own leave it `workers` pages of room, so a dense window
        whose first page came back last still gets every worker; and behind a window whose
        size is not known yet, only first pages are fetched, to learn theirs.
        """
        sizes_known = True
        for position, state in enumerate(self._ahead):
            if self._failed_at is not None and state.sequence >= self._failed_at[0]:
                return  # the consumer stops at the failed page: nothing after it is needed
            budget = self._budget if position == 0 else self._budget - len(self._workers)
            wanted = state.needed_through if sizes_known else min(state.needed_through, 1)
            while self._outstanding < budget and state.submitted_through < wanted:
                self._submit(state)
            if self._outstanding >= self._budget:
                return
            sizes_known = sizes_known and state.sized

    def _submit(self, state: _WindowState) -> None:
        state.submitted_through += 1
        self._outstanding += 1
        key = (state.sequence, state.read, state.submitted_through)
        self._tasks.put((key, next(self._order), (state, state.read, state.submitted_through)))

    def _drop_results(self, state: _WindowState) -> None:
        self._outstanding -= len(state.results)
        state.results.clear()

    # The workers

    def _work(self) -> None:
        _worker.cancelled = self._cancelled
        while True:
            _key, _order, task = self._tasks.get()
            if task is None:
                return
            state, read, page = task
            with self._condition:
                stale = (
                    state.cancelled
                    or read != state.read
                    or (self._failed_at is not None and (state.sequence, page) > self._failed_at)
                )
                if stale:
                    self._outstanding -= 1
                    self._pump()
            if stale:
                continue
            result: Page | BaseException
            try:
                result = self._fetch_page(state.job, page)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                result = exc
            with self._condition:
                if state.cancelled or read != state.read:
                    self._outstanding -= 1
                elif isinstance(result, BaseException):
                    if self._failed_at is None or (state.sequence, page) < self._failed_at:
                        self._failed_at = (state.sequence, page)
                    state.results[read, page] = result
                else:
                    state.results[read, page] = result
                    self._learn(state, page, result)
                self._pump()
                self._condition.notify_all()

    def _learn(self, state: _WindowState, page: int, result: Page) -> None:
        """What a page says about the pages still needed in its read."""
        if page == 1 and result.total is not None:
            state.needed_through = max(
                state.needed_through, math.ceil(result.total / self.page_size)
            )
            state.sized = True
        elif not result.has_more:
            state.sized = True  # no total: the last page of a has_more chain tells the size
        if result.has_more:
            state.needed_through = max(state.needed_through, page + 1)


class AgentFetches:
    """The windows of every announced agent, planned lazily in sync order, read in order.

    The SDK syncs agents one after another; one shared `FetchPlan` plans the next agents'
    windows while the current agent's are still being read, so the pool always has work.
    Agents are planned once each (`plan_agent` reads state and may send requests: always
    in the consumer's thread). An agent the shared plan cannot serve (planning ahead failed
    before it, or it was never announced) gets a plan of its own.
    """

    def __init__(
        self,
        plan_agent: Callable[[Context], AgentSync],
        new_plan: Callable[[Iterator[WindowJob]], FetchPlan],
    ) -> None:
        """`plan_agent` plans one agent; `new_plan` makes a fetch plan over windows."""
        self._plan_agent = plan_agent
        self._new_plan = new_plan
        self._announced: list[Context] = []
        self._agents: dict[str, AgentSync] = {}
        self._planned_ahead: set[str] = set()
        self._planning_ahead_stopped = False
        self._shared: FetchPlan | None = None

    def announce(self, contexts: list[Context]) -> None:
        """A new sync starts: these agents come, in this order."""
        self.close()
        self._announced = list(contexts)
        self._agents.clear()
        self._planned_ahead.clear()
        self._planning_ahead_stopped = False

    def agent(self, context: Context) -> AgentSync:
        """The agent's plan, made once a sync."""
        agent_id = context["agent_id"]
        if agent_id not in self._agents:
            self._agents[agent_id] = self._plan_agent(context)
        return self._agents[agent_id]

    def reads(self, agent: AgentSync) -> Iterator[tuple[Window, WindowRead]]:
        """Each of the agent's windows with the read of its records, in order."""
        plan = self._plan_for(agent)
        try:
            for window in agent.windows:
                read = plan.next_window(lambda job: job.agent_id == agent.agent_id)
                if read.job.window != window:  # pragma: no cover - a bug, not the API
                    msg = f"planned {read.job.window} for {agent.agent_id}, expected {window}"
                    raise RuntimeError(msg)
                yield window, read
        finally:
            if plan is not self._shared:
                plan.close()
            self._agents.pop(agent.agent_id, None)

    def close(self) -> None:
        """Stop the shared plan's workers (an error, a signal, or the sync's end)."""
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def _plan_for(self, agent: AgentSync) -> FetchPlan:
        announced = any(c["agent_id"] == agent.agent_id for c in self._announced)
        if agent.agent_id not in self._planned_ahead and (
            self._planning_ahead_stopped or not announced
        ):
            return self._new_plan(
                iter([WindowJob(agent.agent_id, agent.context, w) for w in agent.windows])
            )
        if self._shared is None:
            self._shared = self._new_plan(self._window_jobs())
        return self._shared

    def _window_jobs(self) -> Iterator[WindowJob]:
        for context in self._announced:
            try:
                agent = self.agent(context)
            except Exception:  # noqa: BLE001
                # Planning ahead must not fail the agent being synced now: stop planning
                # ahead; the SDK reaches this agent later and the error surfaces there.
                self._planning_ahead_stopped = True
                return
            self._planned_ahead.add(agent.agent_id)
            for window in agent.windows:
                yield WindowJob(agent.agent_id, agent.context, window)
