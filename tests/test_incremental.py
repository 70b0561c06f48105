"""Incremental sync against the fake API: complete, windowed, and pending calls followed up."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter

import pytest

from tap_bolna.limits import RequestPacer
from tap_bolna.windows import parse_timestamp
from tests.conftest import API_KEY, FakeAccount, days_ago, make_config, partitions, run_tap
from tests.fake_api import (
    FINAL_STATUSES,
    PENDING_STATUSES,
    RETRYABLE_FINAL_STATUSES,
    FakeBolnaServer,
    World,
)

MAX_WINDOW = dt.timedelta(days=7)


def execution_requests(account: FakeAccount) -> list:
    """The executions requests the fake answered, in order."""
    return [r for r in account.api.requests if r.path.endswith("/executions")]


def assert_windows_within_limit(account: FakeAccount) -> None:
    """Every executions request sent both bounds, at most 7 days apart (Bolna 400s otherwise)."""
    requests = execution_requests(account)
    assert requests, "no executions request at all"
    for request in requests:
        assert "from" in request.query, request
        assert "to" in request.query, request
        width = parse_timestamp(request.query["to"]) - parse_timestamp(request.query["from"])
        assert dt.timedelta(0) <= width <= MAX_WINDOW, request
    assert all(r.status == 200 for r in account.api.requests)


def test_first_sync_emits_every_execution_once(account: FakeAccount) -> None:
    result = run_tap(account.config(start_date=days_ago(60)))

    ids = result.ids()
    assert Counter(ids).most_common(1)[0][1] == 1, "an execution was emitted twice"
    assert set(ids) == set(account.world.executions)
    assert_windows_within_limit(account)
    # 60 days in 7-day windows per agent, plus pages: a window walk, not one big request.
    assert len(execution_requests(account)) >= 3 * 9


def test_every_record_has_agent_id_and_integer_durations(account: FakeAccount) -> None:
    records = run_tap(account.config(start_date=days_ago(60))).records()

    raw_types = {
        type(call["telephony_data"]["duration"])
        for call in account.world.executions.values()
        if call.get("telephony_data") and call["telephony_data"].get("duration") is not None
    }
    assert raw_types == {int, str}, "the fake should serve both forms"
    for record in records:
        assert record["agent_id"] == account.world.executions[record["id"]]["agent_id"]
        for nested in ("telephony_data", "transfer_call_data"):
            duration = (record.get(nested) or {}).get("duration")
            assert duration is None or type(duration) is int, (nested, duration)
        assert "conversation_time" not in record


def test_state_is_one_readable_bookmark_per_agent(account: FakeAccount) -> None:
    before = account.world.server_now()
    result = run_tap(account.config(start_date=days_ago(60)))
    after = account.world.server_now()

    state = result.final_state
    by_agent = partitions(state)
    assert set(by_agent) == set(account.world.agent_ids)
    for partition in by_agent.values():
        assert partition["replication_key"] == "created_at"
        # Read up to the sync's "now" on Bolna's clock (known from the Date header, to the
        # second), not, say, to the agent's newest call.
        synced_through = dt.datetime.fromisoformat(
            partition["replication_key_value"].replace("Z", "+00:00")
        )
        second = dt.timedelta(seconds=1)
        assert before - second <= synced_through <= after + second
        assert not {
            "progress_markers",
            "replication_key_signpost",
            "starting_replication_value",
        } & set(partition)
    followed = {i for p in by_agent.values() for i in p["pending_calls"]}
    assert followed == account.world.pending_ids() | failed_within(account.world, RETRY_HORIZON)
    assert API_KEY not in json.dumps(state)


RETRY_HORIZON = dt.timedelta(hours=6)  # the tap's default retry_horizon_hours, said here


def failed_within(world: World, horizon: dt.timedelta) -> set[str]:
    """Calls in a status auto-retry can leave (the fake's list) that changed within `horizon`."""
    since = world.server_now() - horizon
    return {
        call_id
        for call_id, call in world.executions.items()
        if call["status"] in RETRYABLE_FINAL_STATUSES
        and parse_timestamp(call["updated_at"]) > since
    }


def test_a_state_message_follows_every_window(account: FakeAccount) -> None:
    result = run_tap(
        account.config(start_date=days_ago(60), agent_ids=[account.world.agent_ids[0]])
    )

    windows = [r for r in execution_requests(account) if r.query.get("page_number") == "1"]
    agent_states = [s for s in result.states if "executions" in s.get("bookmarks", {})]
    bookmarks = [
        partitions(s)[account.world.agent_ids[0]].get("replication_key_value") for s in agent_states
    ]
    # One checkpoint per window, each further on than the last.
    distinct = list(dict.fromkeys(b for b in bookmarks if b))
    assert len(distinct) == len(windows) >= 9
    assert distinct == sorted(distinct)


def test_second_sync_emits_new_and_completed_calls_and_little_else(account: FakeAccount) -> None:
    config = account.config(start_date=days_ago(60))
    first = run_tap(config)
    first_requests = len(execution_requests(account))
    was_pending = account.world.pending_ids()
    assert was_pending, "the reference world has pending calls"

    new_ids = set(account.world.add_calls(40))
    completed = set(account.world.complete_pending())
    account.api.clear_requests()
    second = run_tap(config, state=first.final_state)

    emitted = second.ids()
    assert len(emitted) == len(set(emitted))
    assert set(emitted) == new_ids | completed
    by_id = {r["id"]: r for r in second.records()}
    for call_id in was_pending:
        assert by_id[call_id]["status"] in FINAL_STATUSES
    assert_windows_within_limit(account)
    second_requests = len(execution_requests(account))
    assert second_requests * 3 < first_requests, (second_requests, first_requests)
    # Only the calls auto-retry may still put back (no-answer, busy, failed, error) are followed.
    followed = {i for p in partitions(second.final_state).values() for i in p["pending_calls"]}
    assert followed == failed_within(account.world, RETRY_HORIZON)


def test_pending_calls_stay_followed_until_final(account: FakeAccount) -> None:
    config = account.config(start_date=days_ago(60))
    first = run_tap(config)
    still_pending = sorted(account.world.pending_ids())
    half = still_pending[: len(still_pending) // 2]
    account.world.complete_pending(ids=half)

    second = run_tap(config, state=first.final_state)
    assert set(second.ids()) == set(half)
    followed = {i for p in partitions(second.final_state).values() for i in p["pending_calls"]}
    assert followed == set(still_pending) - set(half) | failed_within(account.world, RETRY_HORIZON)

    account.world.complete_pending()
    third = run_tap(config, state=second.final_state)
    assert set(third.ids()) == set(still_pending) - set(half)
    assert all(r["status"] in FINAL_STATUSES for r in third.records())


def test_sync_with_nothing_new_makes_one_request_per_agent(account: FakeAccount) -> None:
    # No retry horizon: nothing is followed once every call is final (test_live_rules.py
    # counts what following costs).
    config = account.config(start_date=days_ago(60), retry_horizon_hours=0)
    first = run_tap(config)
    account.world.complete_pending()
    second = run_tap(config, state=first.final_state)
    account.api.clear_requests()

    third = run_tap(config, state=second.final_state)
    assert third.ids() == []
    assert len(execution_requests(account)) == len(account.world.agent_ids)


def test_no_start_date_extracts_whole_history_in_windows(max_workers: int) -> None:
    world = World.generate(seed=11, agents=2, calls=400, days=120)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        result = run_tap(make_config(api, max_workers=max_workers))
        requests = [r for r in api.requests if r.path.endswith("/executions")]

    assert sorted(result.ids()) == sorted(world.executions)
    # Bolna refuses an executions request without a date range: there is none.
    assert [r for r in requests if "from" not in r.query or "to" not in r.query] == []
    assert all(r.status == 200 for r in requests)
    # From each agent's created_at, 120 days and more in windows of at most 7 days.
    assert len(requests) >= 2 * (120 // 7)


def test_agent_without_calls_gets_a_bookmark(max_workers: int) -> None:
    world = World.generate(seed=5, agents=2, calls=0, days=10)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        first = run_tap(make_config(api, max_workers=max_workers))
        assert first.ids() == []
        assert all(p.get("replication_key_value") for p in partitions(first.final_state).values())
        new_ids = world.add_calls(4)
        second = run_tap(
            make_config(api, max_workers=max_workers),
            state=first.final_state,
        )
    assert sorted(second.ids()) == sorted(new_ids)


def test_calls_exactly_on_window_edges_are_emitted_once(max_workers: int) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    start = (now - dt.timedelta(days=30)).replace(microsecond=0)
    world = World.generate(seed=2, agents=1, calls=50, days=25, now=now)
    agent = world.agent_ids[0]
    # No call is older than its agent (the tap skips what lies before it).
    world.agents[agent]["created_at"] = (start - dt.timedelta(days=2)).isoformat()
    edges = [start + k * MAX_WINDOW for k in range(1, 4)]
    on_edges = [i for edge in edges for i in world.add_calls(2, agent_id=agent, created_at=edge)]
    at_start = world.add_calls(1, agent_id=agent, created_at=start)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        result = run_tap(make_config(api, max_workers=max_workers, start_date=start.isoformat()))
        froms = {r.query.get("from") for r in api.requests}

    ids = result.ids()
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(on_edges + at_start) <= set(ids)
    assert set(ids) == {
        i for i, c in world.executions.items() if parse_timestamp(c["created_at"]) >= start
    }
    # The edges really were shared by two windows each (so the test covers the overlap).
    assert {e.strftime("%Y-%m-%dT%H:%M:%S.000Z") for e in edges} <= froms


def test_end_date_bounds_the_backfill(account: FakeAccount) -> None:
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=20)
    result = run_tap(account.config(start_date=days_ago(60), end_date=end.isoformat()))

    expected = {
        i for i, c in account.world.executions.items() if parse_timestamp(c["created_at"]) <= end
    }
    assert set(result.ids()) == expected
    for partition in partitions(result.final_state).values():
        assert abs(parse_timestamp(partition["replication_key_value"]) - end) < dt.timedelta(
            seconds=1
        )


def test_start_date_later_than_bookmark_wins(account: FakeAccount) -> None:
    first = run_tap(account.config(start_date=days_ago(60), end_date=days_ago(30)))
    later = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    second = run_tap(account.config(start_date=later.isoformat()), state=first.final_state)

    created = [parse_timestamp(r["created_at"]) for r in second.records()]
    expected = {
        i for i, c in account.world.executions.items() if parse_timestamp(c["created_at"]) >= later
    }
    assert set(second.ids()) == expected
    assert min(created) >= later


def test_pending_calls_older_than_lookback_are_warned_about(
    caplog: pytest.LogCaptureFixture, max_workers: int
) -> None:
    world = World.generate(seed=9, agents=1, calls=100, days=40, old_pending=3)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = make_config(
            api, max_workers=max_workers, start_date=days_ago(45), pending_lookback_days=14
        )
        first = run_tap(config)
        old = {
            i
            for i in world.pending_ids()
            if parse_timestamp(world.executions[i]["created_at"])
            < dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=14)
        }
        assert len(old) == 3
        api.clear_requests()
        with caplog.at_level(logging.WARNING):
            second = run_tap(config, state=first.final_state)

    assert "3 call(s) still pending after 14 days" in caplog.text
    followed = {i for p in partitions(second.final_state).values() for i in p["pending_calls"]}
    assert not old & followed
    # None of the dated requests reaches back past the look-back horizon.
    horizon = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=14, minutes=5)
    assert all(
        parse_timestamp(r.query["from"]) >= horizon for r in api.requests if "from" in r.query
    )


def test_longer_lookback_follows_older_pending_calls(max_workers: int) -> None:
    world = World.generate(seed=9, agents=1, calls=100, days=40, old_pending=3)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = make_config(
            api, max_workers=max_workers, start_date=days_ago(45), pending_lookback_days=35
        )
        first = run_tap(config)
        completed = set(world.complete_pending())
        second = run_tap(config, state=first.final_state)
    assert set(second.ids()) == completed


def test_filters_and_page_size_reach_the_api(account: FakeAccount) -> None:
    config = account.config(
        start_date=days_ago(20),
        page_size=20,
        status="completed",
        call_type="outbound",
        provider="twilio",
        answered_by_voice_mail=False,
    )
    records = run_tap(config).records()

    queries = [r.query for r in execution_requests(account)]
    assert queries
    for query in queries:
        assert query["page_size"] == "20"
        assert (query["status"], query["call_type"], query["provider"]) == (
            "completed",
            "outbound",
            "twilio",
        )
        assert query["answered_by_voice_mail"] == "false"
    assert records
    assert all(r["status"] == "completed" for r in records)


def test_batch_id_limits_executions_to_one_batch(account: FakeAccount) -> None:
    batch_id = next(c["batch_id"] for c in account.world.executions.values() if c.get("batch_id"))
    result = run_tap(account.config(start_date=days_ago(60), batch_id=batch_id))

    expected = {i for i, c in account.world.executions.items() if c.get("batch_id") == batch_id}
    assert set(result.ids()) == expected


def test_agent_ids_limit_every_agent_stream(account: FakeAccount) -> None:
    chosen = account.world.agent_ids[1]
    result = run_tap(account.config(start_date=days_ago(60), agent_ids=[chosen]))

    assert [a["id"] for a in result.records("agents")] == [chosen]
    assert {r["agent_id"] for r in result.records()} == {chosen}
    assert {r["agent_id"] for r in result.records("batches")} == {chosen}
    assert set(partitions(result.final_state)) == {chosen}
    expected = {i for i, c in account.world.executions.items() if c["agent_id"] == chosen}
    assert set(result.ids()) == expected


def test_batches_carry_their_agent(account: FakeAccount) -> None:
    batches = run_tap(account.config(start_date=days_ago(1))).records("batches")

    assert batches
    keys = [b["batch_id"] for b in batches]
    assert len(keys) == len(set(keys))
    used = {
        (c["agent_id"], c["batch_id"])
        for c in account.world.executions.values()
        if c.get("batch_id")
    }
    assert {(b["agent_id"], b["batch_id"]) for b in batches} >= used


# The fake's own list of statuses a call moves through: a status the tap forgot still counts.
@pytest.mark.parametrize("status", sorted(PENDING_STATUSES))
def test_every_pending_status_is_followed(status: str, max_workers: int) -> None:
    world = World.generate(seed=4, agents=1, calls=10, days=5)
    call_id = world.add_calls(1, status=status)[0]
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = make_config(api, max_workers=max_workers, start_date=days_ago(6))
        first = run_tap(config)
        world.complete_pending(ids=[call_id])
        second = run_tap(config, state=first.final_state)
    assert second.ids() == [call_id]


def test_rate_limit_applies_to_every_request(
    account: FakeAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = []
    original = RequestPacer.wait

    def counted(self: RequestPacer) -> float:
        turns.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(RequestPacer, "wait", counted)
    run_tap(account.config(start_date=days_ago(20)))

    assert len(turns) == len(account.api.requests) > 0
    if account.max_workers > 1:
        assert any(name.startswith("bolna-fetch") for name in turns)
