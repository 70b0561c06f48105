"""The live API's rules, against the fake API that enforces them (real HTTP, 1 and 4 workers).

Every executions request carries `from`/`to` (Bolna refuses the rest), a first sync starts at
each agent's `created_at`, and a call is followed until it is really final: `call-disconnected`
comes before `completed` fills in cost and transcript, auto-retry puts a `no-answer` call back
to `scheduled` under the same id, and a status the tap does not know is still moving. Time
moves on the fake's server clock, which the tap reads from the `Date` header.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
import sys
import typing as t
from collections import Counter
from pathlib import Path

import pytest

from tap_bolna.windows import format_timestamp, parse_timestamp
from tests.conftest import API_KEY, days_ago, make_config, partitions, run_tap
from tests.fake_api import (
    FINAL_STATUSES,
    MOVING_STATUSES,
    PENDING_STATUSES,
    RETRYABLE_FINAL_STATUSES,
    TERMINAL_STATUSES,
    UNDOCUMENTED_STATUSES,
    FakeBolnaServer,
    World,
)
from tests.test_moving_edge import Edge

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import SyncResult

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


def execution_requests(api: FakeBolnaServer) -> list:
    return [r for r in api.requests if r.path.startswith("/v2/agent/") and "/executions" in r.path]


def by_id_requests(api: FakeBolnaServer, call_id: str | None = None) -> list:
    return [
        r
        for r in api.requests
        if r.path.startswith("/executions/")
        and not r.path.endswith("/log")
        and (call_id is None or r.path == f"/executions/{call_id}")
    ]


def assert_every_executions_request_is_dated(api: FakeBolnaServer) -> None:
    requests = execution_requests(api)
    assert requests
    for request in requests:
        assert {"from", "to"} <= set(request.query), request
        span = parse_timestamp(request.query["to"]) - parse_timestamp(request.query["from"])
        assert dt.timedelta(0) <= span <= WEEK, request
    assert [r for r in api.requests if r.status != 200] == []


def last_emitted(result: SyncResult, call_id: str) -> dict[str, t.Any] | None:
    records = [record for record in result.records() if record["id"] == call_id]
    return records[-1] if records else None


def followed(state: dict[str, t.Any]) -> dict[str, str]:
    """Followed call id -> the status it was last emitted with, over every agent."""
    return {
        call_id: call["status"]
        for partition in partitions(state).values()
        for call_id, call in partition["pending_calls"].items()
    }


# ---------------------------------------------------------------- the first sync


def test_a_first_sync_without_start_date_walks_from_each_agents_created_at(
    max_workers: int,
) -> None:
    world = World.generate(seed=21, agents=3, calls=600, days=30)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        result = run_tap(make_config(api, max_workers=max_workers))
        ids = result.ids()
        assert Counter(ids).most_common(1)[0][1] == 1
        assert set(ids) == set(world.executions)
        assert_every_executions_request_is_dated(api)
        for agent_id, agent in world.agents.items():
            starts = [
                parse_timestamp(r.query["from"])
                for r in execution_requests(api)
                if r.path == f"/v2/agent/{agent_id}/executions"
            ]
            created = parse_timestamp(agent["created_at"])
            # From a day before the agent was created (no call is older), not further back.
            assert min(starts) == parse_timestamp(format_timestamp(created - DAY))


def test_an_agent_without_created_at_is_read_from_two_years_back_said_once(
    max_workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    world = World.generate(seed=22, agents=2, calls=100, days=10)
    for agent in world.agents.values():
        del agent["created_at"]
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        with caplog.at_level(logging.WARNING):
            result = run_tap(make_config(api, max_workers=max_workers))
        assert set(result.ids()) == set(world.executions)
        assert_every_executions_request_is_dated(api)
        starts = [parse_timestamp(r.query["from"]) for r in execution_requests(api)]
        assert world.server_now() - min(starts) >= dt.timedelta(days=729)
        # 730 days in windows of 7: 105 windows an agent, and a page or two more for the calls.
        assert 2 * 105 <= len(execution_requests(api)) <= 2 * 105 + 6
    said = [r.getMessage() for r in caplog.records if "no created_at" in r.getMessage()]
    assert len(said) == 1, said
    assert "730 days" in said[0]
    assert "start_date" in said[0]


# ---------------------------------------------------------------- following calls


@pytest.fixture
def quiet(max_workers: int) -> Iterator[Edge]:
    """One agent, 60 calls over 4 days, none pending: each test adds the calls it follows."""
    world = World.generate(seed=23, agents=1, calls=60, days=4, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        yield Edge(world, api, max_workers)


@pytest.mark.parametrize("first_status", ["scheduled", "prepared"])
def test_a_call_created_hours_before_it_runs_ends_completed(quiet: Edge, first_status: str) -> None:
    agent_id = quiet.world.agent_ids[0]
    call_id = quiet.world.add_calls(
        1, agent_id=agent_id, created_at=quiet.server_now() - 5 * HOUR, status=first_status
    )[0]
    first = quiet.sync(start_date=days_ago(5))
    assert last_emitted(first, call_id)["status"] == first_status  # type: ignore[index]
    assert followed(quiet.state) == {call_id: first_status}  # type: ignore[arg-type]

    quiet.world.clock_offset += 10 * MINUTE
    quiet.world.disconnect_calls([call_id])  # the line dropped: nothing filled in yet
    second = quiet.sync()
    disconnected = last_emitted(second, call_id)
    assert disconnected is not None
    assert disconnected["status"] == "call-disconnected"
    assert not disconnected["total_cost"]
    assert not disconnected["transcript"]
    assert followed(quiet.state) == {call_id: "call-disconnected"}  # type: ignore[arg-type]
    assert second.ids() == [call_id], "nothing else changed"

    quiet.world.clock_offset += 3 * MINUTE
    quiet.world.complete_pending(ids=[call_id], status="completed")
    third = quiet.sync()
    completed = last_emitted(third, call_id)
    assert completed == {
        **completed,
        "status": "completed",
        "total_cost": quiet.world.executions[call_id]["total_cost"],
        "transcript": quiet.world.executions[call_id]["transcript"],
    }
    assert completed["total_cost"] > 0
    assert completed["transcript"]
    assert followed(quiet.state) == {}  # type: ignore[arg-type]

    quiet.api.clear_requests()
    assert quiet.sync().ids() == []
    assert by_id_requests(quiet.api) == [], "a completed call is not read again"
    assert quiet.emitted[call_id] == 3, "once in each status it reached"
    assert {n for i, n in quiet.emitted.items() if i != call_id} == {1}


def test_an_auto_retried_call_ends_with_its_last_outcome(quiet: Edge) -> None:
    agent_id = quiet.world.agent_ids[0]
    # Failed three hours ago: outside the look-back, inside the retry horizon (6 h).
    call_id = quiet.world.add_calls(
        1, agent_id=agent_id, created_at=quiet.server_now() - 3 * HOUR, status="no-answer"
    )[0]
    emitted = [record["status"] for record in quiet.sync(start_date=days_ago(5)).records()]
    assert "no-answer" in emitted
    assert followed(quiet.state) == {call_id: "no-answer"}  # type: ignore[arg-type]
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("tap-bolna-state")), "--json"],
        input=json.dumps(quiet.state),
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(shown.stdout)
    assert row["pending_calls"] == {"no-answer": 1}, "the inspector shows retry-followed calls"

    quiet.world.clock_offset += 30 * MINUTE
    quiet.world.retry_calls([call_id], after=dt.timedelta(0))  # retried 30 minutes later
    retried = last_emitted(quiet.sync(), call_id)
    assert retried is not None
    assert (retried["id"], retried["status"], retried["retry_count"]) == (
        call_id,
        "scheduled",
        1,
    )

    quiet.world.clock_offset += 5 * MINUTE
    quiet.world.complete_pending(ids=[call_id], status="no-answer")
    quiet.world.clock_offset += 55 * MINUTE  # 90 minutes after the first outcome
    quiet.world.retry_calls([call_id], after=dt.timedelta(0))
    quiet.world.clock_offset += 5 * MINUTE
    quiet.world.complete_pending(ids=[call_id], status="completed")
    final = last_emitted(quiet.sync(), call_id)
    assert final is not None
    assert final["status"] == "completed"
    assert final["retry_count"] == 2
    assert final["total_cost"] == quiet.world.executions[call_id]["total_cost"]
    assert followed(quiet.state) == {}  # type: ignore[arg-type]


def test_a_failed_call_is_let_go_after_the_retry_horizon(quiet: Edge) -> None:
    agent_id = quiet.world.agent_ids[0]
    call_id = quiet.world.add_calls(
        1, agent_id=agent_id, created_at=quiet.server_now() - 2 * HOUR, status="busy"
    )[0]
    quiet.sync(start_date=days_ago(5), retry_horizon_hours=4)
    assert followed(quiet.state) == {call_id: "busy"}  # type: ignore[arg-type]

    quiet.world.clock_offset += HOUR
    quiet.api.clear_requests()
    assert quiet.sync(retry_horizon_hours=4).ids() == []
    assert len(by_id_requests(quiet.api, call_id)) == 1, "inside the horizon: read again"

    quiet.world.clock_offset += 4 * HOUR  # past the horizon: read once more, then let go
    quiet.sync(retry_horizon_hours=4)
    assert followed(quiet.state) == {}  # type: ignore[arg-type]
    quiet.api.clear_requests()
    assert quiet.sync(retry_horizon_hours=4).ids() == []
    assert by_id_requests(quiet.api) == []


def test_a_status_the_tap_does_not_know_is_followed_until_final(quiet: Edge) -> None:
    agent_id = quiet.world.agent_ids[0]
    call_id = quiet.world.add_calls(
        1, agent_id=agent_id, created_at=quiet.server_now() - 4 * HOUR, status="transferring"
    )[0]
    quiet.sync(start_date=days_ago(5))
    assert followed(quiet.state) == {call_id: "transferring"}  # type: ignore[arg-type]
    quiet.world.clock_offset += 10 * MINUTE
    quiet.world.complete_pending(ids=[call_id], status="completed")
    assert [r["status"] for r in quiet.sync().records()] == ["completed"]
    assert followed(quiet.state) == {}  # type: ignore[arg-type]


def test_a_followed_call_that_is_gone_is_checked_through_its_window_once_then_dropped(
    quiet: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    agent_id = quiet.world.agent_ids[0]
    created = quiet.server_now() - 6 * HOUR
    call_id = quiet.world.add_calls(1, agent_id=agent_id, created_at=created, status="queued")[0]
    quiet.sync(start_date=days_ago(5))
    quiet.world.remove_calls([call_id])
    quiet.api.clear_requests()
    with caplog.at_level(logging.WARNING):
        assert quiet.sync().ids() == []
    assert [r.status for r in by_id_requests(quiet.api, call_id)] == [404]
    own_window = [
        r
        for r in execution_requests(quiet.api)
        if parse_timestamp(r.query["from"]) <= created <= parse_timestamp(r.query["to"])
        and parse_timestamp(r.query["to"]) - parse_timestamp(r.query["from"]) < MINUTE
    ]
    assert len(own_window) == 1, "read through its own window once"
    gone = [r.getMessage() for r in caplog.records if "gone" in r.getMessage()]
    assert len(gone) == 1
    assert call_id in gone[0]
    assert followed(quiet.state) == {}  # type: ignore[arg-type]
    quiet.api.clear_requests()
    quiet.sync()
    assert by_id_requests(quiet.api) == []


# ---------------------------------------------------------------- what following costs


def sync_cost(edge: Edge, **config: t.Any) -> int:
    """Requests to the executions and execution-by-id routes of a sync with nothing new."""
    edge.api.clear_requests()
    assert edge.sync(**config).ids() == [], "nothing changed"
    return len(execution_requests(edge.api)) + len(by_id_requests(edge.api))


def cost_with_and_without(edge: Edge, followed_ids: list[str]) -> tuple[int, int]:
    """A no-change sync's cost while `followed_ids` are followed, and once they are final."""
    # No retry horizon: the generated history's failed calls are not followed, only these.
    edge.sync(start_date=days_ago(5), retry_horizon_hours=0)
    assert set(followed(edge.state)) == set(followed_ids)  # type: ignore[arg-type]
    with_them = sync_cost(edge, retry_horizon_hours=0)
    edge.world.complete_pending(ids=followed_ids, status="completed")
    assert set(edge.sync(retry_horizon_hours=0).ids()) == set(followed_ids)
    return with_them, sync_cost(edge, retry_horizon_hours=0)


def test_a_few_followed_calls_in_a_busy_history_cost_a_request_each(max_workers: int) -> None:
    # 1 agent, 3,000 calls in 3 days: some 20 pages a day.
    world = World.generate(seed=24, agents=1, calls=3000, days=3, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        agent_id = world.agent_ids[0]
        now = world.server_now()
        queued = [
            world.add_calls(1, agent_id=agent_id, created_at=now - hours * HOUR, status="queued")[0]
            for hours in (30, 40, 50)
        ]
        with_them, without = cost_with_and_without(edge, queued)
    assert without <= 2, "an active agent: the look-back window"
    assert with_them <= without + len(queued)


def test_many_followed_calls_close_together_cost_the_pages_of_their_window(
    max_workers: int,
) -> None:
    world = World.generate(seed=25, agents=1, calls=400, days=4, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        agent_id = world.agent_ids[0]
        now = world.server_now()
        queued = [
            world.add_calls(
                1, agent_id=agent_id, created_at=now - 4 * HOUR + n * 10 * dt.timedelta(seconds=1),
                status="queued",
            )[0]
            for n in range(120)
        ]  # fmt: skip
        created = [parse_timestamp(world.executions[i]["created_at"]) for i in queued]
        in_their_window = sum(
            min(created) <= parse_timestamp(call["created_at"]) <= max(created)
            for call in world.executions.values()
        )
        with_them, without = cost_with_and_without(edge, queued)
    assert without <= 2
    assert with_them <= without + min(len(queued), math.ceil(in_their_window / 50))


# ---------------------------------------------------------------- state of the release before


def test_state_of_the_release_before_catches_up_on_calls_it_took_as_final(
    max_workers: int,
) -> None:
    world = World.generate(seed=26, agents=2, calls=300, days=12, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        agent_id = world.agent_ids[0]
        now = world.server_now()
        disconnected = world.add_calls(
            1, agent_id=agent_id, created_at=now - 3 * DAY, status="in-progress"
        )[0]
        world.disconnect_calls([disconnected])
        edge.sync(start_date=days_ago(13))
        # As the release before wrote it: call-disconnected was final, so not followed.
        for partition in partitions(edge.state).values():  # type: ignore[arg-type]
            partition["pending_calls"].pop(disconnected, None)
            partition.pop("state_version")
            partition.pop("calls_per_day")
        world.clock_offset += 10 * MINUTE
        world.complete_pending(ids=[disconnected], status="completed")
        migrated = edge.sync()
        assert migrated.ids() == [disconnected]
        assert migrated.records()[0]["status"] == "completed"
        assert all(p["state_version"] == 2 for p in partitions(edge.state).values())  # type: ignore[arg-type]
        api.clear_requests()
        assert edge.sync().ids() == []
        assert len(execution_requests(api)) <= 2 * 2, "the catch-up happens once"


def test_every_status_the_fake_sends_is_followed_as_the_live_rules_say(quiet: Edge) -> None:
    # The fake's own lists (Bolna's docs, and one status no documentation lists), never the
    # tap's: still moving -> followed until final; looks final but auto-retry may revive it
    # -> followed for the retry horizon (6 h); final for good -> not looked at again.
    agent_id = quiet.world.agent_ids[0]
    statuses = (*MOVING_STATUSES, *UNDOCUMENTED_STATUSES, *RETRYABLE_FINAL_STATUSES,
                *TERMINAL_STATUSES)  # fmt: skip
    assert set(statuses) == set(PENDING_STATUSES + FINAL_STATUSES)
    created_at = quiet.server_now() - 3 * HOUR  # outside the look-back, inside the horizon
    calls = {
        status: quiet.world.add_calls(1, agent_id=agent_id, created_at=created_at, status=status)[0]
        for status in statuses
    }
    quiet.sync(start_date=days_ago(5))
    moving = {calls[s]: s for s in (*MOVING_STATUSES, *UNDOCUMENTED_STATUSES)}
    revivable = {calls[s]: s for s in RETRYABLE_FINAL_STATUSES}
    assert followed(quiet.state) == {**moving, **revivable}  # type: ignore[arg-type]

    # Each followed call moves on (the moving ones end, auto-retry revives the others): the
    # next sync emits each of them once, and asks nothing about the calls final for good.
    quiet.world.clock_offset += 10 * MINUTE
    quiet.world.complete_pending(ids=list(moving), status="completed")
    quiet.world.retry_calls(list(revivable), after=dt.timedelta(0))
    quiet.api.clear_requests()
    again = quiet.sync()
    assert Counter(again.ids()) == Counter([*moving, *revivable])
    final_for_good = {calls[s] for s in TERMINAL_STATUSES}
    assert [r for r in by_id_requests(quiet.api) if r.path.split("/")[-1] in final_for_good] == []
    assert followed(quiet.state) == dict.fromkeys(revivable, "scheduled")  # type: ignore[arg-type]
