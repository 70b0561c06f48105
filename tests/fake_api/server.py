"""A real HTTP server that answers like the Bolna REST API, backed by a `World`.

Standard library only. It speaks HTTP/1.1 with keep-alive, so a `requests.Session` reuses one
connection, and it can be told to misbehave (status codes, HTML bodies, dropped connections,
latency) for the next few requests, which is how the tap's error handling is tested. By default
it enforces the live API's rules: `from` and `to` on every executions request, and the
per-organisation rate limits (429 without Retry-After).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fake_api.rate_limits import DEFAULT_RATE_LIMITS, RateLimit, RateLimiter, WindowMode
from tests.fake_api.world import ALL_STATUSES, format_timestamp

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from typing_extensions import Self

    from tests.fake_api.world import World

MAX_PAGE_SIZE = 50
DEFAULT_PAGE_SIZE = 20
MAX_RANGE = timedelta(days=7)
MAX_USAGE_RANGE = timedelta(days=32)
SUB_ACCOUNT_ROUTES = "/sub-accounts/"
SUB_ACCOUNT_KEY_REFUSAL = {"detail": "Sub-account keys cannot manage sub-accounts"}
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
AUTH_FAILURE = {"detail": "Invalid or expired API key"}
IN_FLIGHT_REFUSAL = {"message": "Too many concurrent requests"}
# Strict ISO 8601 with a zone: a "+" sent unencoded arrives as a space and fails here, as it should.
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})"
)
_PROXY_PAGE = (
    b"<!DOCTYPE html><html><head><title>Bad Gateway</title></head>"
    b"<body><h1>Upstream temporarily unavailable</h1><p>cloudflare</p></body></html>"
)


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered; `status` is 0 when the connection was dropped instead."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    # The sub-account whose key was presented; None for the parent key (or no valid key).
    sub_account_id: str | None = None
    # When the request line reached the server (time.monotonic()): what was sent after a stop.
    received: float = 0.0


@dataclass
class SubAccount:
    """A sub-account of the parent organisation: its own key (`sa-` + 32 hex) and data."""

    id: str
    name: str
    api_key: str
    world: World
    multi_tenant: bool = False
    min_concurrency: int = 1
    max_concurrency: int = 10
    key_valid: bool = True  # False: still listed, but Bolna refuses the key

    def listing(self, organization: str) -> dict[str, Any]:
        """The object `GET /sub-accounts/all` lists, api_key included (as the live API does)."""
        return {
            "id": self.id,
            "name": self.name,
            "organization_id": str(uuid.uuid5(uuid.NAMESPACE_OID, organization)),
            "api_key": self.api_key,
            "multi_tenant": self.multi_tenant,
            "min_concurrency": self.min_concurrency,
            "max_concurrency": self.max_concurrency,
        }


@dataclass
class _Fault:
    """Misbehaviour armed for the next `remaining` requests whose target has `path_contains`."""

    kind: str  # "status", "reset", "html200" or "json200"
    remaining: int
    status: int = 200
    retry_after: str | None = None
    path_contains: str | None = None
    html: bool = False
    body: Any = None  # what a "json200" fault answers

    def matches(self, target: str) -> bool:
        return self.path_contains is None or self.path_contains in target


@dataclass
class _Hook:
    """A mutation to run before answering the next `remaining` matching requests."""

    action: Callable[[], object]
    remaining: int
    path_contains: str | None
    page_number: str | None  # as the query spells it; a request without one asks for page "1"

    def matches(self, target: str, query: dict[str, str]) -> bool:
        if self.path_contains is not None and self.path_contains not in target:
            return False
        return self.page_number is None or query.get("page_number", "1") == self.page_number


class ApiError(Exception):
    """An error answer: HTTP status plus JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        """Keep the status and body to send."""
        super().__init__(status, body)
        self.status = status
        self.body = body


def _error(status: int, message: str) -> ApiError:
    return ApiError(status, {"message": message})


def parse_query_time(text: str, *, name: str, round_up: bool) -> str:
    """Turn a `from`/`to` value into the stored timestamp form, or raise a 400.

    Precision beyond microseconds is rounded toward the inside of the range (`from` up, `to`
    down), so the inclusive comparison stays exact.
    """
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        raise _error(400, f"Invalid '{name}' datetime: expected ISO 8601 with a UTC offset or Z")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    fraction = fraction or ""
    micros = int(fraction[:6].ljust(6, "0"))
    beyond = fraction[6:].strip("0")
    if zone == "Z":
        offset = timedelta(0)
    else:
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        offset = -offset if zone[0] == "-" else offset
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros,
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError as exc:
        raise _error(400, f"Invalid '{name}' datetime: {exc}") from None
    if beyond and round_up:
        moment += timedelta(microseconds=1)
    return format_timestamp(moment)


class _Routes:
    """Maps request paths to answers; a handler returns a JSON-ready object or raises ApiError."""

    def __init__(self, world: World, api: FakeBolnaServer | None = None) -> None:
        self.world = world
        self.table: list[tuple[re.Pattern[str], Any]] = []
        if api is not None:  # the parent account's routes over its sub-accounts
            self.table += [
                (re.compile(r"/sub-accounts/all"), lambda _query: api.sub_account_listing()),
                (re.compile(r"/sub-accounts/all/usage"), api.all_usage),
                (re.compile(r"/sub-accounts/([^/]+)/usage"), api.one_usage),
            ]
        self.table += [
            (re.compile(r"/v2/agent/all"), self.agents),
            (re.compile(r"/v2/agent/([^/]+)/executions"), self.agent_executions),
            (re.compile(r"/v2/agent/([^/]+)"), self.agent),
            (re.compile(r"/executions/([^/]+)/log"), self.execution_log),
            (re.compile(r"/executions/([^/]+)"), self.execution),
            (re.compile(r"/batches/([^/]+)/all"), self.agent_batches),
            (re.compile(r"/batches/([^/]+)/executions"), self.batch_executions),
            (re.compile(r"/phone-numbers/all"), lambda _query: self.world.phone_numbers),
            (re.compile(r"/knowledgebase/all"), lambda _query: self.world.knowledgebases),
            (re.compile(r"/user/me"), lambda _query: self.world.account()),
        ]

    def answer(self, path: str, query: dict[str, str]) -> Any:
        for pattern, handler in self.table:
            match = pattern.fullmatch(path)
            if match:
                return handler(query, *(unquote(part) for part in match.groups()))
        raise _error(404, "Not Found")

    def _agent_or_404(self, agent_id: str) -> dict[str, Any]:
        agent = self.world.agents.get(agent_id)
        if agent is None:
            raise _error(404, "Agent not found")
        return agent

    def agents(self, _query: dict[str, str]) -> Any:
        return list(self.world.agents.values())

    def agent(self, _query: dict[str, str], agent_id: str) -> Any:
        return self._agent_or_404(agent_id)

    def agent_executions(self, query: dict[str, str], agent_id: str) -> Any:
        self._agent_or_404(agent_id)
        page_number = _int_param(query, "page_number", 1)
        if page_number is None or page_number < 1:
            raise _error(400, "page_number must be an integer greater than or equal to 1")
        page_size = _int_param(query, "page_size", DEFAULT_PAGE_SIZE)
        if page_size is None or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise _error(400, f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        created_from, created_to = _date_range(query)
        total, page = self.world.list_executions(
            agent_id,
            created_from=created_from,
            created_to=created_to,
            filters=_filters(query),
            page_number=page_number,
            page_size=page_size,
        )
        return {
            "page_number": page_number,
            "page_size": page_size,
            "total": total,
            "has_more": page_number * page_size < total,
            "data": page,
        }

    def execution(self, _query: dict[str, str], call_id: str) -> Any:
        if not self.world.is_listed(call_id):
            raise _error(404, "Execution not found")
        return self.world.executions[call_id]

    def execution_log(self, _query: dict[str, str], call_id: str) -> Any:
        if not self.world.is_listed(call_id):
            raise _error(404, "Execution not found")
        return self.world.execution_log(call_id)

    def agent_batches(self, _query: dict[str, str], agent_id: str) -> Any:
        self._agent_or_404(agent_id)
        return self.world.agent_batches(agent_id)

    def batch_executions(self, _query: dict[str, str], batch_id: str) -> Any:
        if batch_id not in self.world.batches:
            raise _error(404, "Batch not found")
        return self.world.batch_executions(batch_id)


def _int_param(query: dict[str, str], name: str, default: int) -> int | None:
    """The integer value of a query parameter, its default when absent, None when not an int."""
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        return None


def _date_range(query: dict[str, str]) -> tuple[str, str]:
    # The live API requires both on every request: there is no "whole history" listing.
    missing = [f"'{name}'" for name in ("from", "to") if name not in query]
    if missing:
        noun = "parameters" if len(missing) > 1 else "parameter"
        raise _error(
            400,
            f"Missing required query {noun}: {' and '.join(missing)} "
            "(UTC ISO 8601 datetimes at most 7 days apart)",
        )
    created_from = parse_query_time(query["from"], name="from", round_up=True)
    created_to = parse_query_time(query["to"], name="to", round_up=False)
    # Stored timestamps are fixed-width UTC, so string order is time order.
    if created_to < created_from:
        raise _error(400, "'to' must not be earlier than 'from'")
    span = datetime.fromisoformat(created_to[:-1]) - datetime.fromisoformat(created_from[:-1])
    if span > MAX_RANGE:
        raise _error(400, "Date range cannot exceed 7 days")
    return created_from, created_to


def usage_range(query: dict[str, str], today: datetime) -> tuple[str, str]:
    """A usage request's `from`/`to`: optional (month start, end of today), <= 32 days."""
    month_start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_end = today.replace(hour=23, minute=59, second=59, microsecond=999999)
    created_from = (
        parse_query_time(query["from"], name="from", round_up=True)
        if "from" in query
        else format_timestamp(month_start)
    )
    created_to = (
        parse_query_time(query["to"], name="to", round_up=False)
        if "to" in query
        else format_timestamp(day_end)
    )
    if created_to < created_from:
        raise _error(400, "'to' must not be earlier than 'from'")
    span = datetime.fromisoformat(created_to[:-1]) - datetime.fromisoformat(created_from[:-1])
    if span > MAX_USAGE_RANGE:
        raise _error(400, "Usage can be tracked for at most 32 days")
    return created_from, created_to


def _filters(query: dict[str, str]) -> dict[str, Any]:
    allowed = {
        "status": ALL_STATUSES,
        "call_type": ("inbound", "outbound"),
        "provider": ("plivo", "twilio", "websocket", "web-call"),
    }
    filters: dict[str, Any] = {}
    for name, choices in allowed.items():
        if name in query:
            if query[name] not in choices:
                raise _error(
                    400, f"Invalid value for '{name}': must be one of {', '.join(choices)}"
                )
            filters[name] = query[name]
    if "answered_by_voice_mail" in query:
        flag = query["answered_by_voice_mail"].lower()
        if flag not in ("true", "false", "1", "0"):
            raise _error(400, "Invalid value for 'answered_by_voice_mail': must be true or false")
        filters["answered_by_voice_mail"] = flag in ("true", "1")
    if "batch_id" in query:
        filters["batch_id"] = query["batch_id"]
    return filters


class _Handler(BaseHTTPRequestHandler):
    """Per-connection request handler; all state lives on the server object."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeBolna/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; without this Nagle adds ~40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet: the benchmarks send hundreds of thousands of requests."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, read from the world's server clock: how a client learns its time."""
        if timestamp is None:
            timestamp = self.server.api.world.server_now().timestamp()
        return email.utils.formatdate(timestamp, usegmt=True)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        received = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drain the body so the connection stays usable
        split = urlsplit(self.path)
        path = split.path
        # Last value wins for repeated parameters, as in the live API's framework.
        query = {
            name: values[-1]
            for name, values in parse_qs(split.query, keep_blank_values=True).items()
        }
        api = self.server.api
        token = self._bearer_token()
        sub_account = api.sub_account_of(token)
        who = sub_account.id if sub_account is not None else None
        refusal = api.try_admit(api.organisation_of(token), path)
        if refusal is not None:
            # Refused at the door, like a gateway: no latency, faults and hooks stay armed.
            api.log(LoggedRequest(self.command, path, query, 429, who, received))
            self._send(429, *refusal)
            return
        try:
            if api.latency:
                time.sleep(api.latency)
            api.run_hooks(self.path, query)
            fault = api.take_fault(self.path)
            if fault is not None and fault.kind == "reset":
                api.log(LoggedRequest(self.command, path, query, 0, who, received))
                self.close_connection = True
                return
            status, body, content_type, headers = self._answer(fault, path, query)
            api.log(LoggedRequest(self.command, path, query, status, who, received))
            self._send(status, body, content_type, headers)
        finally:
            api.release()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _answer(
        self, fault: _Fault | None, path: str, query: dict[str, str]
    ) -> tuple[int, bytes, str, dict[str, str]]:
        if fault is not None:
            return _fault_answer(fault)
        if not self._authorized():
            return 403, _json(AUTH_FAILURE), JSON_TYPE, {}
        if self.command != "GET":
            return 404, _json({"message": "Not Found"}), JSON_TYPE, {}
        api = self.server.api
        sub_account = api.sub_account_of(self._bearer_token())
        if sub_account is not None and path.startswith(SUB_ACCOUNT_ROUTES):
            return 403, _json(SUB_ACCOUNT_KEY_REFUSAL), JSON_TYPE, {}
        world = api.world if sub_account is None else sub_account.world
        routes = self.server.routes if sub_account is None else _Routes(world)
        try:
            # Encode under the lock, so a concurrent complete_pending cannot change a page mid-dump.
            with world.lock:
                return 200, _json(routes.answer(path, query)), JSON_TYPE, {}
        except ApiError as error:
            return error.status, _json(error.body), JSON_TYPE, {}

    def _authorized(self) -> bool:
        return self.server.api.organisation_of(self._bearer_token()) is not None

    def _bearer_token(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None


def _fault_answer(fault: _Fault) -> tuple[int, bytes, str, dict[str, str]]:
    """Status, body, content type and headers for an injected fault."""
    if fault.kind == "html200":
        return 200, _PROXY_PAGE, HTML_TYPE, {}
    if fault.kind == "json200":
        return 200, _json(fault.body), JSON_TYPE, {}
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    try:
        phrase = HTTPStatus(fault.status).phrase
    except ValueError:  # non-standard codes such as Cloudflare's 520
        phrase = "Error"
    if fault.html:
        page = f"<html><head><title>{fault.status} {phrase}</title></head><body><h1>{phrase}</h1>"
        return fault.status, f"{page}</body></html>".encode(), HTML_TYPE, headers
    return fault.status, _json({"message": phrase, "error": phrase}), JSON_TYPE, headers


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers open connections so `stop` can end idle keep-alives."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, api: FakeBolnaServer, port: int) -> None:
        self.api = api
        self.routes = _Routes(api.world, api)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stopping = False
        super().__init__(("127.0.0.1", port), _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
            if self._stopping:
                # Accepted just before shutdown: end it now rather than idle in a join.
                _shutdown_quietly(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def drop_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive sockets so they can exit."""
        with self._connections_lock:
            self._stopping = True
            for connection in self._connections:
                _shutdown_quietly(connection)


def _shutdown_quietly(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the client may have closed it already
        connection.shutdown(socket.SHUT_RDWR)


class FakeBolnaServer:
    """The fake Bolna API on 127.0.0.1 (ephemeral port), served from a daemon thread.

    Use as a context manager (or `start()` / `stop()`). `url` is the base URL; `requests`
    lists every request answered; `fail_next`, `reset_next`, `html_200_next`, `json_200_next`
    and `latency` make it misbehave; `before_request` changes the world between two requests.

    `max_in_flight` (None = no limit) makes it refuse, at once, with 429 and
    `Retry-After: in_flight_retry_after` (no header if None), any request that arrives while
    that many are being answered; `peak_in_flight` is the most answered at once.

    Like the live API, it limits requests per organisation and route group (see
    `rate_limits.py`): by default 500 a minute on `/v2/agent/...` and `/call`, 1,000 a minute
    elsewhere, in a sliding window, refused with 429 `{"message": ...}` and no Retry-After.
    `set_rate_limit` changes or lifts a group's limit (scale the window for tests, e.g. 20
    requests per 0.5 s); `rate_limits=None` starts with none. Refused requests are logged with
    status 429 but do not count against the window; `rate_limit_counts` tells admitted from
    refused per group. Only requests with a valid key are limited (others get their 403).
    """

    def __init__(
        self,
        world: World,
        api_key: str = "test-key",
        *,
        port: int = 0,
        rate_limits: Mapping[str, RateLimit | None] | None = DEFAULT_RATE_LIMITS,
    ) -> None:
        """Serve `world` to clients presenting `api_key` as a bearer token; port 0 = any free.

        `rate_limits` maps a group ("agent", "default") to its limit; a group left out, or
        None, has no limit, and `rate_limits=None` lifts them all.
        """
        self.world = world
        self.api_key = api_key
        self._port = port
        self._rate_limiter = RateLimiter(rate_limits)
        self.latency = 0.0
        self.max_in_flight: int | None = None
        self.in_flight_retry_after: str | None = "1"
        self._in_flight = 0
        self._peak_in_flight = 0
        self._last_activity = time.monotonic()
        self._log: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._sub_accounts: dict[str, SubAccount] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind the port and start serving in the background."""
        if self._server is not None:
            return self
        self._server = _Server(self, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-bolna-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close client connections and wait for handler threads."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        """Start on entering the block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop on leaving the block."""
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            msg = "server is not running"
            raise RuntimeError(msg)
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of the requests answered so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Forget the requests logged so far and reset `peak_in_flight` (see `reset_stats`)."""
        with self._lock:
            self._log.clear()
        self.reset_stats()

    def log(self, entry: LoggedRequest) -> None:
        """Record one answered request (called by the handler threads)."""
        with self._lock:
            self._log.append(entry)
            self._last_activity = time.monotonic()

    def wait_until_idle(self, quiet: float = 0.2, timeout: float = 10.0) -> None:
        """Wait until no request is being answered and none was for `quiet` seconds.

        After killing a client, requests it sent just before dying are still being answered
        (and logged) for a moment: wait for them before `clear_requests`.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._in_flight == 0 and time.monotonic() - self._last_activity >= quiet
            if idle:
                return
            time.sleep(0.01)
        msg = f"the fake API was still busy after {timeout} s"
        raise TimeoutError(msg)

    # ------------------------------------------------------------------ requests in flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests answered at the same time since start or `reset_stats`.

        A request counts from when it is parsed until its answer is written (latency included);
        requests refused by `max_in_flight` or a rate limit do not count.
        """
        with self._lock:
            return self._peak_in_flight

    def reset_stats(self) -> None:
        """Start `peak_in_flight` from the requests being answered now, rate counts from zero."""
        with self._lock:
            self._peak_in_flight = self._in_flight
        self._rate_limiter.reset_counts()

    def try_admit(
        self, organisation: str | None, path: str
    ) -> tuple[bytes, str, dict[str, str]] | None:
        """Count a request in and return None, or return the 429 body, type and headers.

        Refused when `max_in_flight` are already being answered, or when the organisation's
        rate limit for the path's group is used up (requests without an organisation, i.e.
        without a valid key, are not rate limited). Called by the handler threads.
        """
        with self._lock:
            if self.max_in_flight is not None and self._in_flight >= self.max_in_flight:
                retry_after = self.in_flight_retry_after
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                return _json(IN_FLIGHT_REFUSAL), JSON_TYPE, headers
            if organisation is not None:
                limit = self._rate_limiter.admit(organisation, path)
                if limit is not None:
                    headers = {"Retry-After": limit.retry_after} if limit.retry_after else {}
                    return _json({"message": limit.refusal_message()}), JSON_TYPE, headers
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._last_activity = time.monotonic()
            return None

    def release(self) -> None:
        """Count out a request admitted by `try_admit`, once its answer is written."""
        with self._lock:
            self._in_flight -= 1
            self._last_activity = time.monotonic()

    # ------------------------------------------------------------------ rate limits

    def organisation_of(self, api_key: str | None) -> str | None:
        """The organisation whose limits a key uses, None for a key the API does not accept.

        A sub-account's key counts against its parent organisation's limits.
        """
        if api_key is not None and api_key == self.api_key:
            return api_key
        return self.api_key if self.sub_account_of(api_key) is not None else None

    # ------------------------------------------------------------------ sub-accounts

    def add_sub_account(
        self,
        world: World,
        *,
        name: str | None = None,
        sub_account_id: str | None = None,
        api_key: str | None = None,
    ) -> SubAccount:
        """A sub-account of the parent organisation, with its own key and `world` of data."""
        number = len(self._sub_accounts) + 1
        sub_account = SubAccount(
            id=sub_account_id or str(uuid.UUID(int=world.seed * 1000 + number, version=4)),
            name=name or f"client-{number:03d}",
            api_key=api_key or "sa-" + uuid.uuid4().hex,
            world=world,
        )
        with self._lock:
            self._sub_accounts[sub_account.id] = sub_account
        return sub_account

    def remove_sub_account(self, sub_account_id: str) -> None:
        """Delete a sub-account: it is no longer listed, and its key and data are gone."""
        with self._lock:
            del self._sub_accounts[sub_account_id]

    def revoke_sub_account_key(self, sub_account_id: str) -> None:
        """The sub-account stays listed with its key, but Bolna refuses that key (403)."""
        with self._lock:
            self._sub_accounts[sub_account_id].key_valid = False

    @property
    def sub_accounts(self) -> dict[str, SubAccount]:
        """The sub-accounts by id, as they are now."""
        with self._lock:
            return dict(self._sub_accounts)

    def sub_account_of(self, api_key: str | None) -> SubAccount | None:
        """The sub-account whose valid key this is, or None."""
        with self._lock:
            for sub_account in self._sub_accounts.values():
                if sub_account.key_valid and sub_account.api_key == api_key:
                    return sub_account
        return None

    def sub_account_listing(self) -> list[dict[str, Any]]:
        """`GET /sub-accounts/all`: a bare array, keys included."""
        return [sub_account.listing(self.api_key) for sub_account in self.sub_accounts.values()]

    def usage_of(self, sub_account_id: str, created_from: str, created_to: str) -> dict[str, Any]:
        """What `/sub-accounts/{id}/usage` answers for that range (inclusive, on created_at)."""
        sub_account = self.sub_accounts[sub_account_id]
        with sub_account.world.lock:
            usage = sub_account.world.usage(created_from, created_to)
        return {
            "sub_account_id": sub_account.id,
            "sub_account_name": sub_account.name,
            "from": created_from[:10],
            "to": created_to,
            **usage,
        }

    def all_usage(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """`GET /sub-accounts/all/usage`: one object per sub-account."""
        created_from, created_to = usage_range(query, self.world.server_now())
        return [self.usage_of(sid, created_from, created_to) for sid in self.sub_accounts]

    def one_usage(self, query: dict[str, str], sub_account_id: str) -> dict[str, Any]:
        """`GET /sub-accounts/{id}/usage`."""
        if sub_account_id not in self.sub_accounts:
            raise _error(404, "Sub-account not found")
        created_from, created_to = usage_range(query, self.world.server_now())
        return self.usage_of(sub_account_id, created_from, created_to)

    def set_rate_limit(  # noqa: PLR0913 - one knob per documented property of the limit
        self,
        group: str,
        requests: int | None,
        *,
        per_seconds: float = 60.0,
        used_by_others: int = 0,
        mode: WindowMode = "sliding",
        retry_after: str | float | None = None,
    ) -> None:
        """Limit `group` ("agent" or "default") to `requests` per `per_seconds`; None lifts it.

        `used_by_others` of those go to the customer's own apps, leaving the client under test
        `requests - used_by_others` per window. `mode` "sliding" counts the requests admitted
        in the last `per_seconds`; "fixed" resets the count at each multiple of `per_seconds`
        on `rate_limit_clock`. `retry_after` is sent as Retry-After on refusals (none if None).
        The group's windows start empty again.
        """
        limit = None
        if requests is not None:
            limit = RateLimit(
                requests=requests,
                per_seconds=per_seconds,
                used_by_others=used_by_others,
                mode=mode,
                retry_after=None if retry_after is None else str(retry_after),
            )
        self._rate_limiter.set_limit(group, limit)

    @property
    def rate_limits(self) -> dict[str, RateLimit | None]:
        """Each group's limit right now (None: no limit)."""
        return self._rate_limiter.limits

    @property
    def rate_limit_counts(self) -> dict[str, dict[str, int]]:
        """Per group, requests `admitted` and `refused` by the rate limit since `reset_stats`.

        Counts requests with a valid key only; those refused by `max_in_flight` are in neither.
        """
        return self._rate_limiter.counts()

    @property
    def rate_limit_clock(self) -> Callable[[], float]:
        """Seconds on a monotonic clock (`time.monotonic`); tests may replace it to skip ahead."""
        return self._rate_limiter.clock

    @rate_limit_clock.setter
    def rate_limit_clock(self, clock: Callable[[], float]) -> None:
        self._rate_limiter.clock = clock

    # ------------------------------------------------------------------ changes between requests

    def before_request(
        self,
        action: Callable[[], object],
        *,
        path_contains: str | None = None,
        page_number: int | None = None,
        times: int = 1,
    ) -> None:
        """Run `action()` (under `world.lock`) just before answering the next `times` matches.

        A request matches when its path and query contain `path_contains` and, if given, its
        `page_number` parameter equals `page_number` (a request without one counts as page 1).
        The answer then reflects the change, e.g. calls inserted into or removed from a window
        while a client pages through it. Every armed action that matches runs, oldest first;
        requests refused by `max_in_flight` or a rate limit neither run nor use one up.
        """
        if times > 0:
            wanted_page = None if page_number is None else str(page_number)
            with self._lock:
                self._hooks.append(_Hook(action, times, path_contains, wanted_page))

    def run_hooks(self, target: str, query: dict[str, str]) -> None:
        """Run the actions armed by `before_request` that match this request (handler threads)."""
        with self._lock:
            if not self._hooks:
                return
            due = [hook for hook in self._hooks if hook.matches(target, query)]
            for hook in due:
                hook.remaining -= 1
            self._hooks = [hook for hook in self._hooks if hook.remaining > 0]
        with self.world.lock:
            for hook in due:
                hook.action()

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        retry_after: str | None = None,
        path_contains: str | None = None,
        html: bool = False,
    ) -> None:
        """Answer the next `n` matching requests with `status` instead of the real answer.

        `retry_after` (seconds or an HTTP-date) is sent as the Retry-After header; `html` sends
        an HTML error page instead of a JSON body; `path_contains` limits the fault to requests
        whose path and query contain that text.
        """
        self._arm(_Fault("status", n, status, str(retry_after) if retry_after is not None else None,
                         path_contains, html))  # fmt: skip

    def reset_next(self, n: int, *, path_contains: str | None = None) -> None:
        """Close the connection without any response for the next `n` matching requests."""
        self._arm(_Fault("reset", n, path_contains=path_contains))

    def html_200_next(self, n: int, *, path_contains: str | None = None) -> None:
        """Answer the next `n` matching requests with 200 and an HTML page, like a captive proxy."""
        self._arm(_Fault("html200", n, path_contains=path_contains))

    def json_200_next(self, n: int, body: Any, *, path_contains: str | None = None) -> None:
        """Answer the next `n` matching requests with 200 and `body` as JSON (e.g. `[]`)."""
        self._arm(_Fault("json200", n, path_contains=path_contains, body=body))

    def _arm(self, fault: _Fault) -> None:
        if fault.remaining > 0:
            with self._lock:
                self._faults.append(fault)

    def take_fault(self, target: str) -> _Fault | None:
        """Use up one shot of the first armed fault matching this request target, if any."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(target):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None
