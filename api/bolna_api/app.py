"""The Starlette application: routes, the JSON envelope, errors and the bearer token."""

from __future__ import annotations

import contextlib
import csv
import hmac
import io
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bolna_api.openapi import openapi_document
from bolna_api.params import (
    FILTERS,
    PAGING,
    BadParameterError,
    Cursor,
    parse_filters,
    parse_page,
    single_values,
)
from bolna_api.queries import Warehouse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from bolna_api.settings import Settings

logger = logging.getLogger("bolna-api")
JSON = "application/json"
CSV_COLUMNS = ("Execution ID", "Status", "Duration", "Recipient", "Created")
CSV_CHUNK_ROWS = 500


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The guide's error envelope: {"success": false, "error": "<one line>"}."""
    return JSONResponse({"success": False, "error": message}, status_code=status, headers=headers)


def success(data_json: str, headers: dict[str, str] | None = None) -> Response:
    """{"success": true, "data": …} around JSON that PostgreSQL rendered."""
    return Response(f'{{"success": true, "data": {data_json}}}', media_type=JSON, headers=headers)


def warehouse_of(request: Request) -> Warehouse:
    """The Warehouse the lifespan opened."""
    return request.app.state.warehouse  # type: ignore[no-any-return]


async def list_executions(request: Request) -> Response:
    """GET /api/executions: one page, newest first, in the guide's envelope."""
    values = single_values(request.query_params, FILTERS + PAGING)
    filters, page = parse_filters(values), parse_page(values)
    result = await warehouse_of(request).page(filters, page)
    headers = {}
    if result.has_more and result.last_created_at is not None and result.last_call_id is not None:
        after = Cursor(result.last_created_at, result.last_call_id, page.number + 1)
        query = {k: v for k, v in values.items() if k not in {"page_number", "cursor"}}
        query["cursor"] = after.encode()
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    body = (
        f'{{"page_number": {page.number}, "page_size": {page.size}, "total": {result.total},'
        f' "has_more": {json.dumps(result.has_more)}, "data": {result.calls_json}}}'
    )
    return success(body, headers)


async def one_execution(request: Request) -> Response:
    """GET /api/executions/{execution_id}."""
    single_values(request.query_params, ())
    call_id = request.path_params["execution_id"]
    found = await warehouse_of(request).execution(call_id)
    if found is None:
        return failure(404, f"no execution {call_id!r} in this warehouse")
    return success(found)


async def metrics(request: Request) -> Response:
    """GET /api/metrics: the guide's call metrics over the same filters."""
    filters = parse_filters(single_values(request.query_params, FILTERS))
    return success(await warehouse_of(request).metrics(filters))


async def executions_csv(request: Request) -> Response:
    """GET /api/executions.csv: every matching call, newest first, streamed as it is read."""
    filters = parse_filters(single_values(request.query_params, FILTERS))
    warehouse = warehouse_of(request)

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        async for call_id, status, duration, recipient, created in warehouse.csv_rows(filters):
            writer.writerow(
                (call_id, status, "" if duration is None else duration, recipient, created)
            )
            rows += 1
            if rows % CSV_CHUNK_ROWS == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="executions.csv"'},
    )


async def openapi(request: Request) -> Response:
    """GET /openapi.json: the description of these endpoints."""
    return JSONResponse(openapi_document(server=str(request.base_url).rstrip("/")))


async def bad_parameter(_request: Request, error: Exception) -> Response:
    """400, with the parameter and why."""
    return failure(400, str(error))


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405, in the envelope."""
    assert isinstance(error, HTTPException)  # noqa: S101 - registered for HTTPException only
    if error.status_code == 404:  # noqa: PLR2004
        return failure(404, f"no such endpoint: {request.url.path} (see /openapi.json)")
    return failure(error.status_code, str(error.detail))


async def warehouse_error(_request: Request, error: Exception) -> Response:
    """The warehouse failed: say so, without its address or credentials."""
    if isinstance(error, psycopg.errors.QueryCanceled):
        logger.warning("A query ran longer than the statement timeout and was cancelled")
        return failure(503, "the warehouse took too long to answer; narrow the filters")
    logger.warning("The warehouse failed: %s", type(error).__name__)
    return failure(503, "the warehouse is not answering; try again later")


async def internal_error(request: Request, error: Exception) -> Response:
    """Anything else: 500 in the envelope; the error goes to the server log."""
    logger.error("Internal error on %s: %s", request.url.path, type(error).__name__)
    return failure(500, "internal error; the server log says which")


class BearerToken:
    """Every request must carry `Authorization: Bearer <token>` (when a token is set)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        """Wrap `app`; an empty token lets every request through."""
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse requests without the token, with 401 in the envelope."""
        if self.token and scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = failure(
                    401,
                    "missing or wrong token: send Authorization: Bearer <BOLNA_API_TOKEN>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> ASGIApp:
    """The application serving `settings.schema`, with its connection pool."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            kwargs={**settings.connection_kwargs(), "autocommit": True},
            min_size=min(2, settings.pool_size),
            max_size=settings.pool_size,
            open=False,
            name="bolna-api",
        )
        await pool.open(wait=True, timeout=30)
        app.state.warehouse = Warehouse(pool, settings.schema)
        try:
            yield
        finally:
            await pool.close()

    handlers: MutableMapping[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BadParameterError: bad_parameter,
        HTTPException: http_error,
        psycopg.OperationalError: warehouse_error,
        Exception: internal_error,
    }
    app = Starlette(
        routes=[
            Route("/api/executions", list_executions),
            Route("/api/executions.csv", executions_csv),
            Route("/api/executions/{execution_id}", one_execution),
            Route("/api/metrics", metrics),
            Route("/openapi.json", openapi),
        ],
        exception_handlers=handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    return BearerToken(app, settings.token)
