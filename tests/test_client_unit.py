"""Unit tests for the HTTP plumbing: Retry-After parsing, the retry waits, error classification.

No server here: responses are built by hand, so every case runs in microseconds.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import time
import typing as t

import pytest
import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_bolna import client
from tap_bolna.client import BolnaAPIError, retry_after_seconds, retry_waits
from tap_bolna.tap import TapBolna

# The documented retry rules (docs/incremental-sync.md, "Errors"), written out rather than
# imported, so that a changed constant fails these tests instead of moving them.
BACKOFF_BASE_SECONDS = 1.0  # retry 1 waits up to 1 s, each next up to twice as long
MAX_RETRY_WAIT_SECONDS = 300.0  # never longer, whatever Retry-After asks

if t.TYPE_CHECKING:
    from collections.abc import Generator

AGENT_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def make_response(
    status: int = 200,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    path: str = "/v2/agent/all",
) -> requests.Response:
    """A response as requests would hand it to validate_response."""
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {"Content-Type": "application/json"})
    response.url = f"https://api.bolna.ai{path}?page_number=1"
    response.reason = "Reason Phrase"
    return response


def http_date(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(moment, usegmt=True)


# ---------------------------------------------------------------- retry_after_seconds


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),  # a negative wait is no wait
        ("99999", MAX_RETRY_WAIT_SECONDS),  # a huge one is capped, not obeyed
        ("inf", MAX_RETRY_WAIT_SECONDS),
        ("soon", None),  # garbage: fall back to our own backoff
        ("nan", None),  # parses as a float, but time.sleep(nan) would raise
        ("", None),
    ],
)
def test_retry_after_seconds_form(header: str, expected: float | None) -> None:
    response = make_response(429, headers={"Retry-After": header})
    assert retry_after_seconds(response) == expected


def test_retry_after_http_date_is_the_time_until_then() -> None:
    wait = retry_after_seconds(make_response(429, headers={"Retry-After": http_date(30)}))
    assert wait is not None
    assert wait == pytest.approx(30, abs=2)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert retry_after_seconds(make_response(503, headers={"Retry-After": http_date(-3600)})) == 0.0


def test_retry_after_http_date_far_ahead_is_capped() -> None:
    far = retry_after_seconds(make_response(503, headers={"Retry-After": http_date(86_400)}))
    assert far == MAX_RETRY_WAIT_SECONDS


def test_retry_after_http_date_with_minus_zero_zone_is_gmt(monkeypatch: pytest.MonkeyPatch) -> None:
    # "-0000" makes email.utils return a naive datetime; it must not be read as local time.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        header = http_date(30).replace("GMT", "-0000")
        wait = retry_after_seconds(make_response(429, headers={"Retry-After": header}))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert wait == pytest.approx(30, abs=2)


def test_retry_after_absent() -> None:
    assert retry_after_seconds(make_response(503)) is None
    assert retry_after_seconds(None) is None


# ---------------------------------------------------------------- retry_waits


def primed() -> Generator[float, BaseException | None, None]:
    waits = retry_waits()
    assert waits.send(None) == 0.0  # what the backoff library does first
    return waits


def failure(status: int, retry_after: str | None = None) -> RetriableAPIError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return RetriableAPIError(f"HTTP {status}", make_response(status, headers=headers))


def test_retry_waits_honour_retry_after_exactly() -> None:
    waits = primed()
    assert [waits.send(failure(429, "7")) for _ in range(3)] == [7.0, 7.0, 7.0]


def test_retry_waits_without_retry_after_double_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Take the top of each jitter range, so the exponential envelope itself is visible.
    monkeypatch.setattr(client.random, "uniform", lambda _low, high: high)
    waits = primed()
    got = [waits.send(failure(503)) for _ in range(11)]
    assert got == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_retry_waits_are_jittered_within_each_attempts_envelope() -> None:
    waits = primed()
    got = [waits.send(failure(503)) for _ in range(8)]
    for attempt, wait in enumerate(got):
        assert 0 <= wait <= min(MAX_RETRY_WAIT_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    assert len(set(got)) > 1  # jittered, not a fixed schedule


def test_retry_waits_for_connection_errors_use_backoff() -> None:
    waits = primed()
    wait = waits.send(requests.exceptions.ConnectionError("reset by peer"))
    assert 0 <= wait <= BACKOFF_BASE_SECONDS


def test_retry_waits_fall_back_when_retry_after_is_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.random, "uniform", lambda _low, high: high)
    waits = primed()
    assert [waits.send(failure(429, "soon")), waits.send(failure(429, "nan"))] == [1.0, 2.0]


def test_retry_waits_cap_a_huge_retry_after() -> None:
    assert primed().send(failure(429, "86400")) == MAX_RETRY_WAIT_SECONDS


# ---------------------------------------------------------------- validate_response


@pytest.fixture
def executions_stream() -> client.BolnaStream:
    tap = TapBolna(config={"api_key": "unit-key", "api_url": "https://api.bolna.ai"})
    return tap.streams["executions"]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 520])
def test_throttling_and_server_errors_are_retriable(
    executions_stream: client.BolnaStream, status: int
) -> None:
    response = make_response(status, b'{"message": "try later"}')
    with pytest.raises(RetriableAPIError, match=f"HTTP {status}.*try later"):
        executions_stream.validate_response(response)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_fatal_with_the_apis_detail(
    executions_stream: client.BolnaStream, status: int
) -> None:
    response = make_response(status, b'{"detail": "Invalid or expired API key"}')
    with pytest.raises(BolnaAPIError) as raised:
        executions_stream.validate_response(response)
    assert str(raised.value) == (
        f"Bolna rejected the API key (HTTP {status}): Invalid or expired API key"
    )
    assert raised.value.status_code == status


def test_bad_request_carries_the_apis_message(executions_stream: client.BolnaStream) -> None:
    response = make_response(
        400,
        b'{"message": "Date range cannot exceed 7 days"}',
        path=f"/v2/agent/{AGENT_ID}/executions",
    )
    with pytest.raises(BolnaAPIError) as raised:
        executions_stream.validate_response(response)
    assert str(raised.value) == (
        f"Bolna refused the request (HTTP 400) for /v2/agent/{AGENT_ID}/executions: "
        "Date range cannot exceed 7 days"
    )
    assert "page_number" not in str(raised.value)  # the path, not the query string


def test_not_found_under_an_agent_names_it(executions_stream: client.BolnaStream) -> None:
    response = make_response(
        404, b'{"message": "Agent not found"}', path=f"/v2/agent/{AGENT_ID}/executions"
    )
    with pytest.raises(BolnaAPIError, match=f"Unknown agent '{AGENT_ID}'.*Agent not found"):
        executions_stream.validate_response(response)


def test_html_with_200_is_retriable(executions_stream: client.BolnaStream) -> None:
    response = make_response(
        200, b"<html><body>Bad Gateway</body></html>", {"Content-Type": "text/html"}
    )
    with pytest.raises(RetriableAPIError, match="non-JSON body"):
        executions_stream.validate_response(response)


def test_error_without_json_body_falls_back_to_the_reason(
    executions_stream: client.BolnaStream,
) -> None:
    response = make_response(409, b"<html>Conflict</html>", {"Content-Type": "text/html"})
    with pytest.raises(BolnaAPIError, match=r"HTTP 409\) for /v2/agent/all: Reason Phrase"):
        executions_stream.validate_response(response)


# ---------------------------------------------------------------- retry lines, in words


def real_failure(url: str, timeout: float = 2) -> requests.exceptions.RequestException:
    """The exception requests really raises for this URL (no mock: a local socket answers)."""
    try:
        requests.get(url, timeout=timeout)
    except requests.exceptions.RequestException as exc:
        return exc
    pytest.fail(f"{url} answered")


def test_a_refused_connection_names_host_cause_and_path() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exc = real_failure(f"http://127.0.0.1:{port}/v2/agent/all?page_size=1")
    assert client.describe_failure(exc) == (
        f"Connection to 127.0.0.1:{port} failed (connection refused) on /v2/agent/all"
    )


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never reads or answers
        port = silent.getsockname()[1]
        exc = real_failure(f"http://127.0.0.1:{port}/user/me", timeout=0.2)
    assert client.describe_failure(exc) == (
        f"Connection to 127.0.0.1:{port} failed (no answer within "
        f"{client.REQUEST_TIMEOUT_SECONDS} s) on /user/me"
    )


@pytest.mark.parametrize(
    ("exception", "wait", "expected"),
    [
        pytest.param(
            failure(429, "7"),
            7.0,
            "HTTP 429 on /v2/agent/all: retry 2 of 7 in 7.0 s as Retry-After asks",
            id="retry-after",
        ),
        pytest.param(
            failure(429, "0"),
            0.0,
            "HTTP 429 on /v2/agent/all: retry 2 of 7 in 0.0 s as Retry-After asks",
            id="retry-after-0",
        ),
        pytest.param(
            failure(503), 1.34, "HTTP 503 on /v2/agent/all: retry 2 of 7 in 1.3 s", id="503"
        ),
        pytest.param(
            ConnectionResetError(104, "Connection reset by peer"),
            0.46,
            "Connection to the API failed (connection reset by the server): retry 2 of 7 in 0.5 s",
            id="bare-reset",
        ),
    ],
)
def test_retry_message(exception: BaseException, wait: float, expected: str) -> None:
    # What the backoff library hands the handler: tries so far, the wait it will sleep.
    details = {"exception": exception, "tries": 2, "wait": wait, "target": print, "args": ()}
    assert client.retry_message(details, max_tries=8) == expected
