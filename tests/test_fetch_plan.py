"""Unit tests of the fetch plan: pages in order, in parallel, bounded, re-read when they shift.

The page source here is an in-memory function (the plan's one decision is scheduling); the
same plan against the real HTTP fake is tested in test_dense_windows.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t

import pytest

import tap_bolna.fetch_plan as fetch_plan_module
from tap_bolna.fetch_plan import (
    AgentFetches,
    CancelledFetchLogFilter,
    FetchCancelledError,
    FetchPlan,
    Page,
    WindowJob,
    raise_if_cancelled,
)
from tap_bolna.windows import AgentBookmark, AgentSync, Window

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PAGE_SIZE = 3
LOGGER = logging.getLogger("test-fetch-plan")
# The documented rules (module docstring of tap_bolna.fetch_plan), written out rather than
# imported, so that a changed constant fails these tests instead of moving them.
PAGES_AHEAD_PER_WORKER = 4
MAX_READS_PER_WINDOW = 3


def key(window: WindowJob) -> tuple[str, Window]:
    return window.agent_id, window.window


def job(agent: str, day: int) -> WindowJob:
    window = Window(T0 + dt.timedelta(days=day), T0 + dt.timedelta(days=day + 1))
    return WindowJob(agent, {"agent_id": agent}, window)


class Source:
    """Windows of numbered records served a page at a time, counting what is in flight."""

    def __init__(self, sizes: list[tuple[WindowJob, int]], delay: float = 0.0) -> None:
        self.rows = {key(j): [{"id": f"{j.agent_id}-{j.window.start.day}-{n}"} for n in range(size)]
                     for j, size in sizes}  # fmt: skip
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.fetched: list[tuple[tuple[str, Window], int]] = []
        self.before: dict[tuple[tuple[str, Window], int], t.Callable[[], None]] = {}
        self.fail: set[tuple[tuple[str, Window], int]] = set()

    def __call__(self, window: WindowJob, page: int) -> Page:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.fetched.append((key(window), page))
            action = self.before.pop((key(window), page), None)
        try:
            if action:
                action()
            time.sleep(self.delay)
            if (key(window), page) in self.fail:
                msg = f"page {page} failed"
                raise ValueError(msg)
            rows = self.rows[key(window)]
            chunk = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            return Page(list(chunk), len(rows), page * PAGE_SIZE < len(rows))
        finally:
            with self.lock:
                self.in_flight -= 1


def read_all(plan: FetchPlan, jobs: list[WindowJob]) -> list[tuple[str, list[str]]]:
    out = []
    for expected in jobs:
        read = plan.next_window(lambda j, expected=expected: j == expected)
        out.append((read.job.agent_id, [r["id"] for r in read.records()]))
    return out


def new_plan(jobs: list[WindowJob], source: Source, workers: int) -> FetchPlan:
    return FetchPlan(
        iter(jobs),
        source,
        workers=workers,
        page_size=PAGE_SIZE,
        record_key=lambda record: record["id"],
        logger=LOGGER,
    )


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_records_come_in_the_same_order_whatever_the_workers(workers: int) -> None:
    jobs = [job(agent, day) for agent in "ab" for day in range(4)]
    source = Source([(j, (7 * n) % 20) for n, j in enumerate(jobs)], delay=0.002)
    plan = new_plan(jobs, source, workers)
    try:
        result = read_all(plan, jobs)
    finally:
        plan.close()
    sequential = [(j.agent_id, [r["id"] for r in source.rows[key(j)]]) for j in jobs]
    assert result == sequential


def test_pages_of_one_window_are_fetched_in_parallel_and_bounded() -> None:
    dense = job("a", 0)
    source = Source([(dense, 30 * PAGE_SIZE)], delay=0.02)
    plan = new_plan([dense], source, workers=4)
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert len(ids) == 30 * PAGE_SIZE
    assert source.peak == 4, "one window's pages ran on every worker"
    assert read.pages == 30


def test_workers_run_ahead_at_most_the_budget_of_pages() -> None:
    dense = job("a", 0)
    source = Source([(dense, 100 * PAGE_SIZE)])
    plan = new_plan([dense], source, workers=2)
    try:
        read = plan.next_window(lambda _j: True)
        records = read.records()
        next(records)
        time.sleep(0.3)  # the consumer stalls: workers must stop after the budget
        ahead = len(source.fetched)
        assert ahead <= 2 * PAGES_AHEAD_PER_WORKER + 1
        assert len(list(records)) == 100 * PAGE_SIZE - 1
    finally:
        plan.close()


def test_one_worker_fetches_only_what_the_consumer_asks_for() -> None:
    jobs = [job("a", 0), job("a", 1)]
    source = Source([(j, 2 * PAGE_SIZE) for j in jobs])
    threads_before = set(threading.enumerate())
    plan = new_plan(jobs, source, workers=1)
    read = plan.next_window(lambda _j: True)
    records = read.records()
    next(records)
    assert source.fetched == [(key(jobs[0]), 1)]
    assert set(threading.enumerate()) <= threads_before, "one worker needs no thread"
    list(records)
    plan.close()


@pytest.mark.parametrize("workers", [1, 4])
def test_a_window_whose_pages_shift_is_read_again(workers: int) -> None:
    window = job("a", 0)
    source = Source([(window, 4 * PAGE_SIZE)])

    def insert_newest() -> None:  # a call listed late lands on page 1, already read
        source.rows[key(window)].insert(0, {"id": "late"})

    source.before[key(window), 3] = insert_newest
    plan = new_plan([window], source, workers)
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert read.reads == 2
    assert set(ids) == {r["id"] for r in source.rows[key(window)]}
    assert "late" in ids


def test_a_window_that_keeps_shifting_is_given_up_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = job("a", 0)
    source = Source([(window, 2 * PAGE_SIZE)])
    inserted = []

    def busy(w: WindowJob, page: int) -> Page:
        if page == 2:  # every read, a new call arrives between its pages
            inserted.append(f"new-{len(inserted)}")
            source.rows[key(window)].insert(0, {"id": inserted[-1]})
        return source(w, page)

    plan = new_plan([window], busy, workers=1)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    assert read.reads == MAX_READS_PER_WINDOW
    assert "kept appearing or vanishing" in caplog.text
    # Records of every read are handed on (the emit filter drops the repeats): none is lost.
    assert set(ids) >= {r["id"] for r in source.rows[key(window)]} - {inserted[-1]}


def test_unwanted_windows_are_skipped_and_errors_raise_in_the_consumer() -> None:
    jobs = [job("a", 0), job("b", 0), job("c", 0)]
    source = Source([(j, 2 * PAGE_SIZE) for j in jobs])
    source.fail.add((key(jobs[2]), 2))
    plan = new_plan(jobs, source, workers=3)
    try:
        read = plan.next_window(lambda j: j.agent_id == "b")
        assert [r["id"] for r in read.records()] == [r["id"] for r in source.rows[key(jobs[1])]]
        failing = plan.next_window(lambda _j: True)
        records = failing.records()
        assert len([next(records) for _ in range(PAGE_SIZE)]) == PAGE_SIZE  # page 1 arrives
        with pytest.raises(ValueError, match="page 2 failed"):
            next(records)
    finally:
        plan.close()


def test_after_a_failure_nothing_later_is_fetched() -> None:
    jobs = [job("a", day) for day in range(6)]
    source = Source([(j, PAGE_SIZE) for j in jobs], delay=0.01)
    source.fail.add((key(jobs[0]), 1))
    plan = new_plan(jobs, source, workers=2)
    try:
        read = plan.next_window(lambda _j: True)
        with pytest.raises(ValueError, match="page 1 failed"):
            list(read.records())
        fetched = len(source.fetched)
        time.sleep(0.2)
        assert len(source.fetched) == fetched
    finally:
        plan.close()


def test_after_a_failed_page_the_later_pages_of_its_window_are_not_fetched() -> None:
    # Page 1 tells the window's size, so pages 2 on are queued (up to the budget); page 2
    # fails at once while page 3 is slow: the pages queued after them are never sent, since
    # the consumer stops at page 2.
    window = job("a", 0)
    source = Source([(window, 20 * PAGE_SIZE)])
    source.fail.add((key(window), 2))
    source.before[key(window), 3] = lambda: time.sleep(0.05)
    plan = new_plan([window], source, workers=2)
    try:
        read = plan.next_window(lambda _j: True)
        with pytest.raises(ValueError, match="page 2 failed"):
            list(read.records())
        time.sleep(0.2)
        assert {page for _window, page in source.fetched} <= {1, 2, 3}
    finally:
        plan.close()


def test_closing_the_plan_stops_the_workers() -> None:
    jobs = [job("a", day) for day in range(20)]
    source = Source([(j, 10 * PAGE_SIZE) for j in jobs], delay=0.01)
    plan = new_plan(jobs, source, workers=3)
    read = plan.next_window(lambda _j: True)
    next(read.records())
    plan.close()
    time.sleep(0.1)
    fetched = len(source.fetched)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("bolna-fetch") and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, "fetch workers still running after close()"
        time.sleep(0.05)
    assert len(source.fetched) == fetched, "a closed plan sent more requests"


@pytest.mark.parametrize("workers", [1, 3])
def test_has_more_on_an_empty_page_past_the_end_stops_the_window(workers: int) -> None:
    window = job("a", 0)
    source = Source([(window, 2 * PAGE_SIZE)])

    def always_more(w: WindowJob, page: int) -> Page:
        answer = source(w, page)
        return Page(answer.records, answer.total, has_more=True)

    plan = new_plan([window], always_more, workers)  # type: ignore[arg-type]
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert sorted(set(ids)) == sorted(r["id"] for r in source.rows[key(window)])
    assert read.pages <= MAX_READS_PER_WINDOW * 3, "a lying has_more must not page forever"


# A worker of a closed plan: it sends nothing more, and says nothing more.


def in_a_worker_thread(cancelled: threading.Event | None, action: t.Callable[[], object]):
    """Run `action` in a thread that works (or not, with None) for a plan with this flag."""
    outcome: list[object] = []

    def work() -> None:
        if cancelled is not None:
            fetch_plan_module._worker.cancelled = cancelled
        try:
            outcome.append(action())
        except FetchCancelledError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return outcome[0]


def log_record() -> logging.LogRecord:
    return logging.LogRecord("tap_bolna", logging.WARNING, __file__, 1, "retrying", (), None)


def test_a_worker_of_a_closed_plan_stops_before_its_next_request() -> None:
    flag = threading.Event()
    assert in_a_worker_thread(None, raise_if_cancelled) is None, "not a worker: goes on"
    assert in_a_worker_thread(flag, raise_if_cancelled) is None, "plan still open: goes on"
    flag.set()
    assert isinstance(in_a_worker_thread(flag, raise_if_cancelled), FetchCancelledError)


def test_the_log_lines_of_a_closed_plans_workers_are_dropped() -> None:
    keep = CancelledFetchLogFilter().filter
    flag = threading.Event()
    assert keep(log_record()) is True, "the consumer's own lines"
    assert in_a_worker_thread(None, lambda: keep(log_record())) is True
    assert in_a_worker_thread(flag, lambda: keep(log_record())) is True
    flag.set()
    assert in_a_worker_thread(flag, lambda: keep(log_record())) is False


# AgentFetches: every announced agent planned once, in order, its windows read in order.


class Agents:
    """plan_agent and new_plan for AgentFetches, counting what they are asked for."""

    def __init__(self, days: dict[str, list[int]], workers: int = 1) -> None:
        self.days = days
        self.workers = workers
        self.planned: list[str] = []
        self.fail_once: set[str] = set()
        self.plans: list[FetchPlan] = []
        self.source = Source([(job(a, d), PAGE_SIZE + 1) for a, ds in days.items() for d in ds])

    def plan_agent(self, context: dict) -> AgentSync:
        agent_id = context["agent_id"]
        self.planned.append(agent_id)
        if agent_id in self.fail_once:
            self.fail_once.discard(agent_id)
            msg = f"cannot plan {agent_id}"
            raise RuntimeError(msg)
        windows = [job(agent_id, day).window for day in self.days[agent_id]]
        return AgentSync(context, AgentBookmark(), windows, None, windows[-1].end)

    def new_plan(self, jobs: t.Iterator[WindowJob]) -> FetchPlan:
        plan = new_plan(list(jobs), self.source, self.workers)  # type: ignore[arg-type]
        self.plans.append(plan)
        return plan


def sync(fetches: AgentFetches, agent_id: str) -> list[tuple[Window, list[str]]]:
    agent = fetches.agent({"agent_id": agent_id})
    return [(window, [r["id"] for r in read.records()]) for window, read in fetches.reads(agent)]


def ids(agent_id: str, day: int) -> list[str]:
    return [f"{agent_id}-{day + 1}-{n}" for n in range(PAGE_SIZE + 1)]


@pytest.mark.parametrize("workers", [1, 3])
def test_announced_agents_share_one_plan_and_are_planned_once_each(workers: int) -> None:
    agents = Agents({"a": [0, 1], "b": [2]}, workers)
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}, {"agent_id": "b"}])
    try:
        assert sync(fetches, "a") == [
            (job("a", 0).window, ids("a", 0)),
            (job("a", 1).window, ids("a", 1)),
        ]
        assert sync(fetches, "b") == [(job("b", 2).window, ids("b", 2))]
        assert agents.planned == ["a", "b"]
        assert len(agents.plans) == 1
        assert not agents.plans[0]._cancelled.is_set(), "the shared plan lives on"
    finally:
        fetches.close()
    assert agents.plans[0]._cancelled.is_set()
    fetches.close()  # twice: nothing left to close


def test_an_agent_is_planned_again_by_the_next_sync() -> None:
    agents = Agents({"a": [0]})
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}])
    first = fetches.agent({"agent_id": "a"})
    assert fetches.agent({"agent_id": "a"}) is first
    assert sync(fetches, "a") == [(job("a", 0).window, ids("a", 0))]
    shared = agents.plans[0]
    fetches.announce([{"agent_id": "a"}])
    assert shared._cancelled.is_set(), "a new sync closes the last one's plan"
    assert sync(fetches, "a") == [(job("a", 0).window, ids("a", 0))]
    assert agents.planned == ["a", "a"]
    assert len(agents.plans) == 2
    fetches.close()


def test_an_agent_never_announced_gets_a_plan_of_its_own_closed_after_it() -> None:
    agents = Agents({"a": [0], "x": [3, 4]})
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}])
    assert sync(fetches, "x") == [
        (job("x", 3).window, ids("x", 3)),
        (job("x", 4).window, ids("x", 4)),
    ]
    assert len(agents.plans) == 1
    assert agents.plans[0]._cancelled.is_set()
    assert sync(fetches, "a") == [(job("a", 0).window, ids("a", 0))]
    assert len(agents.plans) == 2
    assert not agents.plans[1]._cancelled.is_set()
    fetches.close()


def test_an_agent_that_cannot_be_planned_ahead_is_planned_again_when_its_turn_comes() -> None:
    agents = Agents({"a": [0], "b": [1], "c": [2]}, workers=3)
    agents.fail_once.add("b")
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}, {"agent_id": "b"}, {"agent_id": "c"}])
    try:
        assert sync(fetches, "a") == [(job("a", 0).window, ids("a", 0))]
        assert agents.planned == ["a", "b"], "planning ahead stopped at b"
        assert sync(fetches, "b") == [(job("b", 1).window, ids("b", 1))]
        assert sync(fetches, "c") == [(job("c", 2).window, ids("c", 2))]
        assert agents.planned == ["a", "b", "b", "c"]
        # b and c are read through plans of their own, closed when they are done.
        assert len(agents.plans) == 3
        assert [plan._cancelled.is_set() for plan in agents.plans[1:]] == [True, True]
    finally:
        fetches.close()
