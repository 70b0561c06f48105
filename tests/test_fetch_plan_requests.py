"""Which requests the fetch plan sends, counted page by page against figures worked out by hand.

test_fetch_plan.py checks that records come out right; this checks what it costs: no page
requested twice or past a window's end, the run-ahead stopping exactly at its bound, and what
the plan says (log lines, errors, its threads) word for word. The figures come from the
documented rules (module docstring of tap_bolna.fetch_plan, README "Performance"), not from the
module's constants: each worker holds at most 4 pages ahead, so 2 workers hold 8; the windows
after the one being read leave it one page per worker; a window is read at most 3 times.
Page size 3, as in test_fetch_plan.py.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
import typing as t

import pendulum
import pytest

from tap_bolna.fetch_plan import (
    AgentFetches,
    FetchCancelledError,
    FetchPlan,
    Page,
    WindowJob,
    raise_if_cancelled,
)
from tap_bolna.windows import parse_timestamp
from tests.test_fetch_plan import (
    LOGGER,
    PAGE_SIZE,
    Agents,
    Source,
    job,
    key,
    new_plan,
    read_all,
    sync,
)
from tests.test_fetch_plan import ids as ids_of

# Waits below only ever end early: a correct plan reaches the figure and the test goes on at
# once; the deadline is how long a broken one gets before the test says what it saw.
DEADLINE = 5.0
# After the figure is reached: how long a plan that fetches too much gets to show it.
SETTLE = 0.3


def wait_until(condition: t.Callable[[], bool], seconds: float = DEADLINE) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def pages_of(source: Source, window: WindowJob) -> list[int]:
    with source.lock:
        return sorted(page for fetched, page in source.fetched if fetched == key(window))


def workers_gone(before: set[threading.Thread]) -> bool:
    return wait_until(lambda: not [w for w in threading.enumerate() if w not in before])


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_every_needed_page_is_requested_once_and_no_other(workers: int) -> None:
    sizes = [0, 1, 3, 4, 9, 10, 31]  # records per window
    pages = [1, 1, 1, 2, 3, 4, 11]  # pages of 3 they take: an empty window still asks once
    jobs = [job("a", day) for day in range(len(sizes))]
    source = Source(list(zip(jobs, sizes, strict=True)), delay=0.001)
    threads_before = set(threading.enumerate())
    plan = new_plan(jobs, source, workers)
    reads = []
    try:
        for expected in jobs:
            read = plan.next_window(lambda j, expected=expected: j == expected)
            assert len(list(read.records())) == sizes[len(reads)]
            reads.append(read)
    finally:
        plan.close()
    assert workers_gone(threads_before)
    wanted = collections.Counter(
        (key(j), page) for j, n in zip(jobs, pages, strict=True) for page in range(1, n + 1)
    )
    assert collections.Counter(source.fetched) == wanted
    assert [read.pages for read in reads] == pages
    assert [read.reads for read in reads] == [1] * len(jobs)


def test_once_the_first_page_tells_the_size_the_other_pages_are_requested_together() -> None:
    window = job("a", 0)
    source = Source([(window, 4 * PAGE_SIZE)])
    third_asked = threading.Event()
    page_two_saw_page_three = []
    source.before[key(window), 3] = third_asked.set
    source.before[key(window), 2] = lambda: page_two_saw_page_three.append(third_asked.wait(2))
    plan = new_plan([window], source, workers=2)
    try:
        read = plan.next_window(lambda _j: True)
        assert len(list(read.records())) == 4 * PAGE_SIZE
    finally:
        plan.close()
    assert page_two_saw_page_three == [True], "page 3 waited for page 2: one round trip each"


def test_two_workers_run_exactly_eight_pages_ahead_and_use_both() -> None:
    dense = job("a", 0)
    source = Source([(dense, 100 * PAGE_SIZE)], delay=0.002)
    plan = new_plan([dense], source, workers=2)
    try:
        read = plan.next_window(lambda _j: True)
        records = read.records()
        next(records)  # page 1 is consumed; then the consumer stalls
        assert wait_until(lambda: len(source.fetched) >= 9), source.fetched
        time.sleep(SETTLE)
        assert pages_of(source, dense) == list(range(1, 10)), "page 1 and 8 pages ahead"
        assert len(list(records)) == 100 * PAGE_SIZE - 1
    finally:
        plan.close()
    assert source.peak == 2, "both workers fetched"
    assert pages_of(source, dense) == list(range(1, 101))


def test_later_windows_leave_the_window_being_read_a_page_per_worker() -> None:
    # Two workers: 8 pages ahead in all. While the first page of the window being read is
    # slow, the first pages of the next windows may take 8 - 2 = 6 pages with it: 5 of them.
    # When it comes back (10 pages), it gets the room the 5 held pages leave: 8 - 5 = 3 more.
    first = job("a", 0)
    later = [job("a", day) for day in range(1, 10)]
    source = Source([(first, 10 * PAGE_SIZE)] + [(j, PAGE_SIZE) for j in later])
    seen_while_slow = []

    def slow_first_page() -> None:
        wait_until(lambda: sum(pages_of(source, j) == [1] for j in later) >= 5)
        time.sleep(SETTLE)
        seen_while_slow.append([j.window.start.day for j in later if pages_of(source, j)])

    source.before[key(first), 1] = slow_first_page
    plan = new_plan([first, *later], source, workers=2)
    try:
        read = plan.next_window(lambda j: j == first)
        records = read.records()
        next(records)
        assert seen_while_slow == [[2, 3, 4, 5, 6]], "first pages of the next 5 windows only"
        assert wait_until(lambda: len(pages_of(source, first)) >= 4)
        time.sleep(SETTLE)
        assert pages_of(source, first) == [1, 2, 3, 4]
        assert len(list(records)) == 10 * PAGE_SIZE - 1
        rest = [("a", [r["id"] for r in source.rows[key(j)]]) for j in later]
        assert read_all(plan, later) == rest
    finally:
        plan.close()


def test_behind_a_window_of_unknown_size_only_first_pages_are_requested() -> None:
    first, second = job("a", 0), job("a", 1)
    source = Source([(first, 2 * PAGE_SIZE), (second, 3 * PAGE_SIZE)])
    seen_while_slow = []

    def slow_first_page() -> None:
        wait_until(lambda: pages_of(source, second) == [1])
        time.sleep(SETTLE)
        seen_while_slow.append(pages_of(source, second))

    # Once its first page has told its size (2 pages), the next window's other pages are
    # worth fetching: they are requested while its own page 2 is still on the way.
    third_of_second = threading.Event()
    page_two_saw_them = []
    source.before[key(second), 3] = third_of_second.set
    source.before[key(first), 2] = lambda: page_two_saw_them.append(third_of_second.wait(2))
    source.before[key(first), 1] = slow_first_page
    plan = new_plan([first, second], source, workers=2)
    try:
        read = plan.next_window(lambda j: j == first)
        assert len(list(read.records())) == 2 * PAGE_SIZE
        assert seen_while_slow == [[1]], "its size unknown, nothing but first pages behind it"
        assert page_two_saw_them == [True]
        assert pages_of(source, second) == [1, 2, 3]
    finally:
        plan.close()


def counted(jobs: list[WindowJob], pulled: list[WindowJob]) -> t.Iterator[WindowJob]:
    for j in jobs:
        pulled.append(j)  # in production: planning an agent, which may send a request
        yield j


def in_time(action: t.Callable[[], object]) -> object:
    """Run `action` in a thread; fail (instead of hanging) if it has not ended by DEADLINE."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert outcome, "the consumer is still waiting for a page"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_starting_a_window_plans_the_next_ones_until_more_than_eight_wait() -> None:
    # 2 workers hold 8 pages ahead; windows are planned ahead until more than 8 are waiting.
    jobs = [job("a", day) for day in range(20)]
    source = Source([(j, PAGE_SIZE) for j in jobs])
    pulled: list[WindowJob] = []
    plan = FetchPlan(
        counted(jobs, pulled), source, workers=2, page_size=PAGE_SIZE,
        record_key=lambda record: record["id"], logger=LOGGER,
    )  # fmt: skip
    try:
        plan.next_window(lambda j: j == jobs[0])
        assert pulled == jobs[:9]
    finally:
        plan.close()


def test_a_skipped_windows_queued_pages_are_never_sent_and_its_room_goes_on() -> None:
    # 2 workers. a-1 (1 page), then b-2 (10 pages, the stream map drops agent b), then a-3
    # (20 pages). b-2's pages 2 and 3 hang on both workers while more of its pages queue up;
    # it is skipped, then the workers are let go: b-2's queued pages are dropped unsent, and
    # a-3 gets the whole run-ahead (its page 1 and 8 more).
    first, skipped, last = job("a", 0), job("b", 1), job("a", 2)
    source = Source([(first, PAGE_SIZE), (skipped, 10 * PAGE_SIZE), (last, 20 * PAGE_SIZE)])
    gate = threading.Event()
    for page in (2, 3):
        source.before[key(skipped), page] = lambda: gate.wait(DEADLINE)
    plan = new_plan([first, skipped, last], source, workers=2)
    try:
        read = plan.next_window(lambda j: j == first)
        assert len(list(read.records())) == PAGE_SIZE
        assert wait_until(lambda: pages_of(source, skipped) == [1, 2, 3])
        read = plan.next_window(lambda j: j.agent_id == "a")
        assert read.job == last
        gate.set()
        records = read.records()
        in_time(lambda: next(records))
        assert wait_until(lambda: len(pages_of(source, last)) >= 9), pages_of(source, last)
        time.sleep(SETTLE)
        assert pages_of(source, last) == list(range(1, 10))
        assert pages_of(source, skipped) == [1, 2, 3]
        assert in_time(lambda: len(list(records))) == 20 * PAGE_SIZE - 1
    finally:
        gate.set()
        plan.close()


def test_a_skipped_window_whose_page_failed_does_not_stop_the_windows_after_it() -> None:
    # b-2's page 2 fails while fetched ahead; a-3's page 1 comes back after that, so its
    # page 2 waits behind the failure. b-2 is then skipped: a-3 is needed after all.
    # (Reverted, finish() leaving the failure in place, the consumer waits for ever.)
    first, skipped, last = job("a", 0), job("b", 1), job("a", 2)
    source = Source([(first, PAGE_SIZE), (skipped, 2 * PAGE_SIZE), (last, 2 * PAGE_SIZE)])
    source.fail.add((key(skipped), 2))
    plan = new_plan([first, skipped, last], source, workers=2)
    # a-3's page 1 is sent before b-2's page 2 fails (or it would rightly never be sent),
    # and answers after the failure is recorded.
    source.before[key(skipped), 2] = lambda: wait_until(lambda: pages_of(source, last) == [1])
    source.before[key(last), 1] = lambda: wait_until(lambda: plan._failed_at is not None)
    try:
        read = plan.next_window(lambda j: j == first)
        assert len(list(read.records())) == PAGE_SIZE
        assert wait_until(
            lambda: (
                pages_of(source, skipped) == [1, 2]
                and pages_of(source, last) == [1]
                and source.in_flight == 0
            )
        ), (pages_of(source, skipped), pages_of(source, last), source.in_flight, plan._failed_at)
        read = plan.next_window(lambda j: j.agent_id == "a")
        ids = in_time(lambda: [r["id"] for r in read.records()])
        assert ids == [r["id"] for r in source.rows[key(last)]]
    finally:
        plan.close()


def test_a_fetch_worker_answers_to_its_own_plans_cancel_flag() -> None:
    # What client.guarded relies on: in a worker, raise_if_cancelled() stops the request
    # once the worker's plan is closed.
    window = job("a", 0)
    source = Source([(window, PAGE_SIZE)])
    stopped = []
    plans: list[FetchPlan] = []

    def closing(w: WindowJob, page: int) -> Page:
        plans[0].close()
        try:
            raise_if_cancelled()
        except FetchCancelledError:
            stopped.append(page)
        return source(w, page)

    plans.append(new_plan([window], closing, workers=2))  # type: ignore[arg-type]
    plans[0].next_window(lambda _j: True)
    assert wait_until(lambda: stopped == [1])


def test_one_worker_plans_no_window_before_it_is_needed() -> None:
    jobs = [job("a", day) for day in range(5)]
    source = Source([(j, PAGE_SIZE) for j in jobs])
    pulled: list[WindowJob] = []
    plan = FetchPlan(
        counted(jobs, pulled), source, workers=1, page_size=PAGE_SIZE,
        record_key=lambda record: record["id"], logger=LOGGER,
    )  # fmt: skip
    for n, expected in enumerate(jobs, start=1):
        read = plan.next_window(lambda j, expected=expected: j == expected)
        assert len(pulled) == n
        list(read.records())
    plan.close()


def test_a_plan_with_no_window_left_says_so_every_time_it_is_asked() -> None:
    window = job("a", 0)
    plan = new_plan([window], Source([(window, 1)]), workers=2)
    try:
        list(plan.next_window(lambda _j: True).records())
        for _ in range(2):
            with pytest.raises(LookupError) as raised:
                plan.next_window(lambda _j: True)
            assert str(raised.value) == "no planned window left for this partition"
    finally:
        plan.close()


def test_the_fetch_workers_are_named_daemon_threads() -> None:
    # Named, so a thread dump or py-spy shows what they are; daemon, so that after a fatal
    # error the process exits without waiting for a fetch ahead asleep in a long back-off.
    threads_before = set(threading.enumerate())
    plan = new_plan([job("a", 0)], Source([(job("a", 0), 1)]), workers=3)
    try:
        started = [w for w in threading.enumerate() if w not in threads_before]
        names = sorted(w.name for w in started)
        assert names == ["bolna-fetch-0", "bolna-fetch-1", "bolna-fetch-2"]
        assert all(w.daemon for w in started)
    finally:
        plan.close()


@pytest.mark.parametrize("workers", [1, 3])
def test_a_window_without_total_is_paged_by_has_more_and_read_once(workers: int) -> None:
    # An answer with no usable total: a full page says has_more (the last full page too),
    # so the window ends on an empty page. 6 records: pages 1, 2 and an empty page 3.
    window = job("a", 0)
    source = Source([(window, 2 * PAGE_SIZE)])

    def without_total(w: WindowJob, page: int) -> Page:
        answer = source(w, page)
        return Page(answer.records, None, has_more=len(answer.records) == PAGE_SIZE)

    plan = new_plan([window], without_total, workers)  # type: ignore[arg-type]
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert ids == [r["id"] for r in source.rows[key(window)]]
    assert (read.reads, read.pages) == (1, 3)
    assert pages_of(source, window) == [1, 2, 3]


@pytest.mark.parametrize("workers", [1, 3])
def test_pages_are_read_to_the_total_when_has_more_says_no_too_early(workers: int) -> None:
    window = job("a", 0)
    source = Source([(window, 3 * PAGE_SIZE)])

    def never_more(w: WindowJob, page: int) -> Page:
        answer = source(w, page)
        return Page(answer.records, answer.total, has_more=False)

    plan = new_plan([window], never_more, workers)  # type: ignore[arg-type]
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert ids == [r["id"] for r in source.rows[key(window)]]
    assert (read.reads, read.pages) == (1, 3)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_lying_has_more_costs_one_empty_page_per_read_and_three_reads(workers: int) -> None:
    # 2 pages, has_more always true: each read asks pages 1, 2 and an empty page 3, which
    # does not fit the total, so the window is read 3 times: 9 pages, records every time.
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
    assert (read.reads, read.pages) == (3, 9)
    assert ids == [r["id"] for r in source.rows[key(window)]] * 3


@pytest.mark.parametrize("workers", [1, 3])
def test_a_call_on_two_pages_with_an_unchanged_total_is_still_a_shift(workers: int) -> None:
    # Between pages 1 and 2 a call arrives (it lands on page 1, already read) and another
    # vanishes: the total is the same, but page 2 starts with page 1's last call. Only a
    # second read sees the new call.
    window = job("a", 0)
    source = Source([(window, 3 * PAGE_SIZE)])

    def arrive_and_vanish() -> None:
        rows = source.rows[key(window)]
        rows.insert(0, {"id": "late"})
        rows.pop()

    source.before[key(window), 2] = arrive_and_vanish
    plan = new_plan([window], source, workers)
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert read.reads == 2
    assert "late" in ids


@pytest.mark.parametrize("workers", [1, 3])
def test_a_window_that_shrinks_to_one_page_is_read_again_from_one_page(workers: int) -> None:
    # 4 calls (2 pages); 2 vanish before page 2, which comes back empty with total 2: read
    # again, and page 1 (total 2) is all the second read asks for.
    window = job("a", 0)
    source = Source([(window, 4)])

    def vanish_two() -> None:
        del source.rows[key(window)][:2]

    source.before[key(window), 2] = vanish_two
    plan = new_plan([window], source, workers)
    try:
        read = plan.next_window(lambda _j: True)
        ids = [r["id"] for r in read.records()]
    finally:
        plan.close()
    assert (read.reads, read.pages) == (2, 3)
    assert sorted(page for _w, page in source.fetched) == [1, 1, 2]
    assert ids[-2:] == [r["id"] for r in source.rows[key(window)]]


def test_what_the_plan_logs_when_a_window_shifts_and_when_it_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = job("agent-7", 0)  # 2026-01-01 to 2026-01-02
    source = Source([(window, 2 * PAGE_SIZE)])

    def busy(w: WindowJob, page: int) -> Page:
        if page == 2:  # every read, a new call arrives between its pages
            source.rows[key(window)].insert(0, {"id": f"new-{time.monotonic_ns()}"})
        return source(w, page)

    plan = new_plan([window], busy, workers=1)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        list(plan.next_window(lambda _j: True).records())
    edges = "2026-01-01T00:00:00.000Z..2026-01-02T00:00:00.000Z"
    again = f"Agent agent-7: calls appeared or vanished while {edges} was paged; reading it again."
    given_up = (
        f"Agent agent-7: calls kept appearing or vanishing while {edges} was paged (3 reads); "
        "the next sync reads this range again."
    )
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER.name]
    assert said == [("INFO", again), ("INFO", again), ("WARNING", given_up)]


def test_a_naive_timestamp_in_a_form_only_pendulum_reads_is_utc_in_any_local_zone() -> None:
    # "2026-001T10:00" (an ordinal date) is not read by datetime.fromisoformat, so pendulum
    # reads it; on a machine in India a naive time must not become 04:30 UTC.
    pendulum.set_local_timezone(pendulum.timezone("Asia/Kolkata"))
    try:
        ten = dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
        assert parse_timestamp("2026-001T10:00") == ten
        assert parse_timestamp("2026-001T10:00+05:30") == dt.datetime(
            2026, 1, 1, 4, 30, tzinfo=dt.timezone.utc
        )
    finally:
        pendulum.set_local_timezone()  # back to the machine's own


# AgentFetches: what reaches the page fetches, and who is planned how often.


def test_every_window_job_carries_its_agents_context() -> None:
    # fetch_page builds the request from the job's context (the agent's URL and its account).
    agents = Agents({"a": [0], "x": [1]}, workers=2)
    contexts = []
    source = agents.source

    def checking(w: WindowJob, page: int) -> Page:
        contexts.append((w.agent_id, w.context))
        return source(w, page)

    agents.source = checking  # type: ignore[assignment]
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}])
    try:
        sync(fetches, "a")
        sync(fetches, "x")  # never announced: a plan of its own
    finally:
        fetches.close()
    assert sorted(set(map(repr, contexts))) == [
        repr(("a", {"agent_id": "a"})),
        repr(("x", {"agent_id": "x"})),
    ]


def test_agents_planned_ahead_before_planning_stopped_are_not_planned_again() -> None:
    # With 3 workers the shared plan plans a, b and then fails on c while a is synced: b's
    # windows are in the shared plan already; only c is planned again at its turn.
    agents = Agents({"a": [0], "b": [1], "c": [2]}, workers=3)
    agents.fail_once.add("c")
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    fetches.announce([{"agent_id": "a"}, {"agent_id": "b"}, {"agent_id": "c"}])
    try:
        assert sync(fetches, "a") == [(job("a", 0).window, ids_of("a", 0))]
        assert agents.planned == ["a", "b", "c"]
        assert sync(fetches, "b") == [(job("b", 1).window, ids_of("b", 1))]
        assert sync(fetches, "c") == [(job("c", 2).window, ids_of("c", 2))]
        assert agents.planned == ["a", "b", "c", "c"]
        assert len(agents.plans) == 2, "the shared plan, and c's own"
    finally:
        fetches.close()


def test_an_agent_synced_before_any_announcement_gets_a_plan_of_its_own() -> None:
    agents = Agents({"a": [0]})
    fetches = AgentFetches(agents.plan_agent, agents.new_plan)
    assert sync(fetches, "a") == [(job("a", 0).window, ids_of("a", 0))]
    assert len(agents.plans) == 1
    assert agents.plans[0]._cancelled.is_set(), "closed after the agent"


def test_while_a_long_window_is_read_one_more_window_is_planned_once_there_is_room() -> None:
    # 2 workers: 8 pages ahead. Starting a-1 plans windows a-1..a-9 (more than 8 waiting).
    # a-2 (20 pages) then fills the budget, so starting it plans nothing; as its last pages
    # drain, the consumer, waiting for a page, plans a-10, and no more (9 windows wait again).
    jobs = [job("a", day) for day in range(21)]
    sizes = [PAGE_SIZE, 20 * PAGE_SIZE] + [PAGE_SIZE] * 19
    source = Source(list(zip(jobs, sizes, strict=True)), delay=0.005)
    pulled: list[WindowJob] = []
    plan = FetchPlan(
        counted(jobs, pulled), source, workers=2, page_size=PAGE_SIZE,
        record_key=lambda record: record["id"], logger=LOGGER,
    )  # fmt: skip
    try:
        list(plan.next_window(lambda j: j == jobs[0]).records())
        assert pulled == jobs[:9]
        read = plan.next_window(lambda j: j == jobs[1])
        assert in_time(lambda: len(list(read.records()))) == 20 * PAGE_SIZE
        assert pulled == jobs[:10]
    finally:
        plan.close()


def test_a_window_without_total_is_fetched_ahead_and_sized_by_its_last_page() -> None:
    # a-1 has no total (a full page says has_more): 9 calls, pages 1-3 and an empty page 4.
    # a-2 (3 pages, with a total) waits behind it with its first page only, until a-1's last
    # page tells a-1's size; meanwhile a-1's chain runs ahead of a consumer that stalls.
    chain, behind = job("a", 0), job("a", 1)
    source = Source([(chain, 3 * PAGE_SIZE), (behind, 3 * PAGE_SIZE)])
    seen_while_chain_unsized = []

    def page_two_of_chain() -> None:
        wait_until(lambda: pages_of(source, behind) == [1])
        time.sleep(SETTLE)
        seen_while_chain_unsized.append(pages_of(source, behind))

    source.before[key(chain), 2] = page_two_of_chain

    def pages(w: WindowJob, page: int) -> Page:
        answer = source(w, page)
        if w == chain:
            return Page(answer.records, None, has_more=len(answer.records) == PAGE_SIZE)
        return answer

    plan = new_plan([chain, behind], pages, workers=2)  # type: ignore[arg-type]
    try:
        records = plan.next_window(lambda j: j == chain).records()
        next(records)  # the consumer stalls on page 1
        assert wait_until(lambda: pages_of(source, chain) == [1, 2, 3, 4]), pages_of(source, chain)
        assert seen_while_chain_unsized == [[1]]
        assert wait_until(lambda: pages_of(source, behind) == [1, 2, 3]), pages_of(source, behind)
        assert len(list(records)) == 3 * PAGE_SIZE - 1
    finally:
        plan.close()
