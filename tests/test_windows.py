"""Unit tests of the window and bookmark rules, and of the fetch-ahead pool and limiter."""

from __future__ import annotations

import datetime as dt
import threading
import time
import typing as t

import pytest

from tap_bolna.prefetch import OrderedPrefetcher, RequestRateLimiter
from tap_bolna.streams import as_integer, normalize_execution
from tap_bolna.windows import (
    AgentBookmark,
    EmitFilter,
    Window,
    format_timestamp,
    forward_windows,
    parse_timestamp,
    plan_sync,
    recheck_windows,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def call(call_id: str, created: dt.datetime, status: str = "completed") -> dict:
    return {"id": call_id, "created_at": format_timestamp(created), "status": status}


def test_forward_windows_share_edges_and_never_exceed_width() -> None:
    windows = list(forward_windows(T0, T0 + 17 * DAY, 7 * DAY))

    assert [(w.start, w.end) for w in windows] == [
        (T0, T0 + 7 * DAY),
        (T0 + 7 * DAY, T0 + 14 * DAY),
        (T0 + 14 * DAY, T0 + 17 * DAY),
    ]
    assert list(forward_windows(T0, T0, 7 * DAY)) == []


def test_window_params_use_the_api_timestamp_form() -> None:
    window = Window(T0 + dt.timedelta(microseconds=123456), T0 + DAY)
    assert window.params() == {"from": "2026-01-01T00:00:00.123Z", "to": "2026-01-02T00:00:00.000Z"}


def test_recheck_windows_cover_each_pending_call_with_few_narrow_windows() -> None:
    created = [T0 + 9 * DAY, T0, T0 + 2 * DAY, T0 + 20 * DAY]
    windows = list(recheck_windows(created, 7 * DAY))

    assert [(w.start, w.end - w.start) for w in windows] == [
        (T0, 2 * DAY + dt.timedelta(milliseconds=1)),
        (T0 + 9 * DAY, dt.timedelta(milliseconds=1)),
        (T0 + 20 * DAY, dt.timedelta(milliseconds=1)),
    ]
    assert all(w.recheck for w in windows)
    for moment in created:
        assert any(w.start <= moment <= w.end for w in windows)


def test_plan_rechecks_pending_then_walks_forward_and_expires_old_pending() -> None:
    bookmark = AgentBookmark(
        synced_through=T0 + 20 * DAY,
        pending={
            "recent": {"created_at": format_timestamp(T0 + 18 * DAY), "status": "queued"},
            "ancient": {"created_at": format_timestamp(T0), "status": "scheduled"},
        },
    )
    plan = plan_sync(
        bookmark, first_created_at=None, end=T0 + 30 * DAY, now=T0 + 30 * DAY,
        window_days=7, pending_lookback_days=14,
    )  # fmt: skip

    assert set(plan.expired_pending) == {"ancient"}
    assert plan.windows[0].recheck
    assert plan.windows[0].start == T0 + 18 * DAY
    forward = plan.windows[1:]
    assert forward[0].start == T0 + 20 * DAY
    assert forward[-1].end == T0 + 30 * DAY
    assert not any(w.recheck for w in forward)


def test_later_start_date_overrides_bookmark() -> None:
    plan = plan_sync(
        AgentBookmark(synced_through=T0), first_created_at=T0 + 10 * DAY, end=T0 + 12 * DAY,
        now=T0 + 12 * DAY, window_days=7, pending_lookback_days=14,
    )  # fmt: skip
    assert plan.windows[0].start == T0 + 10 * DAY


def test_bookmark_round_trips_through_state() -> None:
    state: dict = {}
    AgentBookmark(T0, {"b": {"created_at": "x", "status": "queued"}}).write_to(state)

    assert state == {
        "replication_key": "created_at",
        "replication_key_value": "2026-01-01T00:00:00.000Z",
        "pending_calls": {"b": {"created_at": "x", "status": "queued"}},
    }
    assert AgentBookmark.from_state(state) == AgentBookmark(T0, state["pending_calls"])
    assert (
        AgentBookmark.from_state(
            {"replication_key": "updated_at", "replication_key_value": "2026"}
        ).synced_through
        is None
    )


def test_emit_filter_emits_edge_calls_once_and_tracks_pending() -> None:
    first, second = Window(T0, T0 + DAY), Window(T0 + DAY, T0 + 2 * DAY)
    emit = EmitFilter(AgentBookmark(), lower_bound=T0)

    assert emit.should_emit(call("edge", T0 + DAY), first)
    assert emit.should_emit(call("start", T0), first)
    assert emit.should_emit(call("p", T0 + DAY / 2, "ringing"), first)
    emit.complete(first)
    assert not emit.should_emit(call("edge", T0 + DAY), second)
    assert emit.bookmark.synced_through == T0 + DAY
    assert set(emit.bookmark.pending) == {"p"}


def test_emit_filter_reemits_a_pending_call_only_when_its_status_changed() -> None:
    bookmark = AgentBookmark(
        T0 + DAY, {"p": {"created_at": format_timestamp(T0), "status": "queued"}}
    )
    recheck = Window(T0, T0 + dt.timedelta(milliseconds=1), recheck=True)

    assert not EmitFilter(bookmark, None).should_emit(call("p", T0, "queued"), recheck)
    assert not EmitFilter(bookmark, None).should_emit(call("old", T0, "completed"), recheck)
    emit = EmitFilter(bookmark, None)
    assert emit.should_emit(call("p", T0, "completed"), recheck)
    assert bookmark.pending == {}
    assert bookmark.synced_through == T0 + DAY  # a re-check never moves the bookmark
    emit.complete(recheck)
    assert bookmark.synced_through == T0 + DAY


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (42, 42),
        ("42", 42),
        ("42.6", 43),
        (41.5, 42),
        (" 7 ", 7),
        ("", None),
        ("n/a", None),
        (None, None),
        (True, None),
    ],
)
def test_durations_become_integers(raw: object, expected: int | None) -> None:
    assert as_integer(raw) == expected


def test_normalize_execution_renames_old_duration_and_fixes_nested_durations() -> None:
    row = {
        "conversation_time": 12.5,
        "telephony_data": {"duration": "30"},
        "transfer_call_data": {"duration": 4},
    }
    assert normalize_execution(row) == {
        "conversation_duration": 12.5,
        "telephony_data": {"duration": 30},
        "transfer_call_data": {"duration": 4},
    }


@pytest.mark.parametrize(
    "text",
    ["2026-01-01", "2026-01-01T00:00:00Z", "2026-01-01T05:30:00+05:30", "2026-01-01T00:00:00"],
)
def test_timestamps_parse_to_aware_utc(text: str) -> None:
    assert parse_timestamp(text) == T0


def test_prefetcher_returns_results_in_order_with_bounded_lookahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def fetch(job: int) -> t.Iterator[list[int]]:
        with lock:
            started.append(job)
        time.sleep(0.01 * (5 - job % 5))  # later jobs finish first
        yield [job, job + 100]
        yield [job + 200]

    prefetcher = OrderedPrefetcher(iter(range(10)), fetch, max_workers=3, lookahead=4, max_chunks=2)
    try:
        results = []
        for _ in range(10):
            job, stream = prefetcher.next_result(lambda _job: True)
            results.append((job, list(stream)))
            assert len(started) <= job + 1 + 4
    finally:
        prefetcher.close()
    assert results == [(job, [job, job + 100, job + 200]) for job in range(10)]


def test_prefetcher_buffer_bounds_what_a_worker_fetches_ahead() -> None:
    produced: list[int] = []

    def fetch(_job: int) -> t.Iterator[list[int]]:
        for page in range(100):
            produced.append(page)
            yield [page]

    prefetcher = OrderedPrefetcher(iter([1]), fetch, max_workers=1, lookahead=1, max_chunks=3)
    try:
        time.sleep(0.3)
        # 3 chunks wait in the buffer and the worker holds the 4th: no more is read ahead.
        assert len(produced) <= 4
        _, stream = prefetcher.next_result(lambda _job: True)
        assert list(stream) == list(range(100))
    finally:
        prefetcher.close()


def test_prefetcher_skips_unwanted_jobs_and_raises_job_errors_in_the_consumer() -> None:
    def fetch(job: int) -> t.Iterator[list[int]]:
        if job == 3:
            msg = "boom"
            raise ValueError(msg)
        yield [job]

    prefetcher = OrderedPrefetcher(iter(range(5)), fetch, max_workers=2, lookahead=2, max_chunks=1)
    try:
        job, stream = prefetcher.next_result(lambda job: job == 2)
        assert (job, list(stream)) == (2, [2])
        _, failing = prefetcher.next_result(lambda _job: True)
        with pytest.raises(ValueError, match="boom"):
            list(failing)
    finally:
        prefetcher.close()


def test_closing_the_prefetcher_stops_blocked_workers() -> None:
    def fetch(_job: int) -> t.Iterator[list[int]]:
        yield from ([page] for page in range(1000))

    prefetcher = OrderedPrefetcher(iter(range(3)), fetch, max_workers=3, lookahead=3, max_chunks=1)
    time.sleep(0.1)
    prefetcher.close()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("bolna-fetch") and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, "fetch workers still running after close()"
        time.sleep(0.05)


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
