"""Error handling against the fake API: throttling, 5xx storms, broken connections, refusals,
secrets in output, and SIGTERM.

In-process syncs record the backoff waits instead of sleeping (see `backoff_sleeps`); runs of
the real `tap-bolna` command use `Retry-After: 0` where they must retry, so nothing waits.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
from collections import Counter
from urllib.parse import urlparse

import pytest

from tap_bolna.client import BolnaAPIError
from tap_bolna.tap import TapBolna
from tests.conftest import (
    API_KEY,
    days_ago,
    make_config,
    partitions,
    run_tap,
    run_tap_cli,
    tap_command,
)
from tests.fake_api import FakeBolnaServer, World
from tests.fake_api.server import AUTH_FAILURE

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import FakeAccount, SyncResult

UNKNOWN_AGENT = "00000000-0000-4000-8000-000000000000"
WRONG_KEY = "wrong-key-7f3a-not-the-real-one"


@pytest.fixture
def backoff_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the backoff library asks for, recorded instead of slept.

    backoff calls `time.sleep` through the `time` module, so that is what is patched. The
    pacer's hold after a 429 (the same pause, for every request) is skipped too; any other
    caller (the fake server's latency) still really sleeps.
    """
    waits: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("backoff."):
            waits.append(seconds)
            return
        if caller == "tap_bolna.limits":
            return
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return waits


def full_config(account: FakeAccount, **overrides: t.Any) -> dict[str, t.Any]:
    """A config whose start_date lies before the world's first call (45 days at most)."""
    return account.config(start_date=days_ago(46), **overrides)


def assert_every_call_once(result: SyncResult, api: FakeBolnaServer) -> None:
    counts = Counter(result.ids())
    assert set(counts) == set(api.world.executions)
    assert [call_id for call_id, seen in counts.items() if seen > 1] == []


def executions_requests(api: FakeBolnaServer, agent_id: str | None = None) -> list[t.Any]:
    return [
        request
        for request in api.requests
        if request.path.endswith("/executions")
        and (agent_id is None or request.path == f"/v2/agent/{agent_id}/executions")
    ]


def request_target(request: t.Any) -> tuple[str, str | None, str | None]:
    """What identifies one request of a sync: the path, the window and the page."""
    return request.path, request.query.get("from"), request.query.get("page_number")


def http_date(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(moment, usegmt=True)


def error_lines(stderr: str) -> list[str]:
    """The message part of every ERROR (or CRITICAL) log line."""
    return [
        line.split(" | ")[-1]
        for line in stderr.splitlines()
        if "| ERROR" in line or "| CRITICAL" in line
    ]


# The documented retry rules (docs/incremental-sync.md, "Errors"), written out rather than
# imported, so that a changed constant fails these tests instead of moving them.
BACKOFF_MAX_TRIES = 8  # "(gave up after 8 tries)"
BACKOFF_BASE_SECONDS = 1.0  # retry 1 waits up to 1 s, each next up to twice as long
RETRIES = BACKOFF_MAX_TRIES - 1  # the first try, then at most this many retries
RETRY_WAIT = re.compile(r" in \d+\.\d s")


def retry_lines(records: list[logging.LogRecord]) -> list[str]:
    """Every retry line logged, with its wait replaced by `<wait>`."""
    return [
        RETRY_WAIT.sub(" in <wait> s", record.getMessage())
        for record in records
        if record.levelno == logging.WARNING and f" of {RETRIES} in " in record.getMessage()
    ]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- 429 and Retry-After


def test_429_waits_exactly_what_retry_after_says(
    small_account: FakeAccount, backoff_sleeps: list[float]
) -> None:
    small_account.api.fail_next(2, status=429, retry_after="7")
    result = run_tap(full_config(small_account))
    assert_every_call_once(result, small_account.api)
    assert backoff_sleeps == [7.0, 7.0]
    assert [request.status for request in small_account.api.requests[:3]] == [429, 429, 200]


def test_429_with_an_http_date_waits_until_then(
    small_account: FakeAccount, backoff_sleeps: list[float]
) -> None:
    small_account.api.fail_next(1, status=429, retry_after=http_date(30))
    result = run_tap(full_config(small_account))
    assert_every_call_once(result, small_account.api)
    assert len(backoff_sleeps) == 1
    assert backoff_sleeps[0] == pytest.approx(30, abs=2)


def test_503_without_retry_after_backs_off_exponentially_with_jitter(
    small_account: FakeAccount, backoff_sleeps: list[float]
) -> None:
    small_account.api.fail_next(4, status=503, path_contains="/executions")
    result = run_tap(full_config(small_account))
    assert_every_call_once(result, small_account.api)
    assert len(backoff_sleeps) == 4
    for attempt, wait in enumerate(backoff_sleeps):
        assert 0 < wait <= BACKOFF_BASE_SECONDS * 2**attempt, (attempt, backoff_sleeps)


def test_requests_outside_the_page_loop_are_retried_too(
    small_account: FakeAccount, backoff_sleeps: list[float]
) -> None:
    # A followed call is re-checked by id (GET /executions/{id}) through get_json rather than
    # the SDK's paginated loop: it must get the same retries.
    world = small_account.world
    world.complete_pending()  # this call is the only one followed
    call_id = world.add_calls(
        1,
        agent_id=world.agent_ids[0],
        created_at=world.server_now() - dt.timedelta(days=2),  # before the newest call
        status="queued",
    )[0]
    # No retry horizon: the history's failed calls are not followed, so this one is alone.
    first = run_tap(full_config(small_account, retry_horizon_hours=0))
    world.complete_pending(ids=[call_id], status="completed")
    small_account.api.clear_requests()
    small_account.api.fail_next(
        2, status=429, retry_after="3", path_contains=f"/executions/{call_id}"
    )
    result = run_tap(small_account.config(retry_horizon_hours=0), state=first.final_state)
    assert result.ids() == [call_id]
    assert backoff_sleeps == [3.0, 3.0]
    by_id = [r for r in small_account.api.requests if r.path == f"/executions/{call_id}"]
    assert [r.status for r in by_id] == [429, 429, 200]


# ---------------------------------------------------------------- transient failures


@pytest.mark.parametrize(
    ("arm", "retries", "logged_status"),
    [
        pytest.param(lambda api: api.reset_next(2, path_contains="/executions"), 2, 0, id="reset"),
        pytest.param(
            lambda api: api.html_200_next(1, path_contains="/executions"), 1, 200, id="html-200"
        ),
        pytest.param(
            lambda api: api.fail_next(1, 502, html=True, path_contains="/executions"),
            1,
            502,
            id="html-502",
        ),
    ],
)
def test_transient_failures_are_retried(
    small_account: FakeAccount,
    backoff_sleeps: list[float],
    arm: t.Callable[[FakeBolnaServer], None],
    retries: int,
    logged_status: int,
) -> None:
    arm(small_account.api)
    result = run_tap(full_config(small_account))
    assert_every_call_once(result, small_account.api)
    assert len(backoff_sleeps) == retries
    requests = executions_requests(small_account.api)
    sent = Counter(request_target(request) for request in requests)
    assert sum(sent.values()) - len(sent) == retries  # the failed requests, and only they, again
    assert [request.status for request in requests].count(logged_status) >= retries


# ---------------------------------------------------------------- in the middle of a window


@pytest.fixture
def paged_world() -> World:
    """One agent, 80 calls in 5 days: one window of 8 pages of 10."""
    return World.generate(seed=71, agents=1, calls=80, days=5, pending_fraction=0)


def paged_config(api: FakeBolnaServer, world: World, **overrides: t.Any) -> dict[str, t.Any]:
    start = (world.server_now() - dt.timedelta(days=5.5)).isoformat()
    return make_config(api, start_date=start, page_size=10, **overrides)


def page_of(request: t.Any) -> int:
    return int(request.query["page_number"])


def test_failures_in_the_middle_of_a_window_are_retried_and_lose_nothing(
    paged_world: World, backoff_sleeps: list[float], max_workers: int
) -> None:
    with FakeBolnaServer(paged_world, api_key=API_KEY) as api:
        api.fail_next(2, 503, path_contains="/executions?page_number=4&")
        api.reset_next(1, path_contains="/executions?page_number=6&")
        api.fail_next(1, 429, retry_after="0", path_contains="/executions?page_number=8&")
        result = run_tap(paged_config(api, paged_world, max_workers=max_workers))
        sent = Counter(page_of(r) for r in executions_requests(api))
    assert_every_call_once(result, api)
    # Each failed page again, as often as it failed; every other page once.
    assert sent == {1: 1, 2: 1, 3: 1, 4: 3, 5: 1, 6: 2, 7: 1, 8: 2}
    assert len(backoff_sleeps) == 4


def test_a_failure_in_the_middle_of_a_window_keeps_the_window_for_the_next_sync(
    tmp_path: Path, paged_world: World
) -> None:
    with FakeBolnaServer(paged_world, api_key=API_KEY) as api:
        api.fail_next(1, 400, path_contains="/executions?page_number=5&")
        config = paged_config(api, paged_world)
        failed = run_tap_cli(tmp_path, config)
        froms = {r.query["from"] for r in executions_requests(api)}
        api.clear_requests()
        resumed = run_tap(config, state=failed.final_state)
        resumed_froms = {r.query["from"] for r in executions_requests(api)}
    assert failed.returncode == 1
    # Pages 1-4 were emitted, but the window was not done: no bookmark moved past its start,
    # and the next sync reads it again from there, in full.
    assert 0 < len(failed.ids()) <= 40
    assert set(failed.ids()) < set(paged_world.executions)
    executions = failed.final_state["bookmarks"].get("executions", {})
    assert not [p for p in executions.get("partitions", []) if "replication_key_value" in p]
    assert resumed_froms == froms
    assert set(resumed.ids()) == set(paged_world.executions)


# ---------------------------------------------------------------- what a person reads


def test_each_retry_is_one_warning_in_words_and_nothing_is_an_error(
    small_account: FakeAccount, backoff_sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    api = small_account.api
    first, second = small_account.world.agent_ids
    host = urlparse(api.url).netloc
    api.fail_next(1, 429, retry_after="7", path_contains=f"/v2/agent/{first}/executions")
    api.fail_next(1, 429, path_contains=f"/v2/agent/{second}/executions")  # no Retry-After
    api.fail_next(1, 503, path_contains=f"/batches/{first}/all")
    api.html_200_next(1, path_contains="/knowledgebase/all")
    api.reset_next(2, path_contains="/phone-numbers/all")
    caplog.set_level(logging.DEBUG)  # every line any logger writes, the backoff library's too

    result = run_tap(full_config(small_account))

    assert_every_call_once(result, api)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    lines = retry_lines(caplog.records)
    assert len(lines) == len(backoff_sleeps) == 6  # one line per retry, no more
    assert sorted(lines) == sorted(
        [
            (
                f"HTTP 429 on /v2/agent/{first}/executions: retry 1 of 7 in <wait> s"
                " as Retry-After asks"
            ),
            f"HTTP 429 on /v2/agent/{second}/executions: retry 1 of 7 in <wait> s",
            f"HTTP 503 on /batches/{first}/all: retry 1 of 7 in <wait> s",
            (
                "HTTP 200 with a non-JSON body (text/html; charset=utf-8) on /knowledgebase/all:"
                " retry 1 of 7 in <wait> s"
            ),
            (
                f"Connection to {host} failed (connection closed without an answer)"
                " on /phone-numbers/all: retry 1 of 7 in <wait> s"
            ),
            (
                f"Connection to {host} failed (connection closed without an answer)"
                " on /phone-numbers/all: retry 2 of 7 in <wait> s"
            ),
        ]
    )
    # The wait said is the wait slept: Retry-After's exactly.
    assert (
        f"HTTP 429 on /v2/agent/{first}/executions: retry 1 of 7 in 7.0 s as Retry-After asks"
        in [r.getMessage() for r in caplog.records]
    )
    assert 7.0 in backoff_sleeps
    for text in ("<function", "PreparedRequest", "Backing off", "Giving up", API_KEY, "5ecret"):
        assert text not in caplog.text


def test_a_sync_that_gives_up_ends_with_exactly_one_error_line(
    monkeypatch: pytest.MonkeyPatch, backoff_sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    config = {"api_key": API_KEY, "api_url": f"http://127.0.0.1:{port}"}
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    caplog.set_level(logging.DEBUG)
    # What `tap-bolna` does around a sync (TapBolna.invoke), without its sleeps.
    with pytest.raises(SystemExit) as exited, TapBolna.one_line_failures():
        TapBolna(config=config).sync_all()
    assert exited.value.code == 1
    assert len(backoff_sleeps) == RETRIES
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        (
            f"Connection to 127.0.0.1:{port} failed (connection refused) on /user/me "
            f"(gave up after {BACKOFF_MAX_TRIES} tries)"
        )
    ]
    assert len(retry_lines(caplog.records)) == RETRIES
    assert API_KEY not in caplog.text


def test_5xx_storm_fails_bounded_and_keeps_earlier_state(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    api, world = small_account.api, small_account.world
    first, second = world.agent_ids  # the order of GET /v2/agent/all, which the sync follows
    failing = f"/v2/agent/{second}/executions"
    # Every request for agent 2's calls fails; Retry-After 0 keeps the real command from sleeping.
    api.fail_next(10_000, 503, retry_after="0", path_contains=failing)
    config = full_config(small_account)

    before = world.server_now()
    result = run_tap_cli(tmp_path, config)
    after = world.server_now()
    assert result.returncode == 1
    tries = Counter(request_target(request) for request in executions_requests(api, second))
    assert max(tries.values()) == BACKOFF_MAX_TRIES  # each request is tried that often at most
    if small_account.max_workers == 1:
        assert sum(tries.values()) == BACKOFF_MAX_TRIES  # and nothing runs ahead of it
    # One line says why, and nothing else is at ERROR: not the backoff library's give-up, not
    # the SDK's "unhandled error" for the stream and its parent.
    assert error_lines(result.stderr) == [
        (
            f"Bolna answered HTTP 503 for {failing}: Service Unavailable "
            f"(gave up after {BACKOFF_MAX_TRIES} tries)"
        )
    ]
    assert "Traceback" not in result.stderr
    assert f"HTTP 503 on {failing}: retry {RETRIES} of {RETRIES} in 0.0 s" in result.stderr

    # Agent 1 was synced in full before agent 2 failed, and its bookmark survived.
    agent_of = {call_id: call["agent_id"] for call_id, call in world.executions.items()}
    first_calls = {call_id for call_id, agent in agent_of.items() if agent == first}
    assert set(result.ids()) == first_calls
    last_state = partitions(result.final_state)
    # Agent 1 was read up to the sync's "now" on Bolna's clock (which the tap learns from the
    # Date header, to the second): its bookmark lies between the fake's clock before and after.
    bookmark = dt.datetime.fromisoformat(
        last_state[first]["replication_key_value"].replace("Z", "+00:00")
    )
    assert before - dt.timedelta(seconds=1) <= bookmark <= after + dt.timedelta(seconds=1)
    assert "replication_key_value" not in last_state.get(second, {})

    # Resuming from it (the API healthy again) finishes agent 2, and re-reads of agent 1 only
    # the calls that were still pending.
    with FakeBolnaServer(world, api_key=API_KEY) as healthy:
        resumed = run_tap({**config, "api_url": healthy.url}, state=result.final_state)
    assert set(result.ids()) | set(resumed.ids()) == set(world.executions)
    resumed_first = {call_id for call_id in resumed.ids() if agent_of[call_id] == first}
    assert resumed_first <= set(last_state[first].get("pending_calls", {}))


@pytest.mark.parametrize("max_workers", [4])
def test_failed_parallel_sync_stops_fetching_ahead(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    second = small_account.world.agent_ids[1]
    failing = f"/v2/agent/{second}/executions"
    small_account.api.fail_next(10_000, 503, retry_after="0", path_contains=failing)
    result = run_tap_cli(tmp_path, full_config(small_account))
    assert result.returncode == 1
    # At most the fetches already in flight when the error surfaced may finish their tries.
    tried = len(executions_requests(small_account.api, second))
    assert tried <= BACKOFF_MAX_TRIES * small_account.max_workers
    assert error_lines(result.stderr) == [
        (
            f"Bolna answered HTTP 503 for {failing}: Service Unavailable "
            f"(gave up after {BACKOFF_MAX_TRIES} tries)"
        )
    ]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("max_workers", [1])  # refused before any window: workers play no part
@pytest.mark.parametrize(
    ("api_key", "arm", "expected"),
    [
        pytest.param(
            WRONG_KEY,
            None,
            f"Bolna rejected the API key (HTTP 403): {AUTH_FAILURE['detail']}",
            id="403-wrong-key",
        ),
        pytest.param(
            API_KEY,
            lambda api: api.fail_next(1, 401),
            "Bolna rejected the API key (HTTP 401): Unauthorized",
            id="401",
        ),
    ],
)
def test_rejected_key_fails_at_once_with_one_clear_line(
    tmp_path: Path,
    small_account: FakeAccount,
    api_key: str,
    arm: t.Callable[[FakeBolnaServer], None] | None,
    expected: str,
) -> None:
    if arm:
        arm(small_account.api)
    result = run_tap_cli(tmp_path, full_config(small_account, api_key=api_key))
    assert result.returncode == 1
    assert len(small_account.api.requests) == 1  # no retry can fix a key
    assert error_lines(result.stderr) == [expected]
    assert "Traceback" not in result.stderr
    for secret in (WRONG_KEY, API_KEY):
        assert secret not in result.raw_stdout
        assert secret not in result.stderr


@pytest.mark.parametrize("max_workers", [1])  # refused before any window: workers play no part
def test_unknown_agent_is_named_before_any_call_is_read(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    known = small_account.world.agent_ids[0]
    config = full_config(small_account, agent_ids=[known, UNKNOWN_AGENT])
    result = run_tap_cli(tmp_path, config)
    assert result.returncode == 1
    assert error_lines(result.stderr)[-1].startswith(
        f"Unknown agent '{UNKNOWN_AGENT}' in agent_ids: Bolna answered HTTP 404"
    )
    # Every configured id is resolved first: not even the known agent's calls were read.
    assert result.records("executions") == []
    assert executions_requests(small_account.api) == []


# Sequential only: with workers, a failed in-process sync leaves fetch workers running (see
# test_failed_parallel_sync_stops_fetching_ahead), which would outlive this test's server.
@pytest.mark.parametrize("max_workers", [1])
def test_400_is_not_retried_and_says_what_the_api_said(
    small_account: FakeAccount, backoff_sleeps: list[float]
) -> None:
    small_account.api.fail_next(1, status=400, path_contains="/executions")
    with pytest.raises(BolnaAPIError) as raised:
        run_tap(full_config(small_account))
    first_agent = small_account.world.agent_ids[0]
    assert str(raised.value) == (
        f"Bolna refused the request (HTTP 400) for /v2/agent/{first_agent}/executions: Bad Request"
    )
    assert backoff_sleeps == []
    assert [request.status for request in executions_requests(small_account.api)] == [400]


@pytest.mark.parametrize("max_workers", [1])  # see the test above
def test_400_message_is_the_apis_own(
    small_account: FakeAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page size the API rejects, past the tap's own validation, gets the fake's real 400.
    tap = TapBolna(config=full_config(small_account, page_size=51), validate_config=False)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    with pytest.raises(
        BolnaAPIError, match=r"\(HTTP 400\) .*: page_size must be between 1 and 50$"
    ):
        tap.sync_all()


# ---------------------------------------------------------------- secrets


def test_api_key_never_appears_in_output_even_at_debug(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    api = small_account.api
    first, second = small_account.world.agent_ids
    # An agent's CRM credential, which the API returns with the agent, must not travel either.
    crm_token = "crm-token-9c1e-also-secret"  # noqa: S105 - a test value
    small_account.world.agents[second]["ingest_source_config"] = {
        "source_type": "api",
        "source_url": "https://crm.example.com/leads",
        "source_auth_token": crm_token,
        "source_name": "crm",
    }
    api.fail_next(1, 503, retry_after="0", path_contains=f"/v2/agent/{first}/executions")
    api.reset_next(1, path_contains="/batches/")
    api.fail_next(1, 429, retry_after="0", path_contains=f"/v2/agent/{second}/executions")
    result = run_tap_cli(tmp_path, full_config(small_account), env={"TAP_BOLNA_LOGLEVEL": "DEBUG"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert_every_call_once(result, api)
    assert "| DEBUG" in result.stderr  # the log level took effect
    # The retries were logged, in words, at WARNING; the sync succeeded, so nothing is an error.
    retried = [line.split(" | ")[-1] for line in result.stderr.splitlines() if "| WARNING" in line]
    host = urlparse(api.url).netloc
    for expected in (
        f"HTTP 503 on /v2/agent/{first}/executions: retry 1 of 7 in 0.0 s as Retry-After asks",
        f"HTTP 429 on /v2/agent/{second}/executions: retry 1 of 7 in 0.0 s as Retry-After asks",
        f"Connection to {host} failed (connection closed without an answer) on /batches/",
    ):
        assert any(line.startswith(expected) for line in retried), (expected, retried)
    assert error_lines(result.stderr) == []
    for text in ("<function", "PreparedRequest", "Backing off", "Giving up", "Traceback"):
        assert text not in result.stderr
    assert result.ids("agents") == [first, second]  # the agent itself is still there
    for text in (result.raw_stdout, result.stderr):
        assert API_KEY not in text
        assert "5ecret" not in text  # not even part of it
        assert crm_token not in text


@pytest.mark.parametrize("max_workers", [1])  # no sync at all
@pytest.mark.parametrize("args", [("--about", "--format=json"), ("--discover",)])
def test_api_key_not_in_about_or_catalog(
    tmp_path: Path, small_account: FakeAccount, args: tuple[str, ...]
) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(full_config(small_account)))
    proc = subprocess.run(
        tap_command(config_path, *args), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)  # the real output, not an error
    assert API_KEY not in proc.stdout
    assert API_KEY not in proc.stderr


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_ends_promptly_with_a_resumable_state(tmp_path: Path, account: FakeAccount) -> None:
    account.api.latency = 0.02
    config = full_config(account)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    with (
        (tmp_path / "stderr.log").open("w") as stderr,  # a file: a full pipe would block the tap
        subprocess.Popen(tap_command(config_path), stdout=subprocess.PIPE, stderr=stderr) as proc,
    ):
        watchdog = threading.Timer(60, proc.kill)  # readline() cannot time out on its own
        watchdog.start()
        try:
            assert proc.stdout is not None
            output, states = b"", 0
            while states < 3:
                line = proc.stdout.readline()
                assert line, "the tap ended before its third STATE"
                output += line
                states += json.loads(line)["type"] == "STATE"
            proc.send_signal(signal.SIGTERM)
            # Not communicate(): it reads the raw pipe and would skip what readline() buffered.
            rest = proc.stdout.read()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # The SDK's handler writes STATE, then calls sys.exit(0): a stop on request, not a failure.
    assert proc.returncode == 0
    output += rest
    complete_lines = output.decode().split("\n")[:-1]  # whatever follows the last newline is cut
    messages = [json.loads(line) for line in complete_lines]  # and no line is torn
    # That STATE is only written if it differs from the last one (the SDK's StateWriter skips
    # repeats), and this tap's state changes only at window ends, which emit STATE at once. So
    # the last STATE is the last completed window's, and records of the window in progress may
    # follow it (with parallel fetching they usually do): they are sent again on resume.
    last_state_at = max(i for i, m in enumerate(messages) if m["type"] == "STATE")
    last_state = messages[last_state_at]["value"]
    after_last_state = {
        m["record"]["id"]
        for m in messages[last_state_at:]
        if m["type"] == "RECORD" and m["stream"] == "executions"
    }
    first_ids = {
        m["record"]["id"] for m in messages if m["type"] == "RECORD" and m["stream"] == "executions"
    }
    assert 0 < len(first_ids) < len(account.world.executions)  # stopped half way
    assert "progress_markers" not in json.dumps(last_state)
    assert any("replication_key_value" in part for part in partitions(last_state).values())

    account.api.latency = 0
    resumed = run_tap(config, state=last_state)
    assert first_ids | set(resumed.ids()) == set(account.world.executions)
    assert after_last_state <= set(resumed.ids())  # nothing the last STATE did not cover is lost
    assert len(resumed.ids()) < len(account.world.executions)  # resumed, not started over
