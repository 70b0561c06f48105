"""Unit tests of the window and bookmark rules and of record normalisation."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tap_bolna.streams import as_integer, normalize_execution
from tap_bolna.windows import (
    AgentBookmark,
    EmitFilter,
    LookBack,
    SyncPlan,
    Window,
    estimated_calls,
    floor_to_api_precision,
    format_timestamp,
    forward_windows,
    history_start,
    parse_timestamp,
    plan_agent,
    plan_sync,
    recheck_windows,
    resume_from,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


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


MS = dt.timedelta(milliseconds=1)


def test_recheck_windows_cover_each_followed_call_with_few_narrow_windows() -> None:
    created = {"d": T0 + 9 * DAY, "a": T0, "b": T0 + 2 * DAY, "e": T0 + 20 * DAY}
    windows = list(recheck_windows(created, 7 * DAY))

    # Nothing known of the calls around them: two calls close together share a window (one
    # page), a call alone is read by id.
    assert [(w.start, w.end - w.start, w.call_id) for w in windows] == [
        (T0, 2 * DAY + MS, None),
        (T0 + 9 * DAY, MS, "d"),
        (T0 + 20 * DAY, MS, "e"),
    ]
    assert all(w.recheck for w in windows)
    for moment in created.values():
        assert any(w.start <= moment <= w.end for w in windows)


def test_a_recheck_window_never_spans_more_than_its_width() -> None:
    created = {"a": T0, "b": T0 + 7 * DAY, "c": T0 + 7 * DAY + HOUR}
    windows = list(recheck_windows(created, 7 * DAY))
    assert [(w.start, w.end, w.call_id) for w in windows] == [
        (T0, T0 + MS, "a"),
        (T0 + 7 * DAY, T0 + 7 * DAY + HOUR + MS, None),
    ]
    assert all(w.end - w.start <= 7 * DAY for w in windows)


def test_rechecks_go_by_id_in_a_busy_history_and_by_window_in_a_quiet_one() -> None:
    followed = {f"c{n}": T0 + n * HOUR for n in range(6)}  # six calls within six hours
    busy = {"2026-01-01": 24_000}  # 1,000 calls an hour: 100 pages between the six
    quiet = {"2026-01-01": 48}  # 2 calls an hour: one page for all six
    by_id = list(recheck_windows(followed, 7 * DAY, page_size=50, calls_per_day=busy))
    assert [w.call_id for w in by_id] == list(followed)
    assert [(w.start, w.end) for w in by_id] == [(m, m + MS) for m in followed.values()]
    by_window = list(recheck_windows(followed, 7 * DAY, page_size=50, calls_per_day=quiet))
    assert [(w.start, w.end, w.call_id) for w in by_window] == [(T0, T0 + 5 * HOUR + MS, None)]


def test_a_gap_worth_a_page_splits_the_rechecks() -> None:
    # Three calls at the start of the first day, three at the start of the third: the day
    # between holds some 200 calls (4 pages), cheaper to skip than to read.
    followed = {f"c{n}": T0 + n * MINUTE for n in range(3)}
    followed |= {f"d{n}": T0 + 2 * DAY + n * MINUTE for n in range(3)}
    per_day = {"2026-01-01": 200, "2026-01-02": 200, "2026-01-03": 200}
    windows = list(recheck_windows(followed, 7 * DAY, page_size=50, calls_per_day=per_day))
    assert [(w.start, w.end, w.call_id) for w in windows] == [
        (T0, T0 + 2 * MINUTE + MS, None),
        (T0 + 2 * DAY, T0 + 2 * DAY + 2 * MINUTE + MS, None),
    ]


LOOKBACK = LookBack(minutes=60, pending_days=14)


def plan(
    bookmark: AgentBookmark, *, now: dt.datetime, first: dt.datetime | None = None
) -> SyncPlan:
    return plan_sync(
        bookmark, first_created_at=first, end=now, now=now, window_days=7, lookback=LOOKBACK
    )


def test_plan_rechecks_old_pending_then_walks_forward_and_expires_older_pending() -> None:
    now = T0 + 30 * DAY
    bookmark = AgentBookmark(
        synced_through=now - 2 * HOUR,
        newest_created_at=now - 3 * HOUR,
        pending={
            "recent": {"created_at": format_timestamp(T0 + 18 * DAY), "status": "queued"},
            "in-range": {"created_at": format_timestamp(now - 2.5 * HOUR), "status": "queued"},
            "ancient": {"created_at": format_timestamp(T0), "status": "scheduled"},
        },
    )
    planned = plan(bookmark, now=now)

    assert set(planned.expired_pending) == {"ancient"}
    # Only the pending call before the forward walk needs a window of its own.
    assert [(w.start, w.recheck) for w in planned.windows] == [
        (T0 + 18 * DAY, True),
        (now - 3 * HOUR, False),
    ]
    assert planned.start == now - 3 * HOUR
    assert planned.windows[-1].end == now


@pytest.mark.parametrize(
    ("synced_through", "newest", "minutes", "expected"),
    [
        # An active agent: the look-back before the bookmark.
        (T0 + 20 * DAY, T0 + 20 * DAY - dt.timedelta(minutes=5), 60, T0 + 20 * DAY - HOUR),
        # The newest call shown is older: start there (calls listed late come after it).
        (T0 + 20 * DAY, T0 + 20 * DAY - 5 * HOUR, 60, T0 + 20 * DAY - 5 * HOUR),
        # ... but an idle agent is read again only a week back (one window).
        (T0 + 20 * DAY, T0 + 2 * DAY, 60, T0 + 20 * DAY - 7 * DAY),
        (T0 + 20 * DAY, None, 60, T0 + 20 * DAY - 7 * DAY),
        # A look-back of 0 still starts no later than the newest call shown.
        (
            T0 + 20 * DAY,
            T0 + 20 * DAY - dt.timedelta(minutes=5),
            0,
            T0 + 20 * DAY - dt.timedelta(minutes=5),
        ),
        # Bookmark from long ago (the tap did not run for weeks): from the bookmark on.
        (T0, T0, 60, T0 - HOUR),
    ],
)
def test_resume_from_takes_the_earliest_of_lookback_and_newest_call(
    synced_through: dt.datetime, newest: dt.datetime | None, minutes: int, expected: dt.datetime
) -> None:
    bookmark = AgentBookmark(synced_through=synced_through, newest_created_at=newest)
    start = resume_from(bookmark, now=T0 + 20 * DAY, lookback=LookBack(minutes, 14))
    assert start == expected


def test_a_legacy_bookmark_reads_the_follow_horizon_again_once() -> None:
    now = T0 + 20 * DAY
    bookmark = AgentBookmark(now - HOUR, now - 2 * HOUR, legacy=True)
    assert resume_from(bookmark, now=now, lookback=LookBack(60, 14)) == now - 14 * DAY
    bookmark.legacy = False
    assert resume_from(bookmark, now=now, lookback=LookBack(60, 14)) == now - 2 * HOUR


def test_never_synced_agent_has_no_resume_point() -> None:
    assert resume_from(AgentBookmark(), now=T0, lookback=LOOKBACK) is None


def test_later_start_date_overrides_bookmark() -> None:
    planned = plan(AgentBookmark(synced_through=T0), now=T0 + 12 * DAY, first=T0 + 10 * DAY)
    assert planned.windows[0].start == T0 + 10 * DAY


def test_bookmark_round_trips_through_state() -> None:
    state: dict = {}
    pending = {"b": {"created_at": "2026-01-01T00:00:00Z", "status": "queued", "updated_at": "u"}}
    recent = {"c": {"created_at": "2026-01-01T00:00:00Z", "updated_at": "v"}}
    AgentBookmark(T0 + DAY, T0, dict(pending), dict(recent)).write_to(state)  # type: ignore[arg-type]

    assert state == {
        "replication_key": "created_at",
        "replication_key_value": "2026-01-02T00:00:00.000Z",
        "newest_created_at": "2026-01-01T00:00:00.000Z",
        "pending_calls": pending,
        "recent_calls": recent,
        "calls_per_day": {},
        "state_version": 2,
    }
    assert AgentBookmark.from_state(state) == AgentBookmark(T0 + DAY, T0, pending, recent)  # type: ignore[arg-type]
    del state["state_version"]  # as the release before it wrote it
    assert AgentBookmark.from_state(state).legacy
    assert (
        AgentBookmark.from_state(
            {"replication_key": "updated_at", "replication_key_value": "2026"}
        ).synced_through
        is None
    )


def test_state_from_before_the_lookback_reads_as_legacy() -> None:
    old = {"replication_key": "created_at", "replication_key_value": "2026-01-02T00:00:00.000Z",
           "pending_calls": {}}  # fmt: skip
    bookmark = AgentBookmark.from_state(old)
    assert bookmark.recent is None
    assert bookmark.newest_created_at is None


def emit_filter(bookmark: AgentBookmark, now: dt.datetime = T0 + 2 * DAY) -> EmitFilter:
    return EmitFilter(bookmark, lower_bound=None, now=now, lookback=LOOKBACK)


def test_emit_filter_emits_edge_calls_once_and_tracks_pending() -> None:
    first, second = Window(T0, T0 + DAY), Window(T0 + DAY, T0 + 2 * DAY)
    emit = EmitFilter(AgentBookmark(), lower_bound=T0, now=T0 + 2 * DAY, lookback=LOOKBACK)

    assert emit.should_emit(call("edge", T0 + DAY), first)
    assert emit.should_emit(call("start", T0), first)
    assert emit.should_emit(call("p", T0 + DAY / 2, "ringing"), first)
    assert not emit.should_emit(call("before-start", T0 - HOUR), first)
    emit.complete(first)
    assert not emit.should_emit(call("edge", T0 + DAY), second)
    assert emit.bookmark.synced_through == T0 + DAY
    assert emit.bookmark.newest_created_at == T0 + DAY
    assert set(emit.bookmark.pending) == {"p"}


def test_emit_filter_reemits_a_pending_call_only_when_it_changed() -> None:
    pending = {"created_at": format_timestamp(T0), "status": "queued", "updated_at": "u1"}
    bookmark = AgentBookmark(T0 + DAY, T0 + DAY, {"p": dict(pending)})  # type: ignore[dict-item]
    recheck = Window(T0, T0 + dt.timedelta(milliseconds=1), recheck=True)

    assert not emit_filter(bookmark).should_emit(
        {**call("p", T0, "queued"), "updated_at": "u1"}, recheck
    )
    assert not emit_filter(bookmark).should_emit(call("old", T0, "completed"), recheck)
    assert emit_filter(bookmark).should_emit(
        {**call("p", T0, "queued"), "updated_at": "u2"}, recheck
    )
    emit = emit_filter(bookmark)
    assert emit.should_emit({**call("p", T0, "completed"), "updated_at": "u3"}, recheck)
    assert bookmark.pending == {}
    assert bookmark.synced_through == T0 + DAY  # a re-check never moves the bookmark
    emit.complete(recheck)
    assert bookmark.synced_through == T0 + DAY


def test_emit_filter_in_the_lookback_emits_late_and_changed_calls_only() -> None:
    now = T0 + 2 * DAY
    synced = now - 10 * MINUTE
    created = format_timestamp(synced - 30 * MINUTE)
    recent = {
        "seen": {"created_at": created, "updated_at": "u1"},
        "filled-later": {"created_at": created, "updated_at": "u1"},
    }
    bookmark = AgentBookmark(synced, synced - 10 * MINUTE, recent=recent)  # type: ignore[arg-type]
    window = Window(synced - HOUR, now)
    emit = emit_filter(bookmark, now)

    late = {**call("late", synced - 40 * MINUTE), "updated_at": "x"}
    assert not emit.should_emit({**call("seen", synced - 30 * MINUTE), "updated_at": "u1"}, window)
    assert emit.should_emit(
        {**call("filled-later", synced - 30 * MINUTE), "updated_at": "u2"}, window
    )
    assert emit.should_emit(late, window)
    assert not emit.should_emit(late, window), "a call on two pages is emitted once"
    emit.complete(window)
    # What the next sync reads again is remembered as it was emitted.
    assert bookmark.recent == {
        "seen": {"created_at": created, "updated_at": "u1"},
        "filled-later": {"created_at": created, "updated_at": "u2"},
        "late": {"created_at": late["created_at"], "updated_at": "x"},
    }
    assert bookmark.synced_through == now


def test_emit_filter_forgets_what_the_next_sync_will_not_read() -> None:
    now = T0 + 2 * DAY
    emit = EmitFilter(AgentBookmark(), lower_bound=T0, now=now, lookback=LOOKBACK)
    window = Window(T0, now)
    for minutes in (0, 30, 90, 150):
        emit.should_emit({**call(f"c{minutes}", now - minutes * MINUTE), "updated_at": "u"}, window)
    emit.complete(window)
    # The next sync starts an hour before the bookmark (the newest call is newer than that).
    assert set(emit.bookmark.recent or {}) == {"c0", "c30"}


def test_emit_filter_with_old_state_emits_calls_before_the_bookmark_only_if_they_changed() -> None:
    synced = T0 + DAY
    bookmark = AgentBookmark(synced, None, {}, None, legacy=True)
    window = Window(synced - HOUR, synced + HOUR)
    emit = emit_filter(bookmark, synced + HOUR)
    unchanged = {**call("before", synced - MINUTE), "updated_at": format_timestamp(synced - MINUTE)}
    assert not emit.should_emit(unchanged, window)
    # call-disconnected when that sync read it, completed since: emitted again.
    changed = {**call("done", synced - 2 * MINUTE), "updated_at": format_timestamp(synced + MINUTE)}
    assert emit.should_emit(changed, window)
    assert emit.should_emit(call("after", synced + MINUTE), window)
    assert (emit.new, emit.changed) == (1, 1)
    emit.complete(window)
    assert not bookmark.legacy, "read past the old bookmark: the state is current again"


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


def test_a_backfill_window_remembers_only_calls_the_next_sync_may_read() -> None:
    window = Window(T0, T0 + 7 * DAY)
    emit = EmitFilter(AgentBookmark(), lower_bound=T0, now=T0 + 30 * DAY, lookback=LOOKBACK)
    for minutes in range(0, 7 * 24 * 60, 15):  # a call every 15 minutes for a week
        emit.should_emit(call(f"c{minutes}", T0 + minutes * MINUTE), window)
    # Before the window ends: only its last hour (the look-back before its end) is kept.
    assert len(emit.bookmark.recent or {}) == 4
    emit.complete(window)
    assert len(emit.bookmark.recent or {}) == 4


# Hand-written here, not taken from tap_bolna.statuses: a status missing there must fail.
@pytest.mark.parametrize(
    ("status", "followed"),
    [
        ("scheduled", True),
        ("prepared", True),
        ("queued", True),
        ("rescheduled", True),
        ("initiated", True),
        ("ringing", True),
        ("in-progress", True),
        ("call-disconnected", True),
        ("a-status-bolna-adds-later", True),
        ("no-answer", True),
        ("busy", True),
        ("failed", True),
        ("error", True),
        ("completed", False),
        ("canceled", False),
        ("stopped", False),
        ("balance-low", False),
    ],
)
def test_which_calls_are_followed(status: str, followed: bool) -> None:  # noqa: FBT001
    now = T0 + 2 * DAY
    emit = emit_filter(AgentBookmark(), now)
    record = {**call("x", now - HOUR, status), "updated_at": format_timestamp(now - HOUR)}
    assert emit.should_emit(record, Window(now - DAY, now))
    assert ("x" in emit.bookmark.pending) is followed
    assert ("x" in (emit.bookmark.recent or {})) is not followed


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "error"])
def test_a_failed_call_is_followed_for_the_retry_horizon_after_its_last_change(
    status: str,
) -> None:
    now = T0 + 2 * DAY
    lookback = LookBack(minutes=60, pending_days=14, retry_hours=6)
    emit = EmitFilter(AgentBookmark(), lower_bound=None, now=now, lookback=lookback)
    window = Window(T0, now)
    changed = {"recent": now - 5 * HOUR, "old": now - 7 * HOUR}
    for call_id, updated in changed.items():
        record = {**call(call_id, T0 + HOUR, status), "updated_at": format_timestamp(updated)}
        emit.should_emit(record, window)
    assert set(emit.bookmark.pending) == {"recent"}


def test_a_call_checked_by_id_that_is_not_found_is_let_go() -> None:
    now = T0 + 2 * DAY
    pending = {
        "gone": {"created_at": format_timestamp(T0), "status": "call-disconnected"},
        "here": {"created_at": format_timestamp(T0 + HOUR), "status": "call-disconnected"},
    }
    bookmark = AgentBookmark(now - HOUR, now - HOUR, dict(pending))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    gone = Window(T0, T0 + MS, recheck=True, call_id="gone")
    emit.complete(gone)  # its window listed nothing either
    here = Window(T0 + HOUR, T0 + HOUR + MS, recheck=True, call_id="here")
    record = {**call("here", T0 + HOUR, "completed"), "updated_at": format_timestamp(now)}
    assert emit.should_emit(record, here)
    emit.complete(here)
    assert emit.gone == ["gone"]
    assert bookmark.pending == {}
    assert bookmark.synced_through == now - HOUR, "a re-check never moves the bookmark"


# EmitFilter: what a sync emits again, and what it keeps for the next one. Dates by hand.


def test_every_new_and_every_changed_call_is_counted() -> None:
    now = T0 + 2 * DAY
    recent = {
        "a": {"created_at": "2026-01-02T23:00:00.000Z", "updated_at": "u1"},
        "b": {"created_at": "2026-01-02T23:10:00.000Z", "updated_at": "u1"},
        "c": {"created_at": "2026-01-02T23:20:00.000Z", "updated_at": "u1"},
    }
    bookmark = AgentBookmark(now - 30 * MINUTE, now - 40 * MINUTE, recent=dict(recent))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    window = Window(now - 2 * HOUR, now)
    for call_id, minutes in (("a", 60), ("b", 50), ("c", 40)):
        record = {**call(call_id, now - minutes * MINUTE), "updated_at": "u2"}
        assert emit.should_emit(record, window)
    for call_id in ("n1", "n2", "n3"):
        assert emit.should_emit({**call(call_id, now - 5 * MINUTE), "updated_at": "u"}, window)
    assert (emit.new, emit.changed) == (3, 3)


def test_old_state_counts_every_call_emitted_again() -> None:
    synced = T0 + DAY
    emit = emit_filter(AgentBookmark(synced, None, {}, None, legacy=True), synced + HOUR)
    window = Window(synced - HOUR, synced + HOUR)
    for n in range(3):
        record = {**call(f"c{n}", synced - (n + 1) * MINUTE), "updated_at": "2026-01-02T00:30:00Z"}
        assert emit.should_emit(record, window)
    assert (emit.new, emit.changed) == (0, 3)


def test_old_state_calls_on_the_old_bookmark_were_emitted_then() -> None:
    # Created on the old bookmark's millisecond: that sync read it (its `to` is inclusive).
    synced = T0 + DAY
    emit = emit_filter(AgentBookmark(synced, None, {}, None, legacy=True), synced + HOUR)
    window = Window(synced - HOUR, synced + HOUR)
    on_edge = {**call("edge", synced), "updated_at": "2026-01-01T23:00:00.000Z"}
    assert not emit.should_emit(on_edge, window)
    # Updated on the bookmark's millisecond: that sync saw it so.
    same_moment = {**call("same", synced - MINUTE), "updated_at": "2026-01-02T00:00:00.000Z"}
    assert not emit.should_emit(same_moment, window)
    later = {**call("later", synced - MINUTE), "updated_at": "2026-01-02T00:00:00.001Z"}
    assert emit.should_emit(later, window)
    # No updated_at (the API left it out): nothing says it changed.
    assert not emit.should_emit(call("undated", synced - 2 * MINUTE), window)
    assert (emit.new, emit.changed) == (0, 1)


def test_old_state_is_current_again_once_a_window_ends_on_the_old_bookmark() -> None:
    synced = T0 + DAY
    bookmark = AgentBookmark(synced, None, {}, None, legacy=True)
    emit = emit_filter(bookmark, synced + HOUR)
    first = Window(synced - HOUR, synced)
    emit.complete(first)
    assert bookmark.legacy is False
    # From here on every call is new: nothing compares it with the old bookmark any more.
    second = Window(synced, synced + HOUR)
    assert emit.should_emit({**call("x", synced + MINUTE), "updated_at": "z"}, second)
    emit.complete(second)
    assert bookmark.synced_through == synced + HOUR


def test_a_call_without_updated_at_is_kept_without_one() -> None:
    now = T0 + 2 * DAY
    emit = emit_filter(AgentBookmark(), now)
    window = Window(now - DAY, now)
    assert emit.should_emit(call("p", now - HOUR, "queued"), window)
    assert emit.should_emit(call("f", now - HOUR), window)
    assert emit.bookmark.pending == {
        "p": {"created_at": "2026-01-02T23:00:00.000Z", "status": "queued"}
    }
    assert emit.bookmark.recent == {
        "f": {"created_at": "2026-01-02T23:00:00.000Z", "updated_at": ""}
    }


def test_a_failed_call_without_updated_at_is_followed_from_its_creation() -> None:
    now = T0 + 2 * DAY
    emit = emit_filter(AgentBookmark(), now)  # retry horizon: 6 hours
    window = Window(now - DAY, now)
    assert emit.should_emit(call("young", now - 5 * HOUR, "no-answer"), window)
    assert emit.should_emit(call("old", now - 7 * HOUR, "busy"), window)
    assert emit.bookmark.pending == {
        "young": {"created_at": "2026-01-02T19:00:00.000Z", "status": "no-answer"}
    }
    assert set(emit.bookmark.recent or {}) == {"old"}


def test_a_final_call_put_back_by_a_retry_is_followed_again() -> None:
    now = T0 + 2 * DAY
    recent = {"r": {"created_at": "2026-01-02T23:00:00.000Z", "updated_at": "u1"}}
    bookmark = AgentBookmark(now - 30 * MINUTE, now - 30 * MINUTE, recent=dict(recent))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    record = {**call("r", now - HOUR, "scheduled"), "updated_at": "u2"}
    assert emit.should_emit(record, Window(now - 2 * HOUR, now))
    assert bookmark.recent == {}
    assert bookmark.pending == {
        "r": {"created_at": "2026-01-02T23:00:00.000Z", "status": "scheduled", "updated_at": "u2"}
    }


def test_calls_per_day_counts_each_new_call_once_on_its_utc_day() -> None:
    now = T0 + 3 * DAY
    bookmark = AgentBookmark(calls_per_day={"2026-01-02": 5})
    emit = EmitFilter(bookmark, lower_bound=None, now=now, lookback=LOOKBACK)
    window = Window(T0, now)
    moments = [T0 + HOUR, T0 + 2 * HOUR, T0 + DAY - MS, T0 + DAY, T0 + 2 * DAY + HOUR]
    for n, moment in enumerate(moments):
        emit.should_emit(call(f"c{n}", moment), window)
    emit.should_emit(call("c0", T0 + HOUR), window)  # the same call again: not counted
    assert bookmark.calls_per_day == {"2026-01-01": 3, "2026-01-02": 6, "2026-01-03": 1}


def test_calls_per_day_keeps_the_horizons_day_and_drops_older_ones() -> None:
    now = T0 + 20 * DAY + 12 * HOUR  # horizon (14 days): 2026-01-07T12:00
    per_day = {"2026-01-06": 1, "2026-01-07": 2, "2026-01-08": 3}
    bookmark = AgentBookmark(now - HOUR, now - HOUR, calls_per_day=dict(per_day))
    emit = emit_filter(bookmark, now)
    emit.complete(Window(now - 2 * HOUR, now))
    assert bookmark.calls_per_day == {"2026-01-07": 2, "2026-01-08": 3}


def test_a_call_found_by_id_and_still_pending_stays_followed() -> None:
    now = T0 + 2 * DAY
    pending = {
        "here": {"created_at": format_timestamp(T0), "status": "queued"},
        "gone": {"created_at": format_timestamp(T0 + HOUR), "status": "queued"},
    }
    bookmark = AgentBookmark(now - HOUR, now - HOUR, dict(pending))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    here = Window(T0, T0 + MS, recheck=True, call_id="here")
    assert not emit.should_emit(call("here", T0, "queued"), here)
    emit.complete(here)
    gone = Window(T0 + HOUR, T0 + HOUR + MS, recheck=True, call_id="gone")
    # Another call on the same millisecond, listed when the id was not found: not the one.
    assert not emit.should_emit(call("neighbour", T0 + HOUR), gone)
    emit.complete(gone)
    assert emit.gone == ["gone"]
    assert set(bookmark.pending) == {"here"}


def test_a_recheck_past_the_bookmark_does_not_move_it() -> None:
    # A later start_date: followed calls between the bookmark and it are re-checked.
    now = T0 + 2 * DAY
    synced = now - 10 * HOUR
    pending = {"p": {"created_at": "2026-01-02T13:30:00.000Z", "status": "queued"}}
    bookmark = AgentBookmark(synced, synced, dict(pending))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    recheck = Window(now - 10.5 * HOUR, now - 5 * HOUR, recheck=True)
    assert emit.should_emit({**call("p", now - 10.5 * HOUR), "updated_at": "u"}, recheck)
    # The next sync starts at the floor the bookmark gives (11 hours ago), not this window's.
    assert bookmark.recent == {"p": {"created_at": "2026-01-02T13:30:00.000Z", "updated_at": "u"}}
    emit.complete(recheck)
    assert bookmark.synced_through == synced
    assert bookmark.newest_created_at == synced
    assert set(bookmark.recent or {}) == {"p"}


def test_the_floor_during_a_window_starts_at_the_newest_call_shown() -> None:
    # Newest call 3 hours before the bookmark: the next sync starts there, so calls after it
    # are remembered while the window is read, and calls before it are not.
    now = T0 + 2 * DAY
    synced = now - HOUR
    recent = {"old": {"created_at": "2026-01-02T19:00:00.000Z", "updated_at": "u"}}
    bookmark = AgentBookmark(synced, now - 4 * HOUR, recent=dict(recent))  # type: ignore[arg-type]
    emit = emit_filter(bookmark, now)
    window = Window(now - 6 * HOUR, now)
    emit.should_emit({**call("old", now - 5 * HOUR), "updated_at": "u"}, window)
    emit.should_emit({**call("kept", now - 3.5 * HOUR), "updated_at": "v"}, window)
    assert bookmark.recent == {
        "kept": {"created_at": "2026-01-02T20:30:00.000Z", "updated_at": "v"}
    }


def test_the_floor_follows_the_window_being_read() -> None:
    now = T0 + 30 * DAY
    emit = EmitFilter(AgentBookmark(), lower_bound=T0, now=now, lookback=LOOKBACK)
    first, second = Window(T0, T0 + 7 * DAY), Window(T0 + 7 * DAY, T0 + 14 * DAY)
    emit.should_emit(call("a", T0 + 7 * DAY - MINUTE), first)
    # The next window's floor is its own end less the look-back, not the first window's.
    emit.should_emit(call("b", T0 + 7 * DAY + MINUTE), second)
    emit.should_emit(call("c", T0 + 14 * DAY - MINUTE), second)
    assert set(emit.bookmark.recent or {}) == {"a", "c"}


def test_a_call_on_a_shared_edge_is_emitted_once_even_if_it_changed_in_between() -> None:
    first, second = Window(T0, T0 + DAY), Window(T0 + DAY, T0 + 2 * DAY)
    emit = EmitFilter(AgentBookmark(), lower_bound=T0, now=T0 + 2 * DAY, lookback=LOOKBACK)
    assert emit.should_emit({**call("edge", T0 + DAY, "ringing"), "updated_at": "u1"}, first)
    emit.complete(first)
    assert not emit.should_emit({**call("edge", T0 + DAY, "completed"), "updated_at": "u2"}, second)
    assert (emit.new, emit.changed) == (1, 0)
    emit.complete(second)
    # The next sync finds it changed since it was emitted, and emits it then.
    assert emit.bookmark.pending["edge"]["status"] == "ringing"


def test_the_newest_call_is_the_newest_created_at_seen() -> None:
    bookmark = AgentBookmark(T0 + DAY, T0 + DAY - HOUR)
    emit = emit_filter(bookmark, T0 + 2 * DAY)
    window = Window(T0 + DAY - 2 * HOUR, T0 + 2 * DAY)
    for hours in (3, 1, 2):
        emit.should_emit(call(f"c{hours}", T0 + DAY + hours * HOUR), window)
    emit.complete(window)
    assert bookmark.newest_created_at == T0 + DAY + 3 * HOUR
    emit.complete(Window(T0 + 2 * DAY, T0 + 2 * DAY + MS))  # an empty window moves nothing
    assert bookmark.newest_created_at == T0 + DAY + 3 * HOUR


# Timestamps: forms the stdlib does not read go through pendulum; the result is always UTC.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Ordinal dates (day 1 of 2026): not read by datetime.fromisoformat.
        ("2026-001T23:59:59.999999-02:00", dt.datetime(2026, 1, 2, 1, 59, 59, 999999, UTC)),
        ("2026-001T05:30:00.250+05:30", dt.datetime(2026, 1, 1, 0, 0, 0, 250000, UTC)),
        ("2026-001T00:00:00", dt.datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_other_iso_forms_parse_to_a_plain_utc_datetime(text: str, expected: dt.datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert type(parsed) is dt.datetime
    assert parsed.tzinfo is dt.timezone.utc
    assert (parsed.year, parsed.month, parsed.day) == (expected.year, expected.month, expected.day)
    assert (parsed.hour, parsed.minute, parsed.second, parsed.microsecond) == (
        expected.hour,
        expected.minute,
        expected.second,
        expected.microsecond,
    )


def test_a_duration_is_not_a_timestamp() -> None:
    with pytest.raises(TypeError, match=r"^'P1D' is a date or duration, not a timestamp$"):
        parse_timestamp("P1D")


@pytest.fixture
def local_time_in_india(monkeypatch: pytest.MonkeyPatch):
    # UTC+05:30: a conversion to local time instead of UTC shows in the fields.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_in_india")
def test_timestamps_are_utc_whatever_the_local_time() -> None:
    parsed = parse_timestamp("2026-01-01T05:30:00+05:30")
    assert (parsed.hour, parsed.minute, parsed.tzinfo) == (0, 0, dt.timezone.utc)
    pendulum_form = parse_timestamp("2026-001T05:30:00+05:30")
    assert (pendulum_form.hour, pendulum_form.minute, pendulum_form.tzinfo) == (0, 0, UTC)
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    floored = floor_to_api_precision(dt.datetime(2026, 1, 1, 5, 30, tzinfo=india))
    assert (floored.hour, floored.minute, floored.tzinfo) == (0, 0, UTC)


@pytest.mark.parametrize(
    ("microsecond", "floored"), [(0, 0), (999, 0), (1000, 1000), (123456, 123000), (999999, 999000)]
)
def test_moments_are_floored_to_whole_milliseconds(microsecond: int, floored: int) -> None:
    moment = T0 + dt.timedelta(microseconds=microsecond)
    assert floor_to_api_precision(moment) == T0 + dt.timedelta(microseconds=floored)


# Where an agent's first sync starts, and the whole plan of one agent.


@pytest.mark.parametrize(
    ("start_date", "agent_created_at", "expected"),
    [
        # No created_at: start_date, else 730 days back (2026-03-01 - 730 days = 2024-03-01).
        (None, None, (dt.datetime(2024, 3, 1, tzinfo=UTC), True)),
        (T0, None, (T0, False)),
        # created_at: a day before it, unless start_date is later.
        (None, T0 + 10 * DAY, (T0 + 9 * DAY, False)),
        (T0, T0 + 10 * DAY, (T0 + 9 * DAY, False)),
        (T0 + 9 * DAY + HOUR, T0 + 10 * DAY, (T0 + 9 * DAY + HOUR, False)),
    ],
)
def test_history_start(
    start_date: dt.datetime | None,
    agent_created_at: dt.datetime | None,
    expected: tuple[dt.datetime, bool],
) -> None:
    now = dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert history_start(start_date=start_date, agent_created_at=agent_created_at, now=now) == (
        expected
    )


def agent_plan(bookmark: AgentBookmark, **overrides):
    options = {
        "now": T0 + 20 * DAY,
        "start_date": None,
        "end_date": None,
        "window_days": 7,
        "page_size": 50,
        "lookback": LOOKBACK,
        "agent_created_at": T0,
    }
    options.update(overrides)
    return plan_agent({"agent_id": "ag-1"}, bookmark, **options)


def test_a_first_sync_walks_from_a_day_before_the_agent_was_created_to_now() -> None:
    agent = agent_plan(AgentBookmark(), window_days=5)
    assert agent.agent_id == "ag-1"
    assert agent.context == {"agent_id": "ag-1"}
    assert [(w.start, w.end) for w in agent.windows] == [
        (T0 - DAY, T0 + 4 * DAY),
        (T0 + 4 * DAY, T0 + 9 * DAY),
        (T0 + 9 * DAY, T0 + 14 * DAY),
        (T0 + 14 * DAY, T0 + 19 * DAY),
        (T0 + 19 * DAY, T0 + 20 * DAY),
    ]
    assert agent.end == T0 + 20 * DAY
    assert agent.lower_bound is None
    assert agent.expired_pending == {}
    assert agent.history_assumed is False


def test_start_and_end_dates_bound_the_walk() -> None:
    agent = agent_plan(AgentBookmark(), start_date=T0 + 5 * DAY, end_date=T0 + 8 * DAY)
    assert [(w.start, w.end) for w in agent.windows] == [(T0 + 5 * DAY, T0 + 8 * DAY)]
    assert (agent.lower_bound, agent.end) == (T0 + 5 * DAY, T0 + 8 * DAY)
    # An end_date after now: the walk still ends now.
    later = agent_plan(AgentBookmark(), start_date=T0 + 18 * DAY, end_date=T0 + 30 * DAY)
    assert [(w.start, w.end) for w in later.windows] == [(T0 + 18 * DAY, T0 + 20 * DAY)]
    assert later.end == T0 + 20 * DAY


def test_an_agent_without_created_at_is_assumed_old_on_its_first_sync_only() -> None:
    now = dt.datetime(2026, 3, 1, tzinfo=UTC)
    first = agent_plan(AgentBookmark(), now=now, agent_created_at=None, window_days=7)
    assert first.history_assumed is True
    assert first.windows[0].start == dt.datetime(2024, 3, 1, tzinfo=UTC)
    assert first.windows[-1].end == now
    synced = AgentBookmark(now - HOUR, now - HOUR)
    again = agent_plan(synced, now=now, agent_created_at=None)
    assert again.history_assumed is False
    assert [(w.start, w.end) for w in again.windows] == [(now - 2 * HOUR, now)]
    dated = agent_plan(AgentBookmark(), now=now, agent_created_at=None, start_date=T0)
    assert dated.history_assumed is False


def test_an_agent_plan_drops_pending_calls_past_the_horizon_and_rechecks_the_others() -> None:
    now = T0 + 20 * DAY  # horizon (14 days): T0 + 6 days
    pending = {
        "expired": {"created_at": "2026-01-06T23:59:59.999Z", "status": "queued"},
        "kept": {"created_at": "2026-01-07T00:00:00.000Z", "status": "queued"},
        "near": {"created_at": "2026-01-08T00:00:00.000Z", "status": "ringing"},
    }
    bookmark = AgentBookmark(now - HOUR, now - HOUR, dict(pending))  # type: ignore[arg-type]
    agent = agent_plan(bookmark, now=now, lookback=LookBack(60, 14), page_size=50)
    assert agent.expired_pending == {"expired": pending["expired"]}
    assert set(bookmark.pending) == {"kept", "near"}
    assert agent.bookmark is bookmark
    # Nothing is known of the calls between them: one window reads both.
    assert [(w.start, w.end, w.recheck, w.call_id) for w in agent.windows] == [
        (T0 + 6 * DAY, T0 + 7 * DAY + MS, True, None),
        (now - 2 * HOUR, now, False, None),
    ]


def test_an_agent_plan_passes_its_page_size_and_width_to_the_rechecks() -> None:
    now = T0 + 20 * DAY
    pending = {
        "a": {"created_at": "2026-01-08T00:00:00.000Z", "status": "queued"},
        "b": {"created_at": "2026-01-08T06:00:00.000Z", "status": "queued"},
    }
    # 40 calls a day: 10 between the two, under a page of 50 but over a page of 5.
    bookmark = AgentBookmark(
        now - HOUR, now - HOUR, dict(pending), calls_per_day={"2026-01-08": 40}
    )  # type: ignore[arg-type]
    wide = agent_plan(bookmark, now=now, page_size=50)
    assert [(w.start, w.call_id) for w in wide.windows[:-1]] == [(T0 + 7 * DAY, None)]
    narrow = agent_plan(bookmark, now=now, page_size=5)
    assert [(w.start, w.call_id) for w in narrow.windows[:-1]] == [
        (T0 + 7 * DAY, "a"),
        (T0 + 7 * DAY + 6 * HOUR, "b"),
    ]
    # Two days apart: one window of up to 7 days reads both, windows of 1 day cannot.
    bookmark.pending["b"]["created_at"] = "2026-01-10T00:00:00.000Z"
    assert [w.call_id for w in agent_plan(bookmark, now=now, window_days=7).windows] == [None, None]
    assert [w.call_id for w in agent_plan(bookmark, now=now, window_days=1).windows[:-1]] == [
        "a",
        "b",
    ]


# Pricing the re-checks: calls per day, spread evenly over the day.


def test_estimated_calls_spread_each_days_count_over_the_day() -> None:
    per_day = {"2026-01-01": 96, "2026-01-03": 48}  # none seen on 2026-01-02
    assert estimated_calls(per_day, T0, T0 + 6 * HOUR) == 24.0
    # 18:00 on the 1st to 12:00 on the 3rd: 24 + 0 + 24.
    assert estimated_calls(per_day, T0 + 18 * HOUR, T0 + 2 * DAY + 12 * HOUR) == 48.0
    assert estimated_calls(per_day, T0 + DAY, T0 + 2 * DAY) == 0.0
    assert estimated_calls(per_day, T0 + HOUR, T0 + HOUR) == 0.0
    assert estimated_calls(per_day, T0 + 2 * HOUR, T0 + HOUR) == 0.0
    assert estimated_calls({}, T0, T0 + DAY) == 0.0


def test_rechecks_go_in_time_order_whatever_the_ids() -> None:
    # Ids in the opposite order of their calls. Two calls on one millisecond of a day of 60
    # calls a millisecond: two pages for that millisecond, so by id, in the order of the ids.
    followed = {"z": T0, "y": T0 + 3 * DAY, "x": T0 + 3 * DAY, "a": T0 + 5 * DAY}
    busy = {"2026-01-01": 10_000, "2026-01-04": 60 * 86_400_000, "2026-01-06": 10_000}
    windows = list(recheck_windows(followed, 7 * DAY, calls_per_day=busy))
    assert [(w.start, w.call_id) for w in windows] == [
        (T0, "z"),
        (T0 + 3 * DAY, "x"),
        (T0 + 3 * DAY, "y"),
        (T0 + 5 * DAY, "a"),
    ]


def test_a_gap_of_exactly_a_page_splits_the_rechecks() -> None:
    # 100 calls on 2026-01-01: 50 (a page of the default size) between 00:00 and 12:00.
    followed = {"a": T0, "b": T0 + 12 * HOUR, "c": T0 + 12 * HOUR + MINUTE}
    per_day = {"2026-01-01": 100}
    expected = [(T0, T0 + MS, "a"), (T0 + 12 * HOUR, T0 + 12 * HOUR + MINUTE + MS, None)]
    windows = list(recheck_windows(followed, 7 * DAY, calls_per_day=per_day))
    assert [(w.start, w.end, w.call_id) for w in windows] == expected
    bookmark = AgentBookmark(
        T0 + 3 * DAY,
        T0 + 3 * DAY,
        {
            call_id: {"created_at": format_timestamp(m), "status": "queued"}
            for call_id, m in followed.items()
        },  # type: ignore[misc]
        calls_per_day=per_day,
    )
    planned = plan(bookmark, now=T0 + 3 * DAY)
    assert [(w.start, w.end, w.call_id) for w in planned.windows[:-1]] == expected


def test_a_group_that_takes_two_pages_is_read_by_id() -> None:
    # Three calls a millisecond: 48 calls between the two (one page), 51 through the last
    # one's millisecond (two pages), so two requests by id are cheaper.
    followed = {"a": T0, "b": T0 + 16 * MS}
    per_day = {"2026-01-01": 3 * 86_400_000}
    windows = list(recheck_windows(followed, 7 * DAY, calls_per_day=per_day))
    assert [w.call_id for w in windows] == ["a", "b"]


def test_plan_rechecks_pending_calls_with_the_calls_seen_per_day() -> None:
    now = T0 + 10 * DAY
    pending = {
        "a": {"created_at": "2026-01-02T00:00:00.000Z", "status": "queued"},
        "b": {"created_at": "2026-01-02T02:00:00.000Z", "status": "queued"},
    }
    # 1,200 calls a day: 100 between the two, two pages; by id is cheaper.
    bookmark = AgentBookmark(
        now - HOUR, now - HOUR, dict(pending), calls_per_day={"2026-01-02": 1200}
    )  # type: ignore[arg-type]
    assert [w.call_id for w in plan(bookmark, now=now).windows[:-1]] == ["a", "b"]
    bookmark.calls_per_day = {}
    assert [w.call_id for w in plan(bookmark, now=now).windows[:-1]] == [None]


def test_a_pending_call_on_the_walks_start_is_read_by_the_walk() -> None:
    now = T0 + 10 * DAY
    start = now - 2 * HOUR  # an hour before the bookmark
    pending = {"edge": {"created_at": format_timestamp(start), "status": "queued"}}
    bookmark = AgentBookmark(now - HOUR, now - HOUR, dict(pending))  # type: ignore[arg-type]
    planned = plan(bookmark, now=now)
    assert [(w.start, w.end, w.recheck) for w in planned.windows] == [(start, now, False)]


def test_an_earlier_start_date_does_not_move_a_bookmark_back() -> None:
    now = T0 + 12 * DAY
    planned = plan(AgentBookmark(now - HOUR, now - HOUR), now=now, first=T0)
    assert planned.start == now - 2 * HOUR
    assert [(w.start, w.end) for w in planned.windows] == [(now - 2 * HOUR, now)]
    fresh = plan(AgentBookmark(), now=now, first=now - 3 * DAY)
    assert [(w.start, w.end) for w in fresh.windows] == [(now - 3 * DAY, now)]


def test_a_failed_call_is_let_go_exactly_at_the_retry_horizon() -> None:
    now = T0 + 2 * DAY
    lookback = LookBack(retry_hours=6)
    assert lookback.retry_open(now - 6 * HOUR + MS, now)
    assert not lookback.retry_open(now - 6 * HOUR, now)


def test_calls_per_day_survive_the_state() -> None:
    state: dict = {}
    AgentBookmark(T0 + DAY, T0, calls_per_day={"2026-01-01": 7}).write_to(state)
    assert state["calls_per_day"] == {"2026-01-01": 7}
    assert AgentBookmark.from_state(state).calls_per_day == {"2026-01-01": 7}
    assert AgentBookmark.from_state({**state, "calls_per_day": [7]}).calls_per_day == {}
