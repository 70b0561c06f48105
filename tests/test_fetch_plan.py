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

from tap_bolna.fetch_plan import (
    MAX_READS_PER_WINDOW,
    PAGES_AHEAD_PER_WORKER,
    FetchPlan,
    Page,
    WindowJob,
)
from tap_bolna.windows import Window

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PAGE_SIZE = 3
LOGGER = logging.getLogger("test-fetch-plan")


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
