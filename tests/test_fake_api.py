"""Tests of the fake Bolna API itself: if it drifts from the live API, tap tests prove nothing."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.fake_api import (
    DEFAULT_RATE_LIMITS,
    FINAL_STATUSES,
    MOVING_STATUSES,
    PENDING_STATUSES,
    RETRYABLE_FINAL_STATUSES,
    TERMINAL_STATUSES,
    UNDOCUMENTED_STATUSES,
    FakeBolnaServer,
    RateLimit,
    World,
)
from tests.fake_api.world import format_timestamp, parse_timestamp

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
KEY = "test-key"
REPO = Path(__file__).resolve().parent.parent
# The shared world's last seven days, both ends inclusive.
LAST_WEEK = {"from": format_timestamp(NOW - timedelta(days=7)), "to": format_timestamp(NOW)}
# All of a `small_world`'s history and the calls added to it: seven days, both ends inclusive.
WHOLE_WINDOW = {
    "from": format_timestamp(NOW - timedelta(days=6)),
    "to": format_timestamp(NOW + timedelta(days=1)),
}
EMPTY_COST = {"llm": 0.0, "network": 0.0, "platform": 0.0, "synthesizer": 0.0, "transcriber": 0.0}


def make_world(**overrides) -> World:
    options = {"seed": 7, "agents": 3, "calls": 900, "days": 30, "now": NOW}
    options.update(overrides)
    return World.generate(**options)


def small_world(**overrides) -> World:
    """Five days of history and a clock an hour after it, so `WHOLE_WINDOW` lists every call."""
    world = make_world(**{"calls": 90, "days": 5, **overrides})
    world.clock = lambda: NOW + timedelta(hours=1)
    return world


@pytest.fixture(scope="module")
def shared_world() -> World:
    """Read-only world shared by the tests that do not change anything."""
    return make_world(pending_fraction=0.2)


@pytest.fixture(scope="module")
def shared_api(shared_world):
    with FakeBolnaServer(shared_world, api_key=KEY) as api:
        yield api


@pytest.fixture
def api(shared_api):
    shared_api.clear_requests()
    return shared_api


@pytest.fixture
def session():
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        yield http


def executions_url(api, agent_id: str) -> str:
    return f"{api.url}/v2/agent/{agent_id}/executions"


def newest_first(world: World, agent_id: str) -> list[dict]:
    """An agent's listed calls, newest `created_at` first (to pick window bounds from)."""
    calls = [
        call
        for call in world.executions.values()
        if call["agent_id"] == agent_id and world.is_listed(call["id"])
    ]
    return sorted(calls, key=lambda call: (call["created_at"], call["id"]), reverse=True)


def by_last_run(calls: list[dict]) -> list[dict]:
    """The list order Bolna calls "sorted by last run": newest `updated_at` first, ties by id."""
    return sorted(calls, key=lambda call: (call["updated_at"], call["id"]), reverse=True)


def listed_in(world: World, agent_id: str, window: dict[str, str]) -> list[dict]:
    """What the executions endpoint should list for `window`, in its order."""
    low, high = parse_timestamp(window["from"]), parse_timestamp(window["to"])
    return by_last_run(
        [
            call
            for call in newest_first(world, agent_id)
            if low <= parse_timestamp(call["created_at"]) <= high
        ]
    )


def ids_of(calls: list[dict]) -> list[str]:
    return [call["id"] for call in calls]


def fetch_all(session, url: str, **params) -> tuple[list[dict], list[dict]]:
    """Every call and every envelope (without data), following has_more."""
    calls, envelopes, page = [], [], 1
    while True:
        response = session.get(url, params={**params, "page_number": page})
        assert response.status_code == 200, response.text
        body = response.json()
        calls.extend(body.pop("data"))
        envelopes.append(body)
        if not body["has_more"]:
            return calls, envelopes
        page += 1


# ---------------------------------------------------------------- paging and ordering


def test_pages_reach_every_call_of_the_window_once_by_last_run(api, shared_world, session):
    agent_id = shared_world.agent_ids[1]
    expected = listed_in(shared_world, agent_id, LAST_WEEK)
    pages = -(-len(expected) // 20)

    calls, envelopes = fetch_all(session, executions_url(api, agent_id), **LAST_WEEK)

    assert ids_of(calls) == ids_of(expected)
    assert len(expected) > 60
    # Bolna lists "by last run": the window is not in created_at order.
    assert ids_of(expected) != ids_of(newest_first(shared_world, agent_id)[: len(expected)])
    assert {env["total"] for env in envelopes} == {len(expected)}
    assert [env["page_number"] for env in envelopes] == list(range(1, pages + 1))
    assert [env["has_more"] for env in envelopes] == [True] * (pages - 1) + [False]
    assert all(env["page_size"] == 20 for env in envelopes)


def test_page_past_the_end_is_empty_and_default_page_size_is_20(api, shared_world, session):
    url = executions_url(api, shared_world.agent_ids[0])
    in_window = len(listed_in(shared_world, shared_world.agent_ids[0], LAST_WEEK))

    beyond = session.get(url, params={**LAST_WEEK, "page_number": 99, "page_size": 50}).json()
    first = session.get(url, params=LAST_WEEK).json()

    assert beyond["data"] == []
    assert beyond["has_more"] is False
    assert beyond["total"] == in_window > 20
    assert (first["page_size"], len(first["data"]), first["has_more"]) == (20, 20, True)


def test_ties_on_updated_at_are_ordered_by_id_and_stable():
    world = small_world()
    agent_id = world.agent_ids[0]
    tied = world.add_calls(5, agent_id=agent_id, created_at=NOW - timedelta(hours=1))
    world.update_calls(tied, extracted_data={"user_interested": True})  # one instant for all
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        params = {**WHOLE_WINDOW, "page_size": 2}
        runs = [fetch_all(session, executions_url(api, agent_id), **params)[0] for _ in "ab"]

    first_run, second_run = (ids_of(run) for run in runs)
    assert len({world.executions[call_id]["updated_at"] for call_id in tied}) == 1
    assert first_run[:5] == sorted(tied, reverse=True)
    assert first_run == ids_of(listed_in(world, agent_id, WHOLE_WINDOW))
    assert second_run == first_run


def test_a_changed_call_moves_to_the_top_of_its_window_and_paging_stays_stable():
    world = small_world(pending_fraction=0.5)
    agent_id = world.agent_ids[1]
    oldest_pending = [
        c for c in reversed(newest_first(world, agent_id)) if c["status"] in PENDING_STATUSES
    ][:3]
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        params = {**WHOLE_WINDOW, "page_size": 7}
        before, again = (ids_of(fetch_all(session, url, **params)[0]) for _ in "ab")
        version = world.version
        changed = world.complete_pending(ids=ids_of(oldest_pending))
        after, after_envelopes = fetch_all(session, url, **params)
        world.list_order = "created_at"
        by_created, _ = fetch_all(session, url, **params)

    assert again == before
    assert world.version > version
    assert len(changed) == 3
    # Completed just now: the three oldest calls are the newest runs, most recent id first.
    assert ids_of(after)[:3] == sorted(changed, reverse=True)
    assert ids_of(after) == ids_of(listed_in(world, agent_id, WHOLE_WINDOW))
    assert sorted(ids_of(after)) == sorted(before)
    assert {env["total"] for env in after_envelopes} == {len(before)}
    assert ids_of(by_created) == ids_of(newest_first(world, agent_id))


def test_a_call_by_id_is_the_same_object_as_in_the_list(api, shared_world, session):
    agent_id = shared_world.agent_ids[0]
    listed = session.get(executions_url(api, agent_id), params={**LAST_WEEK, "page_size": 50})
    sample = listed.json()["data"][::10]

    by_id = [session.get(f"{api.url}/executions/{call['id']}").json() for call in sample]

    assert len(sample) == 5
    assert by_id == sample
    assert {call["status"] for call in sample} <= set(PENDING_STATUSES + FINAL_STATUSES)


# ---------------------------------------------------------------- from / to


def test_from_and_to_are_inclusive_at_both_ends(api, shared_world, session):
    agent_id = shared_world.agent_ids[2]
    ordered = newest_first(shared_world, agent_id)
    newest_in, oldest_in = ordered[40], ordered[80]
    params = {"from": oldest_in["created_at"], "to": newest_in["created_at"], "page_size": 50}

    calls, envelopes = fetch_all(session, executions_url(api, agent_id), **params)

    assert ids_of(calls) == ids_of(by_last_run(ordered[40:81]))
    assert envelopes[0]["total"] == 41


def test_bounds_compare_at_full_precision(api, shared_world, session):
    agent_id = shared_world.agent_ids[2]
    ordered = newest_first(shared_world, agent_id)
    newest_in, oldest_in = ordered[40], ordered[80]
    one_us = timedelta(microseconds=1)
    params = {
        "from": format_timestamp(parse_timestamp(oldest_in["created_at"]) + one_us),
        "to": format_timestamp(parse_timestamp(newest_in["created_at"]) - one_us),
        "page_size": 50,
    }

    calls, _ = fetch_all(session, executions_url(api, agent_id), **params)

    assert ids_of(calls) == ids_of(by_last_run(ordered[41:80]))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-02-20T00:00:00Z", "2026-02-27T00:00:00Z"),
        ("2026-02-20T00:00:00+00:00", "2026-02-27T00:00:00.000+00:00"),
        ("2026-02-20T05:30:00+05:30", "2026-02-26T19:00:00.000000-05:00"),
    ],
)
def test_iso_spellings_of_the_same_window_select_the_same_calls(
    api, shared_world, session, start, end
):
    agent_id = shared_world.agent_ids[0]
    low = datetime(2026, 2, 20, tzinfo=timezone.utc)
    high = datetime(2026, 2, 27, tzinfo=timezone.utc)
    expected = ids_of(
        listed_in(
            shared_world, agent_id, {"from": format_timestamp(low), "to": format_timestamp(high)}
        )
    )

    calls, _ = fetch_all(
        session, executions_url(api, agent_id), page_size=50, **{"from": start, "to": end}
    )

    assert 50 < len(expected) == len(calls)
    assert ids_of(calls) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"from": "2026-02-01T00:00:00Z", "to": "2026-02-09T00:00:00Z"},
            "Date range cannot exceed 7 days",
        ),
        (
            {"from": "2026-02-01T00:00:00Z", "to": "2026-02-08T00:00:00.000001Z"},
            "Date range cannot exceed 7 days",
        ),
        ({}, "Missing required query parameters: 'from' and 'to'"),
        ({"page_size": 50}, "Missing required query parameters: 'from' and 'to'"),
        ({"from": "2026-02-01T00:00:00Z"}, "Missing required query parameter: 'to'"),
        ({"to": "2026-02-01T00:00:00Z"}, "Missing required query parameter: 'from'"),
        ({"from": "", "to": "2026-02-01T00:00:00Z"}, "Invalid 'from'"),
        ({"from": "2026-02-08T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "earlier"),
        ({"from": "2026-02-01", "to": "2026-02-02"}, "Invalid 'from'"),
        ({"from": "2026-02-01T00:00:00", "to": "2026-02-02T00:00:00"}, "Invalid 'from'"),
        ({"from": "2026-02-30T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "Invalid 'from'"),
        ({**LAST_WEEK, "page_size": 51}, "page_size must be between 1 and 50"),
        ({**LAST_WEEK, "page_size": 0}, "page_size must be between 1 and 50"),
        ({**LAST_WEEK, "page_size": "ten"}, "page_size must be between 1 and 50"),
        ({**LAST_WEEK, "page_number": 0}, "page_number"),
        ({**LAST_WEEK, "status": "done"}, "status"),
    ],
)
def test_invalid_queries_are_rejected_with_400(api, shared_world, session, params, message):
    response = session.get(executions_url(api, shared_world.agent_ids[0]), params=params)

    assert response.status_code == 400
    assert message in response.json()["message"]
    assert api.requests[-1].status == 400


def test_exactly_seven_days_is_allowed(api, shared_world, session):
    params = {"from": "2026-02-01T00:00:00Z", "to": "2026-02-08T00:00:00Z", "page_size": 50}

    response = session.get(executions_url(api, shared_world.agent_ids[0]), params=params)

    assert response.status_code == 200
    assert response.json()["total"] > 0


def test_unencoded_plus_in_offset_is_rejected(api, shared_world):
    # A client that forgets to URL-encode "+00:00" sends a space; the API cannot parse it.
    path = f"/v2/agent/{shared_world.agent_ids[0]}/executions"
    query = "from=2026-02-01T00:00:00+00:00&to=2026-02-02T00:00:00+00:00"
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        connection.request("GET", f"{path}?{query}", headers={"Authorization": f"Bearer {KEY}"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 400
    assert "Invalid 'from'" in body["message"]


# ---------------------------------------------------------------- filters


def test_filters_match_counts_in_the_world(api, shared_world, session):
    agent_id = shared_world.agent_ids[0]
    mine = listed_in(shared_world, agent_id, LAST_WEEK)
    cases = {
        ("status", "completed"): [c for c in mine if c["status"] == "completed"],
        ("call_type", "inbound"): [
            c for c in mine if c["telephony_data"]["call_type"] == "inbound"
        ],
        ("provider", "plivo"): [c for c in mine if c["telephony_data"]["provider"] == "plivo"],
        ("answered_by_voice_mail", "true"): [c for c in mine if c["answered_by_voice_mail"]],
    }
    batch_id = next(c["batch_id"] for c in mine if c.get("batch_id"))
    cases["batch_id", batch_id] = [c for c in mine if c.get("batch_id") == batch_id]

    for (name, value), expected in cases.items():
        calls, envelopes = fetch_all(
            session, executions_url(api, agent_id), page_size=50, **LAST_WEEK, **{name: value}
        )
        assert 0 < len(expected) < len(mine), name
        assert ids_of(calls) == ids_of(expected), name
        assert envelopes[0]["total"] == len(expected)


# ---------------------------------------------------------------- auth and errors


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Token {KEY}", KEY])
def test_missing_or_wrong_key_gets_403_with_detail_and_no_key(api, shared_world, header):
    headers = {"Authorization": header} if header else {}
    with requests.Session() as anonymous:
        response = anonymous.get(executions_url(api, shared_world.agent_ids[0]), headers=headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid or expired API key"}
    assert "wrong-key" not in response.text
    assert KEY not in response.text
    assert api.requests[-1].status == 403


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/agent/00000000-0000-4000-8000-000000000000/executions", "Agent not found"),
        ("/v2/agent/00000000-0000-4000-8000-000000000000", "Agent not found"),
        ("/batches/00000000-0000-4000-8000-000000000000/all", "Agent not found"),
        ("/batches/0123456789abcdef0123456789abcdef/executions", "Batch not found"),
        ("/executions/00000000-0000-4000-8000-000000000000", "Execution not found"),
        ("/executions/00000000-0000-4000-8000-000000000000/log", "Execution not found"),
        ("/v1/nothing/here", "Not Found"),
    ],
)
def test_unknown_things_get_404_json(api, session, path, message):
    response = session.get(f"{api.url}{path}")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"] == message


def test_fail_next_429_sends_retry_after_then_recovers(api, shared_world, session):
    url = executions_url(api, shared_world.agent_ids[0])
    api.fail_next(2, 429, retry_after="7", path_contains="/executions")

    other = session.get(f"{api.url}/v2/agent/all")
    first, second, third = (session.get(url, params=LAST_WEEK) for _ in range(3))

    assert other.status_code == 200
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["Retry-After"] == "7"
    assert "message" in first.json()
    assert "Retry-After" not in third.headers
    assert [entry.status for entry in api.requests] == [200, 429, 429, 200]


def test_fail_next_html_error_page(api, session):
    api.fail_next(1, 502, html=True)

    response = session.get(f"{api.url}/user/me")

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html")


def test_reset_next_drops_the_connection_without_a_response(api, session):
    api.reset_next(1, path_contains="/user/me")

    with pytest.raises(requests.ConnectionError):
        session.get(f"{api.url}/user/me")
    after = session.get(f"{api.url}/user/me")

    assert after.status_code == 200
    assert [(entry.path, entry.status) for entry in api.requests] == [
        ("/user/me", 0),
        ("/user/me", 200),
    ]


def test_json_200_next_answers_the_given_body_then_the_real_one(api, session):
    api.json_200_next(1, [], path_contains="/phone-numbers/")

    assert session.get(f"{api.url}/user/me").json()["id"]  # not matching: the real answer
    assert session.get(f"{api.url}/phone-numbers/all").json() == []
    assert session.get(f"{api.url}/phone-numbers/all").json() == api.world.phone_numbers


def test_html_200_next_looks_like_a_proxy_page(api, session):
    api.html_200_next(1)

    response = session.get(f"{api.url}/v2/agent/all")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert session.get(f"{api.url}/v2/agent/all").headers["Content-Type"] == "application/json"


def test_requests_are_logged_with_query(api, shared_world, session):
    url = executions_url(api, shared_world.agent_ids[0])

    session.get(url, params={**LAST_WEEK, "page_size": 5, "page_number": 2})

    (entry,) = api.requests
    assert (entry.method, entry.path, entry.status) == (
        "GET",
        f"/v2/agent/{shared_world.agent_ids[0]}/executions",
        200,
    )
    assert entry.query == {**LAST_WEEK, "page_size": "5", "page_number": "2"}


def test_connections_are_kept_alive(api):
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        sockets = []
        for _ in range(3):
            connection.request("GET", "/user/me", headers={"Authorization": f"Bearer {KEY}"})
            response = connection.getresponse()
            response.read()
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert response.status == 200
    assert response.version == 11
    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)


# ---------------------------------------------------------------- data shapes


def test_generated_calls_mix_the_shapes_the_tap_must_accept(shared_world):
    calls = list(shared_world.executions.values())
    durations = Counter(type(c["telephony_data"]["duration"]).__name__ for c in calls)
    transfers = [c["transfer_call_data"] for c in calls if c["transfer_call_data"]]
    final = [c for c in calls if c["status"] in FINAL_STATUSES]

    assert durations["int"] > 200
    assert durations["str"] > 200
    text_durations = [c["telephony_data"]["duration"] for c in calls]
    assert all(value.isdigit() for value in text_durations if isinstance(value, str))
    assert {type(t["duration"]) for t in transfers} == {int, str}
    assert 20 < sum("conversation_time" in c for c in calls) < 100
    assert all(("conversation_time" in c) != ("conversation_duration" in c) for c in calls)
    assert 100 < sum(bool(c.get("batch_id")) for c in calls) < 300
    assert all(re.fullmatch(r"[0-9a-f]{32}", c["batch_id"]) for c in calls if c.get("batch_id"))
    assert set(Counter(c["status"] for c in final)) == set(FINAL_STATUSES)
    assert all(c["error_message"] for c in calls if c["status"] in ("failed", "error"))
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert all(stamp.fullmatch(c["created_at"]) and stamp.fullmatch(c["updated_at"]) for c in calls)
    assert all(c["updated_at"] >= c["created_at"] for c in calls)
    assert all(200 <= len(c["transcript"].encode()) <= 400 for c in calls if c["transcript"])
    recordings = [c for c in calls if c["telephony_data"]["recording_url"]]
    assert len(recordings) > 400
    assert all(
        c["telephony_data"]["recording_url"] == f"https://api.bolna.ai/recordings/call/{c['id']}"
        for c in recordings
    )
    # Some calls ran hours after they were created (scheduled ones, queued campaigns).
    assert any(
        parse_timestamp(c["updated_at"]) - parse_timestamp(c["created_at"]) > timedelta(hours=1)
        for c in final
    )


def test_status_lists_are_the_live_apis():
    assert set(MOVING_STATUSES) == {
        "scheduled",
        "prepared",
        "queued",
        "rescheduled",
        "initiated",
        "ringing",
        "in-progress",
        "call-disconnected",
    }
    assert set(RETRYABLE_FINAL_STATUSES) == {"no-answer", "busy", "failed", "error"}
    assert set(TERMINAL_STATUSES) == {"completed", "canceled", "stopped", "balance-low"}
    assert UNDOCUMENTED_STATUSES == ("transferring",)
    assert PENDING_STATUSES == MOVING_STATUSES + UNDOCUMENTED_STATUSES
    assert FINAL_STATUSES == TERMINAL_STATUSES + RETRYABLE_FINAL_STATUSES
    assert not set(PENDING_STATUSES) & set(FINAL_STATUSES)


def test_pending_calls_are_recent_unless_asked_for_old_ones():
    world = make_world(pending_fraction=0.3, old_pending=4)
    pending = [world.executions[call_id] for call_id in world.pending_ids()]
    ages = {call["id"]: NOW - parse_timestamp(call["created_at"]) for call in pending}
    old = [call for call in pending if ages[call["id"]] > timedelta(days=10)]

    assert len(world.executions) == 904
    assert all(call["status"] in PENDING_STATUSES for call in pending)
    assert all(call["transcript"] is None for call in pending)
    assert len(old) == 4
    assert all(timedelta(days=20) <= ages[call["id"]] <= timedelta(days=30) for call in old)
    # Old history never sits in call-disconnected (it lasts minutes) nor in prepared.
    assert not {"call-disconnected", "prepared"} & {call["status"] for call in old}
    assert len(pending) > 50


def test_recent_disconnected_calls_wait_for_post_call_processing(shared_world):
    calls = shared_world.executions.values()
    disconnected = [c for c in calls if c["status"] == "call-disconnected"]

    assert len(disconnected) > 5
    assert {c["id"] for c in disconnected} <= shared_world.pending_ids()
    assert all(NOW - parse_timestamp(c["created_at"]) <= timedelta(days=10) for c in disconnected)
    for call in disconnected:
        assert call.get("conversation_duration", call.get("conversation_time")) == 0
        assert (call["total_cost"], call["cost_breakdown"]) == (0, EMPTY_COST)
        assert call["transcript"] is call["extracted_data"] is None
        assert call["telephony_data"]["recording_url"] is None
        assert call["telephony_data"]["hangup_reason"]


def test_the_batch_scheduled_ahead_holds_prepared_calls(api, shared_world, session):
    agent_id = shared_world.agent_ids[0]
    batches = session.get(f"{api.url}/batches/{agent_id}/all").json()
    (upcoming,) = [b for b in batches if b["scheduled_at"] > format_timestamp(NOW)]
    members = session.get(f"{api.url}/batches/{upcoming['batch_id']}/executions").json()
    prepared = [c for c in shared_world.executions.values() if c["status"] == "prepared"]

    assert len(members) == 3
    assert {c["status"] for c in members} == {"prepared"}
    assert sorted(ids_of(members)) == sorted(ids_of(prepared))
    assert set(ids_of(members)) <= shared_world.pending_ids()
    assert (upcoming["status"], upcoming["execution_status"]) == ("scheduled", {"prepared": 3})
    assert all(upcoming["created_at"] < c["created_at"] for c in members)
    assert all(c["telephony_data"]["provider_call_id"] is None for c in members)


def test_same_seed_and_now_give_the_same_world_and_other_seeds_differ():
    first, second, other = make_world(), make_world(), make_world(seed=8)

    assert first.agent_ids == second.agent_ids
    assert json.dumps(first.executions) == json.dumps(second.executions)
    assert first.agent_ids != other.agent_ids
    assert all(re.fullmatch(r"[0-9a-f-]{36}", agent_id) for agent_id in first.agent_ids)


def test_batches_agree_with_the_calls_that_name_them(api, shared_world, session):
    agent_id = shared_world.agent_ids[0]
    batches = session.get(f"{api.url}/batches/{agent_id}/all").json()
    used = {
        c["batch_id"]
        for c in shared_world.executions.values()
        if c["agent_id"] == agent_id and c.get("batch_id")
    }

    assert used <= {batch["batch_id"] for batch in batches}
    for batch in batches:
        members = session.get(f"{api.url}/batches/{batch['batch_id']}/executions").json()
        assert all(call["batch_id"] == batch["batch_id"] for call in members)
        assert all(call["batch_run_details"]["status"] == call["status"] for call in members)
        assert sum(batch["execution_status"].values()) == len(members) == batch["valid_contacts"]
        assert {
            "humanized_created_at",
            "scheduled_at",
            "file_name",
            "total_contacts",
        } <= batch.keys()


def test_account_listings_are_bare_arrays_and_objects(api, shared_world, session):
    agents = session.get(f"{api.url}/v2/agent/all").json()
    one = session.get(f"{api.url}/v2/agent/{shared_world.agent_ids[1]}").json()
    numbers = session.get(f"{api.url}/phone-numbers/all").json()
    bases = session.get(f"{api.url}/knowledgebase/all").json()
    me = session.get(f"{api.url}/user/me").json()
    call_id = newest_first(shared_world, shared_world.agent_ids[1])[5]["id"]
    call = session.get(f"{api.url}/executions/{call_id}").json()
    log = session.get(f"{api.url}/executions/{call_id}/log").json()

    assert [agent["id"] for agent in agents] == shared_world.agent_ids
    assert one == agents[1]
    assert {
        "agent_name",
        "agent_status",
        "tasks",
        "agent_prompts",
        "ingest_source_config",
    } <= one.keys()
    assert {n["agent_id"] for n in numbers} == {*shared_world.agent_ids, None}
    assert all(re.fullmatch(r"\+\d{11,12}", n["phone_number"]) for n in numbers)
    assert len(bases) == 2
    assert {"rag_id", "vector_id", "status"} <= bases[0].keys()
    assert {"id", "name", "email", "wallet"} <= me.keys()
    assert {"max", "current"} == me["concurrency"].keys()
    assert call == shared_world.executions[call_id]
    assert log["status"] == "success"
    assert all(
        {"created_at", "type", "component", "provider", "data"} <= line.keys()
        for line in log["data"]
    )


# ---------------------------------------------------------------- changing the world


def test_complete_pending_changes_status_and_updated_at_but_not_created_at():
    world = make_world(pending_fraction=0.3)
    world.clock = lambda: NOW + timedelta(hours=1)
    before = {call_id: dict(world.executions[call_id]) for call_id in world.pending_ids()}
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        changed = world.complete_pending()
        served = {
            call_id: session.get(f"{api.url}/executions/{call_id}").json() for call_id in changed
        }

    assert set(changed) == set(before)
    assert len(changed) > 20
    assert world.pending_ids() == set()
    assert all(call["status"] in FINAL_STATUSES for call in served.values())
    assert Counter(call["status"] for call in served.values())["completed"] > len(changed) / 2
    assert all(
        call["created_at"] == before[call_id]["created_at"] for call_id, call in served.items()
    )
    assert {call["updated_at"] for call in served.values()} == {"2026-03-01T13:00:00.000000Z"}
    assert all(call["error_message"] for call in served.values() if call["status"] == "failed")


def test_complete_pending_only_touches_the_given_pending_ids():
    world = make_world(pending_fraction=0.3)
    pending = sorted(world.pending_ids())
    final_id = next(
        call_id for call_id, call in world.executions.items() if call["status"] == "completed"
    )
    untouched = dict(world.executions[final_id])

    changed = world.complete_pending(ids=[pending[0], final_id])

    assert changed == [pending[0]]
    assert world.pending_ids() == set(pending[1:])
    assert world.executions[final_id] == untouched


def test_complete_pending_can_force_the_outcome():
    world = small_world(pending_fraction=0.5)
    pending = sorted(world.pending_ids())
    before = {call_id: world.executions[call_id]["updated_at"] for call_id in pending}

    answered = world.complete_pending(ids=pending[:10], status="completed")
    busy = world.complete_pending(ids=pending[10:12], status="busy")

    assert answered == pending[:10]
    assert busy == pending[10:12]
    for call_id in answered:
        call = world.executions[call_id]
        assert call["status"] == "completed"
        assert call["transcript"]
        assert call["total_cost"] > 0
        assert call["telephony_data"]["recording_url"].endswith(f"/recordings/call/{call_id}")
        assert call["updated_at"] > before[call_id]
    assert {world.executions[call_id]["status"] for call_id in busy} == {"busy"}
    assert all(world.executions[call_id]["transcript"] is None for call_id in busy)
    assert world.pending_ids() == set(pending[12:])
    for status in ("call-disconnected", "scheduled", "done"):
        with pytest.raises(ValueError, match="final status"):
            world.complete_pending(ids=pending[12:], status=status)
    assert world.pending_ids() == set(pending[12:])


def test_a_prepared_call_disconnects_then_completes_with_its_post_call_data():
    world = small_world()
    moment = [NOW + timedelta(hours=1)]
    world.clock = lambda: moment[0]
    call_id = min(c["id"] for c in world.executions.values() if c["status"] == "prepared")
    batch_id = world.executions[call_id]["batch_id"]
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"

        def served() -> tuple[dict, dict, str]:
            call = session.get(f"{api.url}/executions/{call_id}").json()
            batch = session.get(f"{api.url}/batches/{batch_id}/executions").json()
            (listed,) = [c for c in batch if c["id"] == call_id]
            assert listed == call
            agent = call["agent_id"]
            top = session.get(executions_url(api, agent), params=WHOLE_WINDOW).json()["data"][0]
            batches = session.get(f"{api.url}/batches/{agent}/all").json()
            (summary,) = [b for b in batches if b["batch_id"] == batch_id]
            return call, summary, top["id"]

        prepared, _, _ = served()
        assert world.disconnect_calls([call_id]) == [call_id]
        disconnected, batch_disconnected, top_disconnected = served()
        moment[0] += timedelta(minutes=2)
        assert world.complete_pending(ids=[call_id], status="completed") == [call_id]
        completed, batch_completed, top_completed = served()

    assert prepared["status"] == "prepared"
    assert disconnected["status"] == "call-disconnected"
    assert disconnected["updated_at"] == "2026-03-01T13:00:00.000000Z"
    assert disconnected.get("conversation_duration", disconnected.get("conversation_time")) == 0
    assert (disconnected["total_cost"], disconnected["cost_breakdown"]) == (0, EMPTY_COST)
    assert disconnected["transcript"] is disconnected["extracted_data"] is None
    assert disconnected["telephony_data"]["recording_url"] is None
    assert disconnected["telephony_data"]["provider_call_id"]
    assert batch_disconnected["execution_status"] == {"call-disconnected": 1, "prepared": 2}
    assert batch_disconnected["status"] == "queued"
    assert top_disconnected == top_completed == call_id
    assert completed["status"] == "completed"
    assert completed["updated_at"] == "2026-03-01T13:02:00.000000Z"
    assert completed["created_at"] == prepared["created_at"]
    assert completed["transcript"]
    assert completed["total_cost"] > 0
    assert completed["cost_breakdown"] != EMPTY_COST
    assert completed["telephony_data"]["recording_url"] == (
        f"https://api.bolna.ai/recordings/call/{call_id}"
    )
    assert batch_completed["execution_status"] == {"completed": 1, "prepared": 2}
    assert call_id not in world.pending_ids()


def test_disconnect_calls_refuses_calls_that_are_not_moving():
    world = small_world(pending_fraction=0.5)
    moving = min(world.pending_ids())
    final_id = next(c["id"] for c in world.executions.values() if c["status"] == "completed")
    untouched = json.dumps(world.executions[final_id])

    with pytest.raises(ValueError, match="moving"):
        world.disconnect_calls([moving, final_id])
    assert world.executions[moving]["status"] != "call-disconnected"
    world.disconnect_calls([moving])
    with pytest.raises(ValueError, match="moving"):
        world.disconnect_calls([moving])
    with pytest.raises(KeyError):
        world.disconnect_calls(["no-such-call"])
    assert json.dumps(world.executions[final_id]) == untouched


def test_retry_calls_reschedules_a_failed_attempt_under_the_same_id():
    world = small_world(pending_fraction=0)
    agent_id = world.agent_ids[1]
    original = next(c for c in newest_first(world, agent_id) if c["status"] == "no-answer")
    call_id = original["id"]
    before = json.loads(json.dumps(original))
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        total_before = session.get(url, params=WHOLE_WINDOW).json()["total"]
        assert world.retry_calls([call_id]) == [call_id]
        listed = session.get(url, params=WHOLE_WINDOW).json()
        retried = session.get(f"{api.url}/executions/{call_id}").json()
        pending_after_retry = call_id in world.pending_ids()
        world.complete_pending(ids=[call_id], status="busy")
        world.retry_calls([call_id], after=timedelta(minutes=60))
        world.complete_pending(ids=[call_id], status="completed")
        final = session.get(f"{api.url}/executions/{call_id}").json()

    assert "retry_count" not in before
    assert retried["status"] == "scheduled"
    assert retried["retry_count"] == 1
    assert retried["retry_history"] == [
        {"status": "no-answer", "updated_at": before["updated_at"], "error_message": None}
    ]
    assert retried["updated_at"] == "2026-03-01T13:00:00.000000Z"
    assert retried["scheduled_at"] == "2026-03-01T13:30:00.000000Z"
    kept = ("id", "agent_id", "created_at", "batch_id", "context_details", "answered_by_voice_mail")
    assert all(retried.get(name) == before.get(name) for name in kept)
    for name in ("to_number", "from_number", "call_type", "provider"):
        assert retried["telephony_data"][name] == before["telephony_data"][name]
    assert retried["telephony_data"]["hangup_reason"] is None
    assert pending_after_retry
    assert listed["total"] == total_before
    assert listed["data"][0] == retried
    assert final["id"] == call_id
    assert final["status"] == "completed"
    assert final["transcript"]
    assert final["retry_count"] == 2
    assert [attempt["status"] for attempt in final["retry_history"]] == ["no-answer", "busy"]
    assert final["scheduled_at"] == "2026-03-01T14:00:00.000002Z"
    assert call_id not in world.pending_ids()


def test_retry_calls_refuses_calls_that_are_not_retryable():
    world = make_world(pending_fraction=0.2)
    failed = next(c["id"] for c in world.executions.values() if c["status"] == "failed")
    others = {
        status: next(c["id"] for c in world.executions.values() if c["status"] == status)
        for status in ("completed", "canceled", "in-progress")
    }
    untouched = json.dumps(world.executions[failed])

    for other in others.values():
        with pytest.raises(ValueError, match="retried"):
            world.retry_calls([failed, other])
    with pytest.raises(KeyError):
        world.retry_calls([failed, "no-such-call"])

    assert json.dumps(world.executions[failed]) == untouched
    assert world.retry_calls([failed]) == [failed]
    assert world.executions[failed]["status"] == "scheduled"


def test_an_undocumented_status_is_served_and_stays_pending():
    world = small_world()
    agent_id = world.agent_ids[2]
    (call_id,) = world.add_calls(1, agent_id=agent_id, status="transferring")
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        params = {**WHOLE_WINDOW, "status": "transferring"}
        listed = session.get(executions_url(api, agent_id), params=params).json()

    assert ids_of(listed["data"]) == [call_id]
    assert call_id in world.pending_ids()
    assert call_id in world.complete_pending()
    assert world.executions[call_id]["status"] in FINAL_STATUSES


def test_add_calls_become_visible_newest_first():
    world = small_world(calls=60)
    agent_id = world.agent_ids[2]
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        before = session.get(url, params=WHOLE_WINDOW).json()
        new_ids = world.add_calls(3, agent_id=agent_id)
        pending_ids = world.add_calls(3, status="ringing")
        after = session.get(url, params=WHOLE_WINDOW).json()

    assert after["total"] == before["total"] + 4
    assert [call["id"] for call in after["data"][:4]] == [pending_ids[2], *reversed(new_ids)]
    assert all(world.executions[call_id]["status"] == "completed" for call_id in new_ids)
    assert set(pending_ids) <= world.pending_ids()
    assert {world.executions[call_id]["agent_id"] for call_id in pending_ids} == set(
        world.agent_ids
    )
    assert all(
        world.executions[call_id]["created_at"] > format_timestamp(NOW) for call_id in new_ids
    )


def test_mutations_while_serving_keep_pages_consistent():
    world = small_world(calls=300, pending_fraction=0.5)
    agent_id = world.agent_ids[0]
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            world.add_calls(2, status="in-progress")
            world.complete_pending()

    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        worker = threading.Thread(target=churn)
        worker.start()
        try:
            pages = [
                session.get(executions_url(api, agent_id), params={**WHOLE_WINDOW, "page_size": 50})
                for _ in range(40)
            ]
        finally:
            stop.set()
            worker.join()

    bodies = [page.json() for page in pages]
    assert all(page.status_code == 200 for page in pages)
    assert bodies[-1]["total"] > bodies[0]["total"]
    for body in bodies:
        keys = [(call["updated_at"], call["id"]) for call in body["data"]]
        assert keys == sorted(keys, reverse=True)
        assert all(call["agent_id"] == agent_id for call in body["data"])


# ---------------------------------------------------------------- calls listed late


def served_ids(session, url: str, **params) -> tuple[int, list[str]]:
    """The total of the first page and the ids of every page of a `small_world`'s window."""
    calls, envelopes = fetch_all(session, url, page_size=50, **WHOLE_WINDOW, **params)
    return envelopes[0]["total"], [call["id"] for call in calls]


def test_hidden_calls_are_neither_listed_nor_served_until_revealed():
    world = small_world(calls=60)
    agent_id = world.agent_ids[0]
    listed = newest_first(world, agent_id)
    # Between the 5th and 6th newest listed calls, i.e. inside history a client has read.
    between = parse_timestamp(listed[5]["created_at"]) + timedelta(microseconds=1)
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        hidden = world.add_calls(2, agent_id=agent_id, created_at=between, hidden=True)
        stamps = {call_id: dict(world.executions[call_id]) for call_id in hidden}
        total_hidden, ids_hidden = served_ids(session, url)
        by_id_hidden = [session.get(f"{api.url}/executions/{c}").status_code for c in hidden]
        log_hidden = session.get(f"{api.url}/executions/{hidden[0]}/log").status_code
        hidden_before = world.hidden_ids()
        revealed = world.reveal()
        total_shown, ids_shown = served_ids(session, url)
        by_id_shown = [session.get(f"{api.url}/executions/{c}").json() for c in hidden]

    assert hidden_before == set(hidden)
    assert total_hidden == len(listed) == len(ids_hidden)
    assert ids_hidden == ids_of(by_last_run(listed))
    assert by_id_hidden == [404, 404]
    assert log_hidden == 404
    assert sorted(revealed) == sorted(hidden)
    assert world.hidden_ids() == set()
    assert total_shown == len(listed) + 2
    assert ids_shown == ids_of(by_last_run(listed + [world.executions[c] for c in hidden]))
    assert by_id_shown == [stamps[call_id] for call_id in hidden]


def test_reveal_with_ids_shows_only_those_and_filters_see_them_too():
    world = small_world(calls=30)
    agent_id = world.agent_ids[1]
    first, second = world.add_calls(2, agent_id=agent_id, status="busy", hidden=True)
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        before = served_ids(session, url, status="busy")[1]
        revealed = world.reveal([first, first])
        again = world.reveal([first])
        after = served_ids(session, url, status="busy")[1]

    assert revealed == [first]
    assert again == []
    assert world.hidden_ids() == {second}
    assert first not in before
    assert second not in before
    assert after.count(first) == 1
    assert second not in after
    with pytest.raises(KeyError):
        world.reveal(["no-such-call"])


# ---------------------------------------------------------------- late data, deleted calls


def test_update_calls_fills_in_data_and_moves_updated_at_but_not_status():
    world = make_world(calls=300)
    world.clock = lambda: NOW + timedelta(hours=2)
    call_id = next(
        call["id"]
        for call in newest_first(world, world.agent_ids[0])
        if call["status"] == "completed" and call.get("batch_id")
    )
    extracted = {"user_interested": True, "preferred_slot": "2 PM"}
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        before = session.get(f"{api.url}/executions/{call_id}").json()
        stamps = world.update_calls([call_id], extracted_data=extracted, total_cost=12.5)
        extracted["user_interested"] = False  # the world keeps its own copy
        after = session.get(f"{api.url}/executions/{call_id}").json()
        batch = session.get(f"{api.url}/batches/{world.agent_ids[0]}/all").json()

    assert stamps == {call_id: "2026-03-01T14:00:00.000000Z"}
    assert before["updated_at"] < after["updated_at"] == "2026-03-01T14:00:00.000000Z"
    assert after["batch_run_details"]["updated_at"] == after["updated_at"]
    assert (
        next(b for b in batch if b["batch_id"] == after["batch_id"])["updated_at"]
        == (after["updated_at"])
    )
    assert after["extracted_data"] == {"user_interested": True, "preferred_slot": "2 PM"}
    assert after["total_cost"] == 12.5
    assert before["extracted_data"] != after["extracted_data"]
    unchanged = ("id", "agent_id", "status", "created_at", "transcript", "telephony_data")
    assert all(after[name] == before[name] for name in unchanged)


@pytest.mark.parametrize("name", ["status", "created_at", "agent_id", "id"])
def test_update_calls_refuses_to_change_identity_or_status(name):
    world = make_world(calls=10)
    call_id = next(iter(world.executions))
    before = dict(world.executions[call_id])

    with pytest.raises(ValueError, match=name):
        world.update_calls([call_id], **{name: "x", "transcript": "changed"})

    assert world.executions[call_id] == before


def test_remove_calls_deletes_from_listings_lookups_batches_and_pending():
    world = small_world(calls=300, pending_fraction=0.5)
    agent_id = world.agent_ids[0]
    mine = newest_first(world, agent_id)
    in_batch = next(call for call in mine if call.get("batch_id"))
    pending = next(
        call for call in mine if call["id"] in world.pending_ids() and call is not in_batch
    )
    (hidden,) = world.add_calls(1, agent_id=agent_id, hidden=True)
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        total_before = served_ids(session, url)[0]
        world.remove_calls([in_batch["id"], pending["id"], hidden])
        total_after, ids_after = served_ids(session, url)
        by_id = session.get(f"{api.url}/executions/{in_batch['id']}").status_code
        members = session.get(f"{api.url}/batches/{in_batch['batch_id']}/executions").json()

    assert total_after == total_before - 2 == len(ids_after)
    assert not {in_batch["id"], pending["id"]} & set(ids_after)
    assert by_id == 404
    assert in_batch["id"] not in {call["id"] for call in members}
    assert pending["id"] not in world.pending_ids()
    assert world.hidden_ids() == set()
    assert world.reveal() == []
    assert not {in_batch["id"], pending["id"], hidden} & world.executions.keys()
    with pytest.raises(KeyError):
        world.remove_calls([in_batch["id"]])


# ---------------------------------------------------------------- changes between page requests


def page(session, url: str, number: int) -> dict:
    response = session.get(url, params={**WHOLE_WINDOW, "page_size": 10, "page_number": number})
    assert response.status_code == 200, response.text
    return response.json()


def test_before_request_inserts_a_call_just_before_the_page_asked_for():
    world = small_world(calls=90)
    agent_id, other_agent = world.agent_ids[:2]
    inserted, lock_held = [], []

    def insert_call():
        lock_held.append(world.lock._is_owned())
        inserted.extend(world.add_calls(1, agent_id=agent_id))

    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        api.before_request(insert_call, path_contains=f"/v2/agent/{agent_id}/", page_number=2)
        other = page(session, executions_url(api, other_agent), 2)
        first = page(session, url, 1)
        inserted_before_page_2 = list(inserted)
        second = page(session, url, 2)
        third = page(session, url, 3)

    assert other["total"] == first["total"] == 30
    assert inserted_before_page_2 == []
    assert (second["total"], third["total"]) == (31, 31)
    assert len(inserted) == 1
    assert lock_held == [True]
    # The new call is the newest run: it pushed every call one place down, so page 1's last
    # call is served again and the new one, at the top, is missed by this pass.
    assert second["data"][0]["id"] == first["data"][-1]["id"]
    assert inserted[0] not in {call["id"] for call in first["data"] + second["data"]}


def test_before_request_runs_times_times_and_can_remove_calls():
    world = small_world(calls=90)
    agent_id = world.agent_ids[0]
    ordered = ids_of(listed_in(world, agent_id, WHOLE_WINDOW))
    to_remove = iter(ordered[:2])

    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        url = executions_url(api, agent_id)
        api.before_request(
            lambda: world.remove_calls([next(to_remove)]), path_contains="/executions", times=2
        )
        totals = [page(session, url, 1)["total"] for _ in range(3)]
        second = page(session, url, 2)

    assert totals == [29, 28, 28]
    assert ids_of(second["data"]) == ordered[12:22]


# ---------------------------------------------------------------- requests in flight


def burst(api, count: int) -> list[tuple[int, str | None, dict]]:
    """Send `count` requests at the same moment, one connection each; status, Retry-After, body."""
    connections = [
        http.client.HTTPConnection("127.0.0.1", api.port, timeout=5) for _ in range(count)
    ]
    results: list[tuple[int, str | None, dict]] = [None] * count
    start = threading.Barrier(count)

    def send(number: int) -> None:
        connections[number].connect()  # before the barrier, so only the requests race
        start.wait()
        connections[number].request("GET", "/user/me", headers={"Authorization": f"Bearer {KEY}"})
        response = connections[number].getresponse()
        results[number] = (
            response.status,
            response.getheader("Retry-After"),
            json.loads(response.read()),
        )

    try:
        threads = [threading.Thread(target=send, args=(number,)) for number in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for connection in connections:
            connection.close()
    return results


def test_max_in_flight_refuses_the_excess_at_once_with_retry_after():
    with FakeBolnaServer(make_world(calls=30), api_key=KEY) as api:
        api.latency = 0.2
        unlimited = burst(api, 6)
        unlimited_peak = api.peak_in_flight
        api.wait_until_idle(quiet=0)  # answers arrive before their handlers count out
        api.clear_requests()
        cleared_peak = api.peak_in_flight
        api.max_in_flight = 2
        limited = burst(api, 6)
        limited_peak = api.peak_in_flight
        logged = [entry.status for entry in api.requests]
        api.latency = 0.0
        after = requests.get(
            f"{api.url}/user/me", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        )

    assert [status for status, _, _ in unlimited] == [200] * 6
    assert unlimited_peak == 6
    assert cleared_peak == 0
    assert Counter(status for status, _, _ in limited) == {200: 2, 429: 4}
    refused = [(retry, body) for status, retry, body in limited if status == 429]
    assert refused == [("1", {"message": "Too many concurrent requests"})] * 4
    assert limited_peak == 2
    # Refusals are logged as they happen, before the two admitted requests finish sleeping.
    assert logged == [429] * 4 + [200] * 2
    assert after.status_code == 200


def test_in_flight_refusal_without_retry_after_leaves_faults_and_hooks_armed(api, session):
    ran = []
    api.before_request(lambda: ran.append(True), path_contains="/user/me")
    api.fail_next(1, 503, path_contains="/user/me")
    api.max_in_flight = 0
    api.in_flight_retry_after = None
    try:
        refused = session.get(f"{api.url}/user/me")
    finally:
        api.max_in_flight = None
        api.in_flight_retry_after = "1"
    failed = session.get(f"{api.url}/user/me")

    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.json() == {"message": "Too many concurrent requests"}
    assert failed.status_code == 503
    assert ran == [True]
    assert [entry.status for entry in api.requests] == [429, 503]
    # The answer reaches the client before its handler counts out: wait for that.
    api.wait_until_idle(quiet=0)
    api.reset_stats()
    assert api.peak_in_flight == 0


# ---------------------------------------------------------------- rate limits


class FakeClock:
    """Seconds for `rate_limit_clock` that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def limited_api(world: World | None = None, **options):
    """A server on a fresh small world with a hand-moved rate-limit clock, and a session."""
    clock = FakeClock()
    with (
        FakeBolnaServer(world or small_world(calls=30), api_key=KEY, **options) as api,
        requests.Session() as session,
    ):
        api.rate_limit_clock = clock
        session.headers["Authorization"] = f"Bearer {KEY}"
        yield api, session, clock


def statuses(session, url: str, count: int) -> list[int]:
    return [session.get(url).status_code for _ in range(count)]


def test_default_limits_are_the_documented_ones(api):
    assert dict(DEFAULT_RATE_LIMITS) == {
        "agent": RateLimit(requests=500, per_seconds=60.0),
        "default": RateLimit(requests=1000, per_seconds=60.0),
    }
    assert api.rate_limits == dict(DEFAULT_RATE_LIMITS)
    assert all(limit.mode == "sliding" for limit in DEFAULT_RATE_LIMITS.values())
    assert all(limit.retry_after is None for limit in DEFAULT_RATE_LIMITS.values())


def test_the_501st_agent_request_in_a_minute_gets_429_without_retry_after():
    with limited_api() as (api, session, clock):
        agent_id = api.world.agent_ids[0]
        agent_url = f"{api.url}/v2/agent/{agent_id}"
        call_id = next(iter(api.world.executions))
        admitted = statuses(session, agent_url, 500)
        refused = session.get(agent_url)
        listing = session.get(executions_url(api, agent_id), params=WHOLE_WINDOW)
        by_id = session.get(f"{api.url}/executions/{call_id}")  # the other group
        clock.now = 1059.999
        still_refused = session.get(agent_url).status_code
        clock.now = 1060.0  # a minute after the first 500
        after_the_window = session.get(agent_url).status_code
        counts = api.rate_limit_counts
        logged = Counter(entry.status for entry in api.requests)

    assert admitted == [200] * 500
    assert (refused.status_code, listing.status_code, by_id.status_code) == (429, 429, 200)
    assert "Retry-After" not in refused.headers
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.json() == {
        "message": "Rate limit exceeded: 500 requests per 60 seconds for this organisation"
    }
    assert (still_refused, after_the_window) == (429, 200)
    assert counts == {
        "agent": {"admitted": 501, "refused": 3},
        "default": {"admitted": 1, "refused": 0},
    }
    assert logged == {200: 502, 429: 3}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # Sliding: the 20 sent at 9 s still count at 10 s, and have left by 19 s.
        ("sliding", ([200] * 20 + [429], [429] * 20, [200] * 20)),
        # Fixed: the count restarts at 10 s, so 40 pass within a second; at 19 s it is full.
        ("fixed", ([200] * 20 + [429], [200] * 20, [429] * 20)),
    ],
)
def test_sliding_and_fixed_windows_differ_at_the_window_boundary(mode, expected):
    with limited_api() as (api, session, clock):
        api.set_rate_limit("agent", 20, per_seconds=10, mode=mode)
        url = f"{api.url}/v2/agent/all"
        clock.now = 9.0
        at_9 = statuses(session, url, 21)
        clock.now = 10.0
        at_10 = statuses(session, url, 20)
        clock.now = 19.0
        at_19 = statuses(session, url, 20)

    assert (at_9, at_10, at_19) == expected


def test_a_scaled_window_on_the_real_clock_admits_again_once_it_has_passed():
    with FakeBolnaServer(small_world(calls=30), api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        # A window long enough for 21 local requests on a loaded machine, short enough to wait.
        api.set_rate_limit("agent", 20, per_seconds=2)
        url = f"{api.url}/v2/agent/all"
        started = time.monotonic()
        burst_statuses = statuses(session, url, 21)
        burst_seconds = time.monotonic() - started
        time.sleep(max(0.0, started + 2.05 - time.monotonic()))
        after = session.get(url).status_code

    assert burst_seconds < 2, "the burst must fit in one window for this test to mean anything"
    assert burst_statuses == [200] * 20 + [429]
    assert after == 200


def test_refused_requests_are_logged_but_do_not_use_up_the_window():
    with limited_api() as (api, session, clock):
        api.set_rate_limit("agent", 3, per_seconds=60)
        url = f"{api.url}/v2/agent/all"
        clock.now = 0.0
        first = statuses(session, url, 3)
        refused = []
        for moment in (1.0, 2.0):
            clock.now = moment
            refused += statuses(session, url, 1)
        clock.now = 60.0  # the first three have left; the refused two were never counted
        later = statuses(session, url, 4)
        logged = [entry.status for entry in api.requests]
        counts = api.rate_limit_counts["agent"]

    assert first + refused + later == [200, 200, 200, 429, 429, 200, 200, 200, 429]
    assert logged == first + refused + later
    assert counts == {"admitted": 6, "refused": 3}


def test_used_by_others_leaves_the_client_the_rest_of_the_limit():
    with limited_api() as (api, session, _clock):
        api.set_rate_limit("agent", 20, per_seconds=60, used_by_others=10)
        agent_side = statuses(session, f"{api.url}/v2/agent/all", 11)
        default_side = statuses(session, f"{api.url}/user/me", 11)
        limit = api.rate_limits["agent"]

    assert agent_side == [200] * 10 + [429]
    assert default_side == [200] * 11
    assert (limit.requests, limit.used_by_others, limit.capacity) == (20, 10, 10)


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/v2/agent/all", "agent"),
        ("GET", "/v2/agent/{agent}", "agent"),
        ("GET", "/v2/agent/{agent}/executions", "agent"),
        ("POST", "/call", "agent"),
        ("GET", "/executions/{call}", "default"),
        ("GET", "/executions/{call}/log", "default"),
        ("GET", "/batches/{agent}/all", "default"),
        ("GET", "/user/me", "default"),
        ("GET", "/sub-accounts/all", "default"),
    ],
)
def test_each_path_counts_against_its_documented_group(method, path, group):
    with limited_api() as (api, session, _clock):
        target = path.format(agent=api.world.agent_ids[0], call=next(iter(api.world.executions)))
        api.set_rate_limit(group, 0)
        refused = session.request(method, f"{api.url}{target}", params=WHOLE_WINDOW)
        api.set_rate_limit(group, None)
        admitted = session.request(method, f"{api.url}{target}", params=WHOLE_WINDOW)
        counts = api.rate_limit_counts[group]

    assert refused.status_code == 429
    assert admitted.status_code != 429
    assert counts == {"admitted": 1, "refused": 1}


def test_limits_can_be_lifted_set_with_retry_after_and_refuse_nonsense():
    with limited_api(rate_limits=None) as (api, session, _clock):
        url = f"{api.url}/v2/agent/all"
        lifted = api.rate_limits
        unlimited = statuses(session, url, 30)
        api.set_rate_limit("agent", 0, retry_after=3)
        refused = session.get(url)
        api.set_rate_limit("agent", None)
        again = session.get(url).status_code

    assert lifted == {"agent": None, "default": None}
    assert unlimited == [200] * 30
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3"
    assert again == 200
    with pytest.raises(ValueError, match="group"):
        api.set_rate_limit("calls", 10)
    for bad in ({"requests": -1}, {"requests": 5, "used_by_others": 6}, {"per_seconds": 0}):
        with pytest.raises(ValueError, match=r"requests|per_seconds"):
            api.set_rate_limit("agent", **{"requests": 5, **bad})
    with pytest.raises(ValueError, match="mode"):
        api.set_rate_limit("agent", 5, mode="leaky")


def test_requests_without_a_valid_key_get_403_not_429():
    with limited_api() as (api, session, _clock):
        api.set_rate_limit("agent", 0)
        url = f"{api.url}/v2/agent/all"
        valid = session.get(url).status_code
        wrong = requests.get(url, headers={"Authorization": "Bearer wrong-key"}, timeout=5)
        counts = api.rate_limit_counts["agent"]

    assert (valid, wrong.status_code) == (429, 403)
    assert counts == {"admitted": 0, "refused": 1}
    # Each key is its own organisation for now; a key the API refuses has none.
    assert api.organisation_of(KEY) == KEY
    assert api.organisation_of("wrong-key") is None
    assert api.organisation_of(None) is None


def test_in_flight_refusals_are_not_counted_by_the_rate_limit(api, session):
    api.max_in_flight = 0
    try:
        refused = session.get(f"{api.url}/v2/agent/all")
    finally:
        api.max_in_flight = None

    assert refused.json() == {"message": "Too many concurrent requests"}
    assert api.rate_limit_counts["agent"] == {"admitted": 0, "refused": 0}


# ---------------------------------------------------------------- server clock

IMF_FIXDATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")


def served_date(response: requests.Response) -> datetime:
    assert IMF_FIXDATE.fullmatch(response.headers["Date"]), response.headers["Date"]
    return email.utils.parsedate_to_datetime(response.headers["Date"])


def test_date_header_and_new_calls_follow_the_server_clock():
    behind, ahead = timedelta(seconds=-600), timedelta(seconds=600)
    world = World.generate(seed=7, agents=1, calls=20, days=1, clock_offset=behind)
    history_end = datetime.now(timezone.utc) + behind
    with FakeBolnaServer(world, api_key=KEY) as api, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        late = session.get(f"{api.url}/user/me")
        refused = requests.get(f"{api.url}/user/me", timeout=5)
        (late_call,) = world.add_calls(1)
        world.clock_offset = ahead
        early = session.get(f"{api.url}/user/me")
        (early_call,) = world.add_calls(1)
        real_now = datetime.now(timezone.utc)

    def created(call_id: str) -> datetime:
        return parse_timestamp(world.executions[call_id]["created_at"])

    close = timedelta(seconds=2)
    assert abs(world.now - history_end) < close
    assert refused.status_code == 403
    assert abs(served_date(late) - (real_now + behind)) < close
    assert abs(served_date(refused) - (real_now + behind)) < close
    assert abs(created(late_call) - (real_now + behind)) < close
    assert abs(served_date(early) - (real_now + ahead)) < close
    assert abs(created(early_call) - (real_now + ahead)) < close


def test_server_now_and_mutations_use_the_offset_clock():
    world = make_world(calls=30, pending_fraction=1.0)
    world.clock = lambda: NOW + timedelta(hours=1)
    world.clock_offset = timedelta(minutes=-10)

    changed = world.complete_pending()

    assert world.server_now() == NOW + timedelta(minutes=50)
    assert changed
    assert {world.executions[call_id]["updated_at"] for call_id in changed} == {
        "2026-03-01T12:50:00.000000Z"
    }


# ---------------------------------------------------------------- command line


@contextlib.contextmanager
def cli_server(*options: str):
    """Run `python -m tests.fake_api` with `options`; yield its URL; check it stops cleanly."""
    command = [sys.executable, "-m", "tests.fake_api", "--port", "0", "--calls", "40", *options]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        try:
            line = process.stdout.readline().strip()
            assert re.fullmatch(r"FAKE_BOLNA_URL=http://127\.0\.0\.1:\d+", line)
            yield line.split("=", 1)[1]
        finally:
            process.send_signal(signal.SIGTERM)
            remaining = process.stdout.read()
            returncode = process.wait(timeout=10)

    assert returncode == 0
    assert remaining == ""


def test_cli_prints_the_url_and_stops_cleanly_on_sigterm():
    with cli_server("--api-key", "cli-key") as url, requests.Session() as session:
        response = session.get(f"{url}/v2/agent/all", headers={"Authorization": "Bearer cli-key"})

    assert response.status_code == 200
    assert len(response.json()) == 3


def test_cli_sets_clock_offset_and_in_flight_limit():
    options = ("--clock-offset-seconds", "-600", "--max-in-flight", "0", "--retry-after", "7")
    with cli_server(*options) as url:
        refused = requests.get(f"{url}/user/me", timeout=5)
        expected = datetime.now(timezone.utc) - timedelta(seconds=600)

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert abs(served_date(refused) - expected) < timedelta(seconds=2)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            (
                "--agent-rate-limit", "4", "--used-by-others-share", "0.5",
                "--default-rate-limit", "1", "--rate-limit-retry-after", "9",
            ),
            {"agent": [200, 200, 429], "default": [200, 429], "retry_after": "9"},
        ),
        (
            ("--agent-rate-limit", "0", "--default-rate-limit", "0", "--no-rate-limits"),
            {"agent": [200, 200, 200], "default": [200, 200], "retry_after": None},
        ),
    ],
)  # fmt: skip
def test_cli_sets_the_rate_limits(options, expected):
    with cli_server(*options) as url, requests.Session() as session:
        session.headers["Authorization"] = "Bearer demo-key"
        agent = [session.get(f"{url}/v2/agent/all") for _ in range(3)]
        default = [session.get(f"{url}/user/me") for _ in range(2)]

    assert [r.status_code for r in agent] == expected["agent"]
    assert [r.status_code for r in default] == expected["default"]
    assert agent[-1].headers.get("Retry-After") == expected["retry_after"]
