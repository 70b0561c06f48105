"""Dense windows fetched page-parallel, against the fake API over real HTTP.

Same records and STATE with 1 and N workers, a kill in the middle of a dense window, an
error or a signal stopping every page in flight, and a pool that yields to 429.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
import typing as t
from collections import Counter

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_bolna.windows import format_timestamp, parse_timestamp
from tests.conftest import API_KEY, make_config, partitions, run_tap, tap_command
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import SyncResult


@pytest.fixture(scope="module")
def dense_world() -> World:
    """2 agents with 2,500 calls each inside 6 days: one window of 50 pages per agent."""
    return World.generate(seed=41, agents=2, calls=5000, days=6, pending_fraction=0.02)


@pytest.fixture
def dense_api(dense_world: World) -> Iterator[FakeBolnaServer]:
    with FakeBolnaServer(dense_world, api_key=API_KEY) as api:
        yield api


def start_date(world: World, days: float = 6.5) -> str:
    return (world.server_now() - dt.timedelta(days=days)).isoformat()


def executions_states(result: SyncResult) -> list[dict[str, t.Any]]:
    """The executions bookmarks of every STATE, in order."""
    return [partitions(s) for s in result.states if "executions" in s.get("bookmarks", {})]


def page_requests(api: FakeBolnaServer) -> list[t.Any]:
    return [r for r in api.requests if r.path.endswith("/executions")]


@pytest.mark.parametrize("workers", [4, 8])
def test_dense_windows_give_the_same_records_and_state_as_one_worker(
    dense_world: World, dense_api: FakeBolnaServer, workers: int
) -> None:
    # A fixed end, so both syncs walk the same windows and write the same bookmarks.
    end_date = dense_world.server_now().isoformat()
    config = make_config(dense_api, start_date=start_date(dense_world), end_date=end_date)
    one = run_tap({**config, "max_workers": 1})
    dense_api.clear_requests()
    many = run_tap({**config, "max_workers": workers})
    assert dense_api.peak_in_flight > 1, "pages of one window were fetched in parallel"

    assert len(one.ids()) == len(dense_world.executions) == len(set(one.ids()))
    assert many.ids() == one.ids(), "same records in the same order"
    assert many.records() == one.records()
    assert executions_states(many) == executions_states(one), "same STATE sequence"


def read_until(
    proc: subprocess.Popen[str], *, states: int, records_after: int
) -> tuple[list[dict[str, t.Any]], int]:
    """Read until the n-th executions STATE and that many records after it; then SIGKILL."""
    messages: list[dict[str, t.Any]] = []
    seen_states = after = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        message = json.loads(line)
        messages.append(message)
        if message["type"] == "STATE" and "executions" in message["value"].get("bookmarks", {}):
            seen_states += 1
        elif seen_states >= states and message["type"] == "RECORD":
            after += message["stream"] == "executions"
            if after >= records_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    return messages, proc.returncode


def test_sigkill_in_a_dense_window_with_workers_resumes_at_that_window(tmp_path: Path) -> None:
    # One agent, 4,000 calls over 10 days: a dense first window, then a second one.
    world = World.generate(seed=42, agents=1, calls=4000, days=10, pending_fraction=0)
    agent = world.agent_ids[0]
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        config = make_config(api, start_date=start_date(world, 10.5), max_workers=4)
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        api.latency = 0.005
        proc = subprocess.Popen(
            tap_command(config_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        # The first executions STATE ends window 1; kill inside window 2.
        messages, returncode = read_until(proc, states=1, records_after=300)
        api.latency = 0
        assert returncode == -signal.SIGKILL
        killed_state = next(m["value"] for m in reversed(messages) if m["type"] == "STATE")
        bookmark = partitions(killed_state)[agent]["replication_key_value"]
        emitted_before = [
            m["record"]["id"]
            for m in messages
            if m["type"] == "RECORD" and m["stream"] == "executions"
        ]
        api.wait_until_idle()  # the killed tap's last requests are still answered
        api.clear_requests()
        resumed = run_tap(config, state=killed_state)
        froms = {r.query["from"] for r in page_requests(api) if "from" in r.query}

    assert set(emitted_before) | set(resumed.ids()) == set(world.executions)
    assert len(resumed.ids()) == len(set(resumed.ids()))
    # Resumed at the window in progress (less the look-back), not from the start.
    assert froms == {format_timestamp(parse_timestamp(bookmark) - dt.timedelta(minutes=60))}


def test_an_error_in_a_dense_window_stops_every_page_in_flight(
    dense_world: World, dense_api: FakeBolnaServer
) -> None:
    # In this process, so the workers outlive the failed sync and could go on sending. Page 12
    # fails for good; pages 13-16, fetched ahead, get a 503 whose retry is due 1 s later: a
    # closed plan sends none of them (their retries are what "every page in flight" means).
    agent = dense_world.agent_ids[0]
    dense_api.latency = 0.01
    dense_api.fail_next(1, status=400, path_contains=f"/{agent}/executions?page_number=12&")
    retried_pages = range(13, 17)
    for page in retried_pages:
        dense_api.fail_next(
            1, status=503, retry_after="1", path_contains=f"/{agent}/executions?page_number={page}&"
        )
    config = make_config(dense_api, start_date=start_date(dense_world), max_workers=4)
    with pytest.raises(FatalAPIError, match="HTTP 400"):
        run_tap(config)
    stopped = time.monotonic()
    time.sleep(1.5)  # the 503s' Retry-After, and some: when an open plan would retry them
    dense_api.wait_until_idle()

    requests = page_requests(dense_api)
    # A page a worker had on the wire as the sync failed may be logged just after the stop (the
    # server's thread runs late on a busy machine): at most one per worker. Nothing is sent again.
    after_the_stop = [r for r in requests if r.received > stopped]
    assert len(after_the_stop) <= 4, "requests went on after the sync failed"
    sent = Counter((r.path, r.query["from"], r.query["page_number"]) for r in requests)
    assert [page for page, times in sent.items() if times > 1] == [], "a page was retried"
    failed = {int(r.query["page_number"]) for r in requests if r.status == 503}
    assert failed <= set(retried_pages)
    # Pages up to the failing one, and at most the budget (4 workers x 4 pages) ahead of it:
    # not the whole account (2 agents x 50 pages).
    assert len(requests) <= 12 + 16


def test_sigterm_in_a_dense_window_stops_every_page_in_flight(
    tmp_path: Path, dense_world: World, dense_api: FakeBolnaServer
) -> None:
    dense_api.latency = 0.02
    config_path = tmp_path / "config.json"
    config_path.write_text(
        json.dumps(make_config(dense_api, start_date=start_date(dense_world), max_workers=4))
    )
    lines: list[str] = []
    with subprocess.Popen(
        tap_command(config_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)  # readline() cannot time out on its own
        watchdog.start()
        try:
            assert proc.stdout is not None
            records = 0
            while records < 200:
                line = proc.stdout.readline()
                assert line, "the tap ended before its 200th record"
                lines.append(line)
                message = json.loads(line)
                records += message["type"] == "RECORD" and message["stream"] == "executions"
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            lines += proc.stdout.read().splitlines()
            proc.wait()
        finally:
            watchdog.cancel()
    dense_api.wait_until_idle()
    # The SDK's handler writes STATE, then calls sys.exit(0): a stop on request, not a failure.
    assert proc.returncode == 0
    requests = page_requests(dense_api)
    # What was on the wire when the signal came (one per worker) may still arrive; nothing else.
    after_the_stop = [r for r in requests if r.received > stopped]
    assert len(after_the_stop) <= 4, "requests went on after the tap stopped"
    # The pages its records came from, plus at most the budget ahead (4 workers x 4 pages) and
    # the next agent's first page: far from a full sync (2 agents x 50 pages).
    emitted = sum(
        message["type"] == "RECORD" and message["stream"] == "executions"
        for message in map(json.loads, lines)
    )
    assert len(requests) <= math.ceil(emitted / 50) + 16 + 1


def test_the_pool_yields_to_429_and_loses_nothing(
    dense_world: World, dense_api: FakeBolnaServer, caplog: pytest.LogCaptureFixture
) -> None:
    dense_api.max_in_flight = 2
    dense_api.in_flight_retry_after = "0"
    dense_api.latency = 0.005
    config = make_config(dense_api, start_date=start_date(dense_world), max_workers=8)
    result = run_tap(config)

    statuses = Counter(r.status for r in dense_api.requests)
    assert Counter(result.ids()) == Counter(list(dense_world.executions)), "every call, once"
    assert statuses[429] > 0, "the test must actually provoke 429"
    assert statuses[429] / sum(statuses.values()) < 0.1
    lowered = [
        r.getMessage() for r in caplog.records if "lowering requests in flight" in r.getMessage()
    ]
    assert lowered
    # Slow start got past what the server allows before it refused (how far depends on the
    # machine's speed): the first line halves what was in flight and says to what.
    first = re.match(
        r"Bolna answered HTTP 429: lowering requests in flight from (\d+) to (\d+)", lowered[0]
    )
    assert first, lowered[0]
    before, after = int(first[1]), int(first[2])
    assert before > dense_api.max_in_flight
    assert after == (before + 1) // 2, "half, rounded up"


def test_the_pool_raises_concurrency_again_once_429s_stop(
    dense_world: World, dense_api: FakeBolnaServer
) -> None:
    dense_api.max_in_flight = 2
    dense_api.in_flight_retry_after = "0"
    dense_api.latency = 0.01
    first_agent = dense_world.agent_ids[0]

    def lift_the_limit() -> None:  # half way through the first window: no limit any more
        dense_api.max_in_flight = None
        dense_api.reset_stats()

    dense_api.before_request(
        lift_the_limit, path_contains=f"/{first_agent}/executions", page_number=25
    )
    result = run_tap(make_config(dense_api, start_date=start_date(dense_world), max_workers=8))
    assert Counter(result.ids()) == Counter(list(dense_world.executions))
    assert any(first_agent in r.path and r.status == 429 for r in dense_api.requests)
    assert dense_api.peak_in_flight > 2, "concurrency was raised again after the 429s ended"
