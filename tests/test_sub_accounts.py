"""Agencies: a parent key and its sub-accounts, synced in one run against the fake API."""

from __future__ import annotations

import datetime as dt
import logging
import typing as t
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import API_KEY, make_config, run_tap, run_tap_cli
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import SyncResult
    from tests.fake_api.server import SubAccount

START = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=9)).replace(microsecond=0)


@dataclass
class Agency:
    """A parent account with three sub-accounts, each its own world behind its own key."""

    world: World
    api: FakeBolnaServer
    subs: list[SubAccount]
    max_workers: int

    def config(self, **overrides: t.Any) -> dict[str, t.Any]:
        """Every account, from START."""
        settings = {
            "max_workers": self.max_workers,
            "include_sub_accounts": True,
            "start_date": START.isoformat(),
            **overrides,
        }
        return make_config(self.api, **settings)

    def worlds(self) -> dict[str | None, World]:
        """Each account's world by sub_account_id (None: the parent)."""
        return {None: self.world, **{sub.id: sub.world for sub in self.subs}}


def sub_world(seed: int) -> World:
    """A small sub-account: 2 agents, 60 calls over 8 days, none still pending."""
    return World.generate(seed=seed, agents=2, calls=60, days=8, pending_fraction=0)


@pytest.fixture
def agency(max_workers: int) -> Iterator[Agency]:
    """Parent (2 agents, 80 calls) + 3 sub-accounts."""
    world = World.generate(seed=5, agents=2, calls=80, days=8, pending_fraction=0)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        subs = [api.add_sub_account(sub_world(40 + n), name=f"client-{n}") for n in range(3)]
        yield Agency(world, api, subs, max_workers)


def listed_calls(world: World) -> set[str]:
    """Every call the fake lists for a world."""
    with world.lock:
        return {call_id for call_id in world.executions if world.is_listed(call_id)}


def calls_by_account(result: SyncResult) -> dict[str | None, list[str]]:
    """Emitted execution ids per sub_account_id (duplicates kept)."""
    found: dict[str | None, list[str]] = {}
    for record in result.records():
        found.setdefault(record["sub_account_id"], []).append(record["id"])
    return found


def assert_every_call_once(agency: Agency, result: SyncResult) -> None:
    """Each account's calls, each once, tagged with that account."""
    found = calls_by_account(result)
    for sub_account_id, world in agency.worlds().items():
        ids = found.get(sub_account_id, [])
        assert len(ids) == len(set(ids)), f"duplicates in {sub_account_id}"
        assert set(ids) == listed_calls(world), sub_account_id


def test_every_call_of_every_account_once_then_only_new_ones(agency: Agency) -> None:
    first = run_tap(agency.config())
    assert_every_call_once(agency, first)
    assert len(first.records()) == 80 + 3 * 60
    # Agents and batches say whose they are too.
    agents = {r["id"]: r["sub_account_id"] for r in first.records("agents")}
    for sub_account_id, world in agency.worlds().items():
        for agent_id in world.agent_ids:
            assert agents[agent_id] == sub_account_id
    for batch in first.records("batches"):
        owner = next(
            sid for sid, world in agency.worlds().items() if batch["agent_id"] in world.agents
        )
        assert batch["sub_account_id"] == owner
    # Two accounts never share a bookmark: the account is part of each partition's context.
    contexts = [p["context"] for p in first.final_state["bookmarks"]["executions"]["partitions"]]
    for sub_account_id, world in agency.worlds().items():
        for agent_id in world.agent_ids:
            expected = {"agent_id": agent_id}
            if sub_account_id is not None:
                expected["sub_account_id"] = sub_account_id
            assert expected in contexts

    new = {sid: set(world.add_calls(3)) for sid, world in agency.worlds().items()}
    second = run_tap(agency.config(), state=first.final_state)
    found = calls_by_account(second)
    assert {sid: set(ids) for sid, ids in found.items()} == new
    assert sum(len(ids) for ids in found.values()) == 4 * 3


def test_each_account_is_read_with_its_own_key(agency: Agency) -> None:
    run_tap(agency.config())
    owner = {
        agent_id: sid for sid, world in agency.worlds().items() for agent_id in world.agent_ids
    }
    for request in agency.api.requests:
        assert request.status == 200, request
        if "/executions" in request.path and request.path.startswith("/v2/agent/"):
            agent_id = request.path.split("/")[3]
            assert request.sub_account_id == owner[agent_id], request
        if request.path.startswith("/sub-accounts/"):
            assert request.sub_account_id is None  # only the parent key lists and sums them


@pytest.mark.parametrize("max_workers", [1], ids=["sequential"])  # subprocesses: slow
def test_no_key_anywhere_the_tap_writes_even_at_debug(agency: Agency, tmp_path: Path) -> None:
    keys = [sub.api_key for sub in agency.subs]
    assert all(key.startswith("sa-") for key in keys)
    first = run_tap_cli(tmp_path, agency.config(), env={"TAP_BOLNA_LOGLEVEL": "DEBUG"})
    assert first.returncode == 0, first.stderr[-2000:]
    assert "| DEBUG" in first.stderr
    agency.world.add_calls(2)
    second = run_tap_cli(
        tmp_path, agency.config(), state=first.final_state, env={"TAP_BOLNA_LOGLEVEL": "DEBUG"}
    )
    tested = run_tap_cli(tmp_path, agency.config(), "--test", env={"TAP_BOLNA_LOGLEVEL": "DEBUG"})
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert "3 sub-accounts" in tested.stderr
    for result in (first, second, tested):
        for key in keys:
            assert key not in result.raw_stdout
            assert key not in result.stderr
            assert key.removeprefix("sa-") not in result.raw_stdout + result.stderr
    assert first.records("sub_accounts")
    for row in first.records("sub_accounts"):
        assert "api_key" not in row


def test_sub_accounts_rows(agency: Agency) -> None:
    result = run_tap(agency.config())
    rows = {row["id"]: row for row in result.records("sub_accounts")}
    assert set(rows) == {sub.id for sub in agency.subs}
    for sub in agency.subs:
        assert rows[sub.id]["name"] == sub.name
        assert rows[sub.id]["max_concurrency"] == sub.max_concurrency
        assert rows[sub.id]["organization_id"]


def day_usage(agency: Agency, sub: SubAccount, day: dt.date) -> dict[str, t.Any]:
    """What the fake itself sums for one sub-account and UTC day."""
    usage = agency.api.usage_of(
        sub.id, f"{day.isoformat()}T00:00:00.000000Z", f"{day.isoformat()}T23:59:59.999999Z"
    )
    usage.pop("from")
    usage.pop("to")
    return {**usage, "date": day.isoformat()}


def test_usage_rows_equal_what_the_fake_computes(agency: Agency) -> None:
    result = run_tap(agency.config())
    rows = {
        (row["sub_account_id"], row["date"]): row for row in result.records("sub_account_usage")
    }
    assert len(rows) == len(result.records("sub_account_usage"))  # one row per account and day
    today = dt.datetime.now(dt.timezone.utc).date()
    expected = {}
    day = START.date()
    while day <= today:
        for sub in agency.subs:
            usage = day_usage(agency, sub, day)
            if usage["total_records"]:
                expected[(sub.id, day.isoformat())] = usage
        day += dt.timedelta(days=1)
    assert expected
    assert rows == expected
    assert sum(row["total_records"] for row in rows.values()) == 3 * 60
    # Every usage request within Bolna's 32-day limit, and from the parent key.
    usage_requests = [r for r in agency.api.requests if r.path == "/sub-accounts/all/usage"]
    assert all(r.status == 200 for r in usage_requests)
    assert result.final_state["bookmarks"]["sub_account_usage"]["replication_key_value"] == (
        today.isoformat()
    )


def test_usage_reads_the_last_days_again_and_converges(agency: Agency) -> None:
    first = run_tap(agency.config())
    sub = agency.subs[0]
    agent_id = sub.world.agent_ids[0]
    sub.world.add_calls(4, agent_id=agent_id)  # today's usage moves
    agency.api.clear_requests()
    second = run_tap(agency.config(), state=first.final_state)
    today = dt.datetime.now(dt.timezone.utc).date()
    rows = second.records("sub_account_usage")
    assert {row["date"] for row in rows} <= {
        (today - dt.timedelta(days=n)).isoformat() for n in range(4)
    }
    latest = {(r["sub_account_id"], r["date"]): r for r in rows}
    assert latest[(sub.id, today.isoformat())] == day_usage(agency, sub, today)
    # A no-change stretch costs one probe plus a request per day re-read, not the history.
    usage_requests = [r for r in agency.api.requests if r.path == "/sub-accounts/all/usage"]
    assert len(usage_requests) <= 1 + 4


def test_a_sub_account_added_between_syncs_is_picked_up(agency: Agency) -> None:
    first = run_tap(agency.config())
    late = agency.api.add_sub_account(sub_world(77), name="late-client")
    second = run_tap(agency.config(), state=first.final_state)
    found = calls_by_account(second)
    assert set(found) == {late.id}
    assert set(found[late.id]) == listed_calls(late.world)
    assert late.id in {row["id"] for row in second.records("sub_accounts")}


def test_a_refused_key_is_one_warning_and_the_others_load(
    agency: Agency, caplog: pytest.LogCaptureFixture
) -> None:
    refused = agency.subs[1]
    agency.api.revoke_sub_account_key(refused.id)
    with caplog.at_level(logging.WARNING):
        result = run_tap(agency.config())
    found = calls_by_account(result)
    assert refused.id not in found
    for sub_account_id, world in agency.worlds().items():
        if sub_account_id != refused.id:
            assert set(found[sub_account_id]) == listed_calls(world)
    warnings = [r.getMessage() for r in caplog.records if refused.id in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "refused the key" in warnings[0]
    assert refused.api_key not in caplog.text
    # Nothing more was sent with the refused key after its first refusal.
    refused_requests = [r for r in agency.api.requests if r.status == 403]
    assert len(refused_requests) == 1


def test_a_deleted_sub_account_is_no_longer_synced(agency: Agency) -> None:
    first = run_tap(agency.config())
    gone = agency.subs[0]
    agency.api.remove_sub_account(gone.id)
    for world in agency.worlds().values():
        world.add_calls(1)
    second = run_tap(agency.config(), state=first.final_state)
    found = calls_by_account(second)
    assert gone.id not in found
    assert sorted(found, key=str) == sorted([None, *(sub.id for sub in agency.subs[1:])], key=str)


def test_only_the_configured_sub_accounts(agency: Agency, caplog: pytest.LogCaptureFixture) -> None:
    wanted = agency.subs[2].id
    with caplog.at_level(logging.WARNING):
        result = run_tap(agency.config(sub_account_ids=[wanted, "no-such-sub-account"]))
    assert set(calls_by_account(result)) == {None, wanted}
    assert {row["id"] for row in result.records("sub_accounts")} == {wanted}
    assert {row["sub_account_id"] for row in result.records("sub_account_usage")} == {wanted}
    assert "no-such-sub-account" in caplog.text


def test_state_written_without_sub_accounts_keeps_working(agency: Agency) -> None:
    before = run_tap(agency.config(include_sub_accounts=False))
    assert set(calls_by_account(before)) == {None}
    assert not before.records("sub_accounts")
    assert not before.records("sub_account_usage")
    assert not [r for r in agency.api.requests if r.path.startswith("/sub-accounts/")]
    after = run_tap(agency.config(), state=before.final_state)
    found = calls_by_account(after)
    assert None not in found  # the parent's bookmarks still match: nothing read again
    assert set(found) == {sub.id for sub in agency.subs}


@pytest.mark.parametrize("max_workers", [1], ids=["sequential"])  # subprocesses: slow
def test_sub_account_ids_need_include_sub_accounts(agency: Agency, tmp_path: Path) -> None:
    config = agency.config(include_sub_accounts=False, sub_account_ids=[agency.subs[0].id])
    result = run_tap_cli(tmp_path, config)
    assert result.returncode == 1
    assert "sub_account_ids is set but include_sub_accounts is not" in result.stderr


@pytest.mark.parametrize("max_workers", [1], ids=["sequential"])
def test_fake_api_keys_see_only_their_own_account(agency: Agency) -> None:
    url = agency.api.url
    sub = agency.subs[0]

    def get(path: str, key: str) -> requests.Response:
        return requests.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    listed = get("/sub-accounts/all", API_KEY).json()
    assert {item["id"]: item["api_key"] for item in listed}[sub.id] == sub.api_key
    assert get("/sub-accounts/all", sub.api_key).status_code == 403
    assert get(f"/sub-accounts/{sub.id}/usage", sub.api_key).status_code == 403
    sub_agent = sub.world.agent_ids[0]
    assert get(f"/v2/agent/{sub_agent}", API_KEY).status_code == 404
    assert get(f"/v2/agent/{sub_agent}", sub.api_key).status_code == 200
    assert get(f"/v2/agent/{agency.world.agent_ids[0]}", sub.api_key).status_code == 404
    assert {a["id"] for a in get("/v2/agent/all", sub.api_key).json()} == set(sub.world.agents)
    usage = get("/sub-accounts/all/usage", API_KEY)  # from/to optional: this month to today
    assert usage.status_code == 200
    assert {row["sub_account_id"] for row in usage.json()} == {s.id for s in agency.subs}
    too_long = "?from=2026-01-01T00:00:00Z&to=2026-02-02T00:00:01Z"
    assert get("/sub-accounts/all/usage" + too_long, API_KEY).status_code == 400
    within = "?from=2026-01-01T00:00:00Z&to=2026-02-01T23:59:59.999999Z"
    assert get(f"/sub-accounts/{sub.id}/usage" + within, API_KEY).status_code == 200
    agency.api.remove_sub_account(sub.id)
    assert get("/v2/agent/all", sub.api_key).status_code == 403
    assert get(f"/sub-accounts/{sub.id}/usage", API_KEY).status_code == 404
