"""No call lost or left stale at the moving edge of a sync (against the fake API, real HTTP).

Calls that Bolna lists late, data that lands after a call turned final, a server clock that
disagrees with ours, an idle agent whose newest call is hours old, and calls that appear or
vanish while a window is paged. Every scenario ends with a sync that has nothing new, which
must emit nothing (append-only targets must not fill with copies). With 1 and 4 workers.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from collections import Counter

import pytest

from tap_bolna.windows import parse_timestamp
from tests.conftest import API_KEY, make_config, partitions, run_tap
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import SyncResult

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


class Edge:
    """A fake account, its server, and the state carried from one sync to the next."""

    def __init__(self, world: World, api: FakeBolnaServer, max_workers: int) -> None:
        self.world, self.api, self.max_workers = world, api, max_workers
        self.state: dict[str, t.Any] | None = None
        self.emitted: Counter[str] = Counter()

    def sync(self, **config: t.Any) -> SyncResult:
        """One incremental sync from the last state; every emitted id is counted."""
        result = run_tap(make_config(self.api, max_workers=self.max_workers, **config), self.state)
        self.state = result.final_state
        self.emitted.update(result.ids())
        return result

    def server_now(self) -> dt.datetime:
        return self.world.server_now()

    def assert_each_listed_call_emitted_once(self, completed: t.Iterable[str] = ()) -> None:
        """Every listed call emitted once; a call first emitted pending, once more when final."""
        listed = set(self.world.executions) - self.world.hidden_ids()
        assert set(self.emitted) == listed, "a call was never emitted"
        expected = {call_id: 2 if call_id in set(completed) else 1 for call_id in listed}
        assert {i: n for i, n in self.emitted.items() if n != expected[i]} == {}


@pytest.fixture
def edge(max_workers: int) -> Iterator[Edge]:
    """One agent, 400 calls over 20 days (dense enough for several pages a window)."""
    world = World.generate(seed=31, agents=1, calls=400, days=20, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        yield Edge(world, api, max_workers)


def start_date(edge: Edge) -> str:
    return (edge.server_now() - dt.timedelta(days=21)).isoformat()


@pytest.mark.parametrize("late_minutes", [1, 30, 59])
def test_calls_listed_late_are_emitted_by_the_next_sync(edge: Edge, late_minutes: int) -> None:
    agent = edge.world.agent_ids[0]
    created = edge.server_now() - late_minutes * MINUTE
    # Listed late, interleaved with calls the first sync sees at the same moments.
    seen = edge.world.add_calls(3, agent_id=agent, created_at=created)
    late = edge.world.add_calls(3, agent_id=agent, created_at=created, hidden=True)
    late += edge.world.add_calls(2, agent_id=agent, created_at=created - MINUTE / 2, hidden=True)
    first = edge.sync(start_date=start_date(edge))
    assert set(seen) <= set(first.ids())
    assert not set(late) & set(first.ids())

    edge.world.reveal()
    second = edge.sync(start_date=start_date(edge))
    assert sorted(second.ids()) == sorted(late)

    assert edge.sync(start_date=start_date(edge)).ids() == [], "a sync with nothing new"
    edge.assert_each_listed_call_emitted_once()


def test_calls_listed_late_are_emitted_however_long_until_the_next_sync(edge: Edge) -> None:
    agent = edge.world.agent_ids[0]
    late = edge.world.add_calls(2, agent_id=agent, created_at=edge.server_now() - 45 * MINUTE,
                                hidden=True)  # fmt: skip
    edge.sync(start_date=start_date(edge))
    edge.world.reveal()
    edge.world.clock_offset += 6 * HOUR  # the next scheduled run comes six hours later
    new = edge.world.add_calls(2, agent_id=agent)

    assert sorted(edge.sync().ids()) == sorted(late + new)
    assert edge.sync().ids() == []
    edge.assert_each_listed_call_emitted_once()


def test_data_filled_in_after_a_call_turned_final_is_emitted(edge: Edge) -> None:
    agent = edge.world.agent_ids[0]
    (call_id,) = edge.world.add_calls(1, agent_id=agent, created_at=edge.server_now() - 25 * MINUTE,
                                      status="completed")  # fmt: skip
    edge.world.update_calls([call_id], extracted_data=None)
    first = edge.sync(start_date=start_date(edge))
    assert {r["id"]: r for r in first.records()}[call_id]["extracted_data"] is None

    # Post-call processing lands 20 minutes later: same status, new updated_at.
    edge.world.clock_offset += 20 * MINUTE
    extracted = {"user_interested": True, "preferred_slot": "2 PM"}
    edge.world.update_calls([call_id], extracted_data=extracted)
    second = edge.sync()
    assert [(r["id"], r["status"], r["extracted_data"]) for r in second.records()] == [
        (call_id, "completed", extracted)
    ]
    assert edge.sync().ids() == []


def test_late_calls_after_an_idle_agents_newest_call_are_emitted(max_workers: int) -> None:
    # The agent's last visible call is 5 hours old; one created 3 hours ago is listed late.
    world = World.generate(seed=32, agents=1, calls=50, days=5, pending_fraction=0)
    agent = world.agent_ids[0]
    now = world.server_now()
    for call_id, call in list(world.executions.items()):
        if parse_timestamp(call["created_at"]) > now - 5 * HOUR:
            world.remove_calls([call_id])
    world.add_calls(1, agent_id=agent, created_at=now - 5 * HOUR)
    late = world.add_calls(2, agent_id=agent, created_at=now - 3 * HOUR, hidden=True)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        edge.sync(start_date=(now - dt.timedelta(days=6)).isoformat())
        world.reveal()
        assert sorted(edge.sync().ids()) == sorted(late)
        assert edge.sync().ids() == []
        edge.assert_each_listed_call_emitted_once()


@pytest.mark.parametrize("offset_minutes", [-10, 10])
def test_a_server_clock_that_disagrees_with_ours_loses_nothing(
    max_workers: int, offset_minutes: int
) -> None:
    offset = offset_minutes * MINUTE
    world = World.generate(seed=33, agents=2, calls=300, days=10, clock_offset=offset)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        first = edge.sync(start_date=(world.server_now() - dt.timedelta(days=11)).isoformat())
        for partition in partitions(first.final_state).values():
            synced = parse_timestamp(partition["replication_key_value"])
            assert abs(synced - world.server_now()) < MINUTE, "bookmarks are on Bolna's clock"
        # Calls created right after the first sync, stamped by Bolna's clock.
        new = world.add_calls(6)
        completed = world.complete_pending()
        second = edge.sync()
        assert set(second.ids()) == set(new) | set(completed)
        assert edge.sync().ids() == []
        edge.assert_each_listed_call_emitted_once(completed)


def test_lookback_zero_still_follows_calls_newer_than_the_newest_seen(max_workers: int) -> None:
    world = World.generate(seed=34, agents=1, calls=60, days=5, pending_fraction=0)
    agent = world.agent_ids[0]
    newest = max(parse_timestamp(c["created_at"]) for c in world.executions.values())
    before_newest = world.add_calls(1, agent_id=agent, created_at=newest - MINUTE, hidden=True)
    after_newest = world.add_calls(1, agent_id=agent, created_at=newest + MINUTE / 2, hidden=True)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        config = {"start_date": (newest - dt.timedelta(days=6)).isoformat(), "lookback_minutes": 0}
        edge.sync(**config)
        world.reveal()
        second = edge.sync(**config)
    # The documented trade-off: without a look-back a call listed late is emitted only if it
    # is newer than the newest call the previous sync saw.
    assert second.ids() == after_newest
    assert before_newest[0] not in edge.emitted


@pytest.fixture
def one_window(max_workers: int) -> Iterator[Edge]:
    """One agent, 200 calls in the last 5 days: one window of 4 pages."""
    world = World.generate(seed=36, agents=1, calls=200, days=5, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        yield Edge(world, api, max_workers)


@pytest.mark.parametrize("page", [2, 4])
def test_calls_inserted_while_a_window_is_paged_are_not_lost_nor_doubled(
    one_window: Edge, page: int
) -> None:
    edge = one_window
    agent = edge.world.agent_ids[0]
    now = edge.server_now()
    inserted: list[str] = []

    def insert() -> None:  # listed between two page requests, onto page 1 (already read)
        inserted.extend(edge.world.add_calls(2, agent_id=agent, created_at=now - 2 * HOUR))

    edge.api.before_request(insert, path_contains="/executions", page_number=page)
    first = edge.sync(start_date=(now - dt.timedelta(days=6)).isoformat())
    windows = {(r.query["from"], r.query["to"]) for r in edge.api.requests if "from" in r.query}
    assert len(windows) == 1, "the calls were inserted into the window being paged"
    assert len(first.ids()) == len(set(first.ids())), "a call was emitted twice"
    assert set(inserted) <= set(first.ids()), "a call inserted while paging was lost"
    assert edge.sync().ids() == []
    edge.assert_each_listed_call_emitted_once()


def test_calls_that_vanish_while_a_window_is_paged_lose_no_other_call(one_window: Edge) -> None:
    edge = one_window
    now = edge.server_now()
    newest_first = sorted(edge.world.executions.values(), key=lambda c: c["created_at"])[::-1]
    removed = [newest_first[0]["id"]]  # on page 1, already read: every later call moves up

    edge.api.before_request(
        lambda: edge.world.remove_calls(removed), path_contains="/executions", page_number=2
    )
    first = edge.sync(start_date=(now - dt.timedelta(days=6)).isoformat())
    ids = first.ids()
    assert len(ids) == len(set(ids))
    assert {c["id"] for c in newest_first} - set(removed) <= set(ids), "a call was skipped"


def test_a_sync_with_nothing_new_costs_at_most_two_requests_per_agent(max_workers: int) -> None:
    # One active agent, and one idle agent whose newest call is 10 days old.
    world = World.generate(seed=35, agents=2, calls=200, days=20, pending_fraction=0)
    idle = world.agent_ids[1]
    now = world.server_now()
    world.remove_calls(
        [
            i
            for i, c in world.executions.items()
            if c["agent_id"] == idle
            and parse_timestamp(c["created_at"]) > now - dt.timedelta(days=10)
        ]
    )
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        edge.sync(start_date=(now - dt.timedelta(days=21)).isoformat())
        api.clear_requests()
        assert edge.sync().ids() == []
        requests = [r for r in api.requests if r.path.endswith("/executions")]
    by_agent = Counter(r.path.split("/")[3] for r in requests)
    assert by_agent[world.agent_ids[0]] == 1
    assert by_agent[idle] == 1, "an idle agent is read again one week back: one window"


def test_state_from_before_the_lookback_emits_no_copies_and_gains_the_new_fields(
    edge: Edge,
) -> None:
    first = edge.sync(start_date=start_date(edge))
    old = first.final_state
    for partition in old["bookmarks"]["executions"]["partitions"]:
        partition.pop("newest_created_at")
        partition.pop("recent_calls")
        for call in partition["pending_calls"].values():
            call.pop("updated_at")
    edge.state = old
    new = edge.world.add_calls(2)

    second = edge.sync()
    assert sorted(second.ids()) == sorted(new)
    (partition,) = partitions(second.final_state).values()
    assert {"newest_created_at", "recent_calls"} <= set(partition)
    assert edge.sync().ids() == []


def test_state_from_before_the_lookback_follows_its_pending_calls_to_the_end(
    max_workers: int,
) -> None:
    # The state above, from a world with calls still moving when it was written.
    world = World.generate(seed=37, agents=1, calls=200, days=10, pending_fraction=0.2)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        edge = Edge(world, api, max_workers)
        edge.sync(start_date=(world.server_now() - dt.timedelta(days=11)).isoformat())
        assert edge.state is not None
        (old,) = edge.state["bookmarks"]["executions"]["partitions"]
        pending = sorted(world.pending_ids())
        assert len(pending) >= 10
        assert set(pending) <= set(old["pending_calls"])
        old.pop("newest_created_at")
        old.pop("recent_calls")
        for call in old["pending_calls"].values():
            call.pop("updated_at")

        world.clock_offset += 10 * MINUTE
        completed = world.complete_pending(ids=pending[: len(pending) // 2])
        new = world.add_calls(2)
        second = edge.sync()
        assert sorted(second.ids()) == sorted([*completed, *new])
        (partition,) = partitions(edge.state).values()
        still_moving = set(pending) - set(completed)
        assert still_moving <= set(partition["pending_calls"])
        assert all("updated_at" in partition["pending_calls"][i] for i in still_moving)

        world.clock_offset += 10 * MINUTE
        rest = world.complete_pending(ids=still_moving)
        assert sorted(edge.sync().ids()) == sorted(rest)
        assert edge.sync().ids() == []
