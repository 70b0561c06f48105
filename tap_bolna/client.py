"""HTTP plumbing shared by every Bolna stream: URL, auth, decoding, paging, errors, retries."""

from __future__ import annotations

import datetime as dt
import decimal
import email.utils
import functools
import http.client
import math
import random
import re
import socket
import ssl
import sys
import time
import typing as t
from http import HTTPStatus
from urllib.parse import urlparse

import backoff
import msgspec
import requests
from singer_sdk import RESTStream
from singer_sdk import singerlib as singer
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_bolna.fetch_plan import raise_if_cancelled
from tap_bolna.progress import SyncStats

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    from backoff.types import Details
    from singer_sdk.helpers.types import Context, Record
    from singer_sdk.streams.rest import RequestFunc

    from tap_bolna.accounts import AccountKeys
    from tap_bolna.limits import AdaptiveConcurrency, Pacing


if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

# Decimal keeps costs exact, as the SDK's own `response.json(parse_float=Decimal)` does.
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)

# The longest we wait for one retry, whatever Retry-After says (a bad header must not hang a sync).
MAX_RETRY_WAIT_SECONDS = 300.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_TRIES = 8
REQUEST_TIMEOUT_SECONDS = 60
# Checked in this order, anywhere in the exception's chain (RemoteDisconnected is a
# ConnectionResetError; a read timeout wraps a TimeoutError).
CONNECTION_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (requests.exceptions.ConnectTimeout, f"no connection within {REQUEST_TIMEOUT_SECONDS} s"),
    (requests.exceptions.ReadTimeout, f"no answer within {REQUEST_TIMEOUT_SECONDS} s"),
    (requests.exceptions.ChunkedEncodingError, "the answer was cut off"),
    (requests.exceptions.ContentDecodingError, "the answer could not be decompressed"),
    (ConnectionRefusedError, "connection refused"),
    (http.client.RemoteDisconnected, "connection closed without an answer"),
    (ConnectionResetError, "connection reset by the server"),
    (socket.gaierror, "host name not found"),
    (ssl.SSLError, "TLS error"),
    (TimeoutError, "timed out"),
)
# What is retried: the SDK's own list (RESTStream.request_decorator), and nothing else.
RETRIABLE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
# HTTP dates have whole seconds: a smaller clock difference cannot be told from noise.
DATE_HEADER_RESOLUTION = dt.timedelta(seconds=1)


class BolnaAPIError(FatalAPIError):
    """A request the API refused for good: the message is one line a person can act on."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: str = "") -> None:
        """Keep the HTTP status and the API's own words for callers that add context."""
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def response_json(response: requests.Response) -> t.Any:  # noqa: ANN401
    """Decode a response body once and keep it on the response.

    The paginator (for `has_more`) and the record parser both need the body; the SDK
    would decode it twice, which is a large share of the tap's CPU time.
    """
    cached = getattr(response, "_bolna_json", None)
    if cached is None:
        cached = _DECODER.decode(response.content)
        response._bolna_json = cached  # type: ignore[attr-defined]  # noqa: SLF001
    return cached


def api_message(response: requests.Response) -> str:
    """The API's own explanation of an error: `detail` (auth), `message` or `error`."""
    try:
        body = response_json(response)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                return str(body[key])
    return response.reason or "no explanation given"


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Seconds the server asked us to wait, from Retry-After as seconds or an HTTP date."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are GMT, not the local time zone
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):  # "nan" parses as a float, and time.sleep(nan) raises
        return None
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_SECONDS)


class ServerClock:
    """Bolna's clock, as the `Date` header of its responses tells it.

    Window ends and bookmarks are on Bolna's timeline, where `created_at` is stamped: a
    machine whose clock runs ahead would otherwise bookmark moments Bolna has not reached.
    `Date` has whole seconds, so a response says Bolna is at most `Date + 1 s - arrival`
    ahead; the smallest such bound is kept, so every call created before a sync starts is
    inside its last window. A window end up to a second in Bolna's future loses nothing: a
    call created in that second is newer than any call the sync saw, and the next sync
    starts no later than that (`windows.resume_from`). Within a second the clocks agree, and
    the local clock is used, as it is without a Date header.
    """

    def __init__(self) -> None:
        """No offset until a response has been seen."""
        self._upper_bound: dt.timedelta | None = None

    def observe(self, response: requests.Response) -> None:
        """Learn from one response's Date header."""
        header = response.headers.get("Date")
        if not header:
            return
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        bound = when + DATE_HEADER_RESOLUTION - dt.datetime.now(dt.timezone.utc)
        if self._upper_bound is None or bound < self._upper_bound:
            self._upper_bound = bound

    @property
    def offset(self) -> dt.timedelta:
        """How far Bolna's clock is ahead of this machine's (negative: behind)."""
        bound = self._upper_bound
        if bound is None or abs(bound) <= DATE_HEADER_RESOLUTION:
            return dt.timedelta(0)
        return bound

    def now(self) -> dt.datetime:
        """Bolna's current time, as far as we know it."""
        return dt.datetime.now(dt.timezone.utc) + self.offset


class AccountKeyAuthenticator(BearerTokenAuthenticator):
    """Bearer auth that keeps the key `AccountKeys.authorize` chose for the request's account.

    The SDK authenticates a prepared request again just before sending it, with one key per
    stream; the parent key is only the default.
    """

    @override
    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if "Authorization" in request.headers:
            return request
        return super().authenticate_request(request)


class BolnaStream(RESTStream):
    """Base for every Bolna stream: one place for URL, auth, errors and retries."""

    # Shared by every stream of a tap run (set by the tap): the pace of each route group and
    # the requests in flight (both lowered on 429), and Bolna's clock.
    pacing: Pacing | None = None
    concurrency: AdaptiveConcurrency | None = None
    server_clock: ServerClock = ServerClock()
    stats: SyncStats = SyncStats()
    # Which key each account's requests carry (set by the tap); without it, the parent key.
    accounts: AccountKeys | None = None
    reports_sync_summary = False

    @property
    @override
    def url_base(self) -> str:
        return str(self.config["api_url"]).rstrip("/")

    @property
    @override
    def authenticator(self) -> BearerTokenAuthenticator:
        return AccountKeyAuthenticator(token=self.config["api_key"])

    @property
    @override
    def timeout(self) -> int:
        return REQUEST_TIMEOUT_SECONDS

    @override
    def get_new_paginator(self) -> None:
        # List endpoints answer with one bare array; executions are paged by the fetch plan.
        return None

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        # Bare JSON arrays are the norm; enveloped endpoints override this.
        body = response_json(response)
        if not isinstance(body, list):
            msg = f"Bolna answered {self.path} with {type(body).__name__}, expected a JSON array"
            raise BolnaAPIError(msg)
        yield from body

    @override
    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        path = urlparse(response.url).path or self.path  # ids only; the key travels in a header
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            msg = f"Bolna answered HTTP {status} for {path}: {api_message(response)}"
            raise RetriableAPIError(msg, response)
        if status >= HTTPStatus.BAD_REQUEST:
            detail = api_message(response)
            if status in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}:
                # No retry can fix a bad key; the SDK's default message would dump the body.
                msg = f"Bolna rejected the API key (HTTP {status}): {detail}"
            elif status == HTTPStatus.NOT_FOUND:
                msg = self.not_found_message(path, detail)
            else:
                msg = f"Bolna refused the request (HTTP {status}) for {path}: {detail}"
            raise BolnaAPIError(msg, status_code=status, detail=detail)
        # A proxy or gateway error page can arrive with 200; it is transient, not data.
        try:
            response_json(response)
        except msgspec.DecodeError as exc:
            kind = response.headers.get("Content-Type", "unknown content type")
            msg = f"Bolna answered {path} with a non-JSON body ({kind})"
            raise RetriableAPIError(msg, response) from exc

    def not_found_message(self, path: str, detail: str) -> str:
        """The error for a 404; streams under an agent say which agent."""
        # From the URL, not self.context: with parallel fetching a request may be for another
        # agent than the partition the main thread is syncing.
        agent_id = path_parameters(self.path or "", path).get("agent_id")
        if agent_id:
            return f"Unknown agent {agent_id!r}: Bolna answered HTTP 404 on {path} ({detail})"
        return f"Bolna answered HTTP 404 on {path}: {detail}"

    @override
    def request_decorator(self, func: RequestFunc) -> RequestFunc:
        pacing, concurrency, clock = self.pacing, self.concurrency, self.server_clock
        stats, accounts = self.stats, self.accounts

        def guarded(*args: t.Any, **kwargs: t.Any) -> requests.Response:  # noqa: ANN401
            raise_if_cancelled()  # a closed fetch plan sends nothing more, retries included
            if accounts is not None:  # `_request(prepared, context)`: the context's account
                accounts.authorize(args[0], args[1] if len(args) > 1 else kwargs.get("context"))
            pacer = pacing.for_path(self.route_path(args[0])) if pacing is not None else None
            token = concurrency.acquire() if concurrency is not None else 0
            stats.count_request()
            throttled = False
            sent_at = 0.0
            try:
                if pacer is not None:
                    sent_at = pacer.wait()  # every attempt, retries included, takes a turn
                raise_if_cancelled()  # the plan may have closed while this waited its turn
                response = func(*args, **kwargs)
            except RetriableAPIError as exc:
                refused = exc.response
                throttled = refused is not None and refused.status_code == 429  # noqa: PLR2004
                if throttled and pacer is not None:
                    # The pacer holds every request back; this one waits as long (retry_waits).
                    exc.wait_seconds = pacer.refused_after(  # type: ignore[attr-defined]
                        sent_at, retry_after_seconds(refused)
                    )
                raise
            finally:
                if concurrency is not None:
                    concurrency.release(token, throttled=throttled)
            if pacer is not None:
                pacer.succeeded(sent_at)
            clock.observe(response)
            return response

        return self.with_retries(guarded)

    def route_path(self, prepared: requests.PreparedRequest) -> str:
        """A request's path below `api_url` (which may itself have a path, behind a proxy)."""
        path = urlparse(prepared.url or "").path
        prefix = urlparse(self.url_base).path.rstrip("/")
        return path.removeprefix(prefix) if prefix and path.startswith(prefix + "/") else path

    def with_retries(self, func: Callable[..., requests.Response]) -> RequestFunc:
        """The SDK's retry loop, but its words are ours: one WARNING per retry, nothing else.

        `logger=None` silences the backoff library's own lines (an INFO line per retry with the
        exception, an ERROR line on giving up); the tap says why a sync failed in one line.
        """
        decorate = backoff.on_exception(
            self.backoff_wait_generator,
            RETRIABLE_ERRORS,
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )
        return t.cast("RequestFunc", decorate(func))

    @override
    def _generate_record_messages(
        self, record: Record
    ) -> Generator[singer.RecordMessage, None, None]:
        # The SDK walks every record against the selection mask, recursively: the largest
        # share of its per-record CPU. With every property selected the walk removes nothing,
        # and with conformance NONE that step is a no-op too, so these are the SDK's own
        # messages without the two steps (tests/test_output_identity.py compares them).
        # No public hook skips the walk.
        if not self.emits_records_unchanged:
            yield from super()._generate_record_messages(record)
            return
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=dt.datetime.now(dt.timezone.utc),
                )

    @functools.cached_property
    def emits_records_unchanged(self) -> bool:
        """Every property selected and no type conformance: records go out as they are."""
        return self.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE and all(self.mask.values())

    def drop_unknown_fields(self, row: Record) -> Record:
        """What the SDK's conformance does, for streams without it: drop undeclared fields.

        Said once per field and stream, so a field Bolna adds shows up in the log.
        """
        unknown = row.keys() - self.schema["properties"].keys()
        if not unknown:
            return row
        new = unknown - self._warned_fields
        if new:
            self._warned_fields |= new
            self.logger.warning(
                "Fields %s are not in the %s schema; dropped.", sorted(new), self.name
            )
        return {key: value for key, value in row.items() if key not in unknown}

    @functools.cached_property
    def _warned_fields(self) -> set[str]:
        return set()

    @override
    def log_sync_costs(self) -> None:
        # The SDK calls this for every stream once all have synced: the place for the summary.
        super().log_sync_costs()
        if self.reports_sync_summary:
            self.logger.info("%s", self.stats.summary())

    @override
    def backoff_wait_generator(self) -> Generator[float, BaseException | None, None]:
        return retry_waits()

    @override
    def backoff_jitter(self, value: float) -> float:
        # Jitter is applied inside retry_waits: a server-given Retry-After is honoured exactly.
        return value

    @override
    def backoff_max_tries(self) -> int:
        return BACKOFF_MAX_TRIES

    @override
    def backoff_handler(self, details: Details) -> None:
        # The SDK logs every retry at ERROR, with function and PreparedRequest reprs.
        self.stats.count_retry()
        self.logger.warning("%s", retry_message(details, self.backoff_max_tries()))

    def get_json(
        self, path: str, params: dict[str, t.Any], context: Context | None = None
    ) -> t.Any:  # noqa: ANN401
        """One GET outside the paginated record loop, with the same errors and retries.

        Sent with the key of the account in `context` (the parent's without one).
        """

        def send(
            prepared: requests.PreparedRequest, _context: Context | None = None
        ) -> requests.Response:
            response = self.requests_session.send(prepared, timeout=self.timeout)
            self.validate_response(response)
            return response

        prepared = self.build_prepared_request(
            method="GET", url=self.url_base + path, params=params, headers=self.http_headers
        )
        # The SDK types its decorator for `_request(prepared, context)`; any callable works.
        request = t.cast(
            "Callable[[requests.PreparedRequest, Context | None], requests.Response]",
            self.request_decorator(send),  # type: ignore[arg-type]
        )
        return response_json(request(prepared, context))


def retry_message(details: Details, max_tries: int) -> str:
    """One line for one retry: what failed where, which retry this is, and how long we wait."""
    exception = details.get("exception")
    wait = details.get("wait") or 0.0
    what = describe_failure(exception) if exception else "The request failed"
    asked = retry_after_seconds(server_response(exception)) is not None
    source = " as Retry-After asks" if asked else ""
    return f"{what}: retry {details['tries']} of {max_tries - 1} in {wait:.1f} s{source}"


def server_response(exception: BaseException | None) -> requests.Response | None:
    """The HTTP response behind a retriable error, if the server answered at all."""
    response = getattr(exception, "response", None)
    return response if isinstance(response, requests.Response) else None


def describe_failure(exception: BaseException) -> str:
    """What went wrong, and where, in words: no reprs, no query string, never a header."""
    response = server_response(exception)
    if isinstance(exception, RetriableAPIError) and response is not None:
        path = urlparse(response.url).path
        if response.status_code < HTTPStatus.BAD_REQUEST:
            kind = response.headers.get("Content-Type", "unknown content type")
            return f"HTTP {response.status_code} with a non-JSON body ({kind}) on {path}"
        return f"HTTP {response.status_code} on {path}"
    request = getattr(exception, "request", None)
    where = urlparse(getattr(request, "url", None) or "")
    host = where.netloc.rpartition("@")[2] or "the API"
    on_path = f" on {where.path}" if where.path else ""
    return f"Connection to {host} failed ({connection_cause(exception)}){on_path}"


def connection_cause(exception: BaseException) -> str:
    """The root cause of a failed connection, as a person would say it."""
    causes = list(exception_chain(exception))
    for kind, phrase in CONNECTION_CAUSES:
        cause = next((cause for cause in causes if isinstance(cause, kind)), None)
        if cause is not None:
            reason = getattr(cause, "reason", None) if kind is ssl.SSLError else None
            return f"{phrase}: {reason}" if isinstance(reason, str) else phrase
    innermost = causes[-1]
    return (
        f"{type(innermost).__name__}: {innermost}" if str(innermost) else type(innermost).__name__
    )


def exception_chain(exception: BaseException) -> Iterator[BaseException]:
    """An exception and every exception it wraps (requests and urllib3 nest them deeply)."""
    pending, seen = [exception], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [*current.args, getattr(current, "reason", None)]
        wrapped += [current.__cause__, current.__context__]
        pending += [item for item in wrapped if isinstance(item, BaseException)]


def path_parameters(template: str, path: str) -> dict[str, str]:
    """Values of `{name}` placeholders of a path template in a concrete path, if it matches."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    match = re.fullmatch(pattern, path)
    return match.groupdict() if match else {}


def retry_waits(
    base: float = BACKOFF_BASE_SECONDS, cap: float = MAX_RETRY_WAIT_SECONDS
) -> Generator[float, BaseException | None, None]:
    """Wait before each retry: the pacer's pause after a 429, else Retry-After, else backoff.

    Backoff is exponential with full jitter. The SDK's default waits ignore Retry-After; the
    backoff library sends each failure in here.
    """
    attempt = 0
    exception = yield 0.0  # primed by the backoff library with a bare send(None)
    while True:
        paced_wait = getattr(exception, "wait_seconds", None)  # a 429: the pacer's pause
        server_wait = retry_after_seconds(getattr(exception, "response", None))
        if paced_wait is not None:
            wait = paced_wait
        elif server_wait is not None:
            wait = server_wait
        else:
            wait = random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311
        attempt += 1
        exception = yield wait
