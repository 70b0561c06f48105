"""The SQL of every endpoint, over two dbt models of the served schema.

`bolna__executions` holds each call as Bolna's API returns it (JSON rendered by dbt), with the
columns that are filtered, ordered and paged on, and the numbers dbt gives the calls; it serves
the listing and the lookup by id. `bolna__calls` serves the metrics (its flags) and the CSV. A
page is one statement: one snapshot, and one string of JSON handed to the client.

Client values only ever reach PostgreSQL as bound parameters (`%(name)s`); the schema comes
from the server's settings and is quoted as an identifier.

Paging (docs/http-api.md, "How paging works"): newest first, ties broken by call_id.
- Filters that are only `agent_id`, only `batch_id` or none (with or without `from`/`to`) use
  the numbers dbt gives the calls (agent_call_number, …): the total is the difference of two
  numbers found in the index, and page N is a range of numbers: page 2,000 costs what page 1 does.
- Other filters (status, call_type, agent_id with batch_id) count their matches, and
  page_number N skips (N - 1) pages in an index.
- A cursor (the Link header's `next`) continues after the last call of the previous page, with
  any filter: a keyset, so a page never repeats or skips a call even while new calls arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from bolna_api.params import Filters, Page

# The equality filters whose calls dbt numbers, and the column holding the numbers.
NUMBERED: dict[frozenset[str], tuple[str | None, str]] = {
    frozenset(): (None, "call_number"),
    frozenset({"agent_id"}): ("agent_id", "agent_call_number"),
    frozenset({"batch_id"}): ("batch_id", "batch_call_number"),
}
EQUALITY_FILTERS = ("agent_id", "batch_id", "sub_account_id", "status", "call_type")
CSV_BATCH_ROWS = 2000
ISO_UTC = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''


@dataclass(frozen=True)
class PageResult:
    """One page: the total, the calls as a JSON array (text), and where the next page starts."""

    total: int
    calls_json: str
    has_more: bool
    last_created_at: dt.datetime | None
    last_call_id: str | None


def where(filters: Filters, *, dates: bool = True) -> tuple[sql.Composable, dict[str, Any]]:
    """`a = %(a)s and …` for the given filters, and their parameters."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for name in EQUALITY_FILTERS:
        value = getattr(filters, name)
        if value is not None:
            parts.append(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)))
            params[name] = value
    if dates and filters.created_from is not None:
        parts.append(sql.SQL("created_at >= %(created_from)s"))
        params["created_from"] = filters.created_from
    if dates and filters.created_to is not None:
        parts.append(sql.SQL("created_at <= %(created_to)s"))
        params["created_to"] = filters.created_to
    return (sql.SQL(" and ").join(parts) if parts else sql.SQL("true")), params


class Warehouse:
    """The served schema's models, through a pool of read-only connections."""

    def __init__(self, pool: AsyncConnectionPool, schema: str) -> None:
        """Queries over `schema`.bolna__calls and `schema`.bolna__executions."""
        self.pool = pool
        self.schema = schema
        self.calls = sql.Identifier(schema, "bolna__calls")
        self.executions = sql.Identifier(schema, "bolna__executions")

    async def page(self, filters: Filters, page: Page) -> PageResult:
        """One page of calls, newest first, and the total of calls that match."""
        given = frozenset(name for name in EQUALITY_FILTERS if getattr(filters, name) is not None)
        if given in NUMBERED:
            key, number = NUMBERED[given]
            total, bounds, params = self._numbered_total(filters, key, number)
        else:
            total, bounds, params = self._counted_total(filters)
        conditions, filter_params = where(filters)
        params.update(filter_params, size=page.size, offset=page.offset)
        # One call more than the page holds tells whether another page follows.
        newest_first = sql.SQL("order by created_at desc, call_id desc")
        if page.cursor is not None:
            rows = sql.SQL(
                "select call_id, created_at, execution from {executions} where {conditions}"
                " and (created_at, call_id) < (%(after_created_at)s, %(after_call_id)s)"
                " {newest_first} limit %(size)s + 1"
            ).format(executions=self.executions, conditions=conditions, newest_first=newest_first)
            params.update(
                after_created_at=page.cursor.created_at, after_call_id=page.cursor.call_id
            )
        elif given in NUMBERED:
            key, number = NUMBERED[given]
            # Numbers count oldest first: page N is the range just below high - (N - 1) * size.
            rows = sql.SQL(
                "select call_id, created_at, execution from {executions}"
                " where {key} and {number} between"
                " greatest((select low from bounds),"
                " (select high from bounds) - %(offset)s - %(size)s)"
                " and (select high from bounds) - %(offset)s"
            ).format(executions=self.executions, key=self._key(key), number=sql.Identifier(number))
        else:
            rows = sql.SQL(
                "select call_id, created_at, execution from {executions} where {conditions}"
                " {newest_first} offset %(offset)s limit %(size)s + 1"
            ).format(executions=self.executions, conditions=conditions, newest_first=newest_first)
        statement = sql.SQL(
            "with bounds as materialized ({bounds}),"
            " page as materialized ({rows}),"
            " placed as materialized (select call_id, created_at, execution,"
            " row_number() over (order by created_at desc, call_id desc) as place from page)"
            " select ({total}) as total,"
            " (select coalesce(json_agg(execution order by place), '[]')::text"
            " from placed where place <= %(size)s),"
            " (select count(*) > %(size)s from placed),"
            " (select created_at from placed where place = %(size)s),"
            " (select call_id from placed where place = %(size)s)"
        ).format(bounds=bounds, rows=rows, total=total)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            row = await cursor.fetchone()
        assert row is not None  # noqa: S101 - a select without FROM returns one row
        return PageResult(
            total=int(row[0]),
            calls_json=row[1],
            has_more=bool(row[2]),
            last_created_at=row[3],
            last_call_id=row[4],
        )

    @staticmethod
    def _key(key: str | None) -> sql.Composable:
        return (
            sql.SQL("{} = {}").format(sql.Identifier(key), sql.Placeholder(key))
            if key
            else sql.SQL("true")
        )

    def _numbered_total(
        self, filters: Filters, key: str | None, number: str
    ) -> tuple[sql.Composable, sql.Composable, dict[str, Any]]:
        """Total from the numbers of the first and last call in range: two index lookups."""
        params: dict[str, Any] = {}
        if key is not None:
            params[key] = getattr(filters, key)
        column = sql.Identifier(number)
        low: sql.Composable = sql.SQL("1")
        if filters.created_from is not None:
            params["created_from"] = filters.created_from
            # None: no call at or after `from`, so nothing is in range.
            low = sql.SQL(
                "coalesce((select {column} from {executions} where {key}"
                " and created_at >= %(created_from)s"
                " order by created_at, call_id limit 1), 9223372036854775807)"
            ).format(column=column, executions=self.executions, key=self._key(key))
        high_dates = (
            sql.SQL(" and created_at <= %(created_to)s") if filters.created_to else sql.SQL("")
        )
        if filters.created_to is not None:
            params["created_to"] = filters.created_to
        high = sql.SQL(
            "coalesce((select {column} from {executions} where {key}{dates}"
            " order by created_at desc, call_id desc limit 1), 0)"
        ).format(column=column, executions=self.executions, key=self._key(key), dates=high_dates)
        bounds = sql.SQL("select {low} as low, {high} as high").format(low=low, high=high)
        total = sql.SQL("select greatest(high - low + 1, 0) from bounds")
        return total, bounds, params

    def _counted_total(
        self, filters: Filters
    ) -> tuple[sql.Composable, sql.Composable, dict[str, Any]]:
        conditions, params = where(filters)
        total = sql.SQL("select count(*) from {executions} where {conditions}").format(
            executions=self.executions, conditions=conditions
        )
        return total, sql.SQL("select 1 as low, 0 as high"), params

    async def execution(self, call_id: str) -> str | None:
        """One call as Bolna's API returns it (JSON text), or None."""
        statement = sql.SQL("select execution::text from {} where call_id = %(call_id)s").format(
            self.executions
        )
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, {"call_id": call_id})
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def metrics(self, filters: Filters) -> str:
        """The guide's call metrics over the matching calls, from bolna__calls' flags (JSON text).

        completion_rate is a percentage to one decimal (as the dbt analyses' percent_of),
        average_duration the mean duration_s of completed calls (as bolna__agent_daily and
        analyses/call_duration.sql), failed_calls counts is_failed (status failed or error).
        """
        conditions, params = where(filters)
        statement = sql.SQL(
            "select json_build_object("
            "'total_calls', count(*),"
            " 'completed_calls', count(*) filter (where is_completed),"
            " 'completion_rate',"
            " round(100.0 * count(*) filter (where is_completed) / nullif(count(*), 0), 1),"
            " 'average_duration', round(avg(duration_s) filter (where is_completed), 1),"
            " 'failed_calls', count(*) filter (where is_failed),"
            " 'total_cost', coalesce(sum(total_cost), 0)"
            ")::text from {calls} where {conditions}"
        ).format(calls=self.calls, conditions=conditions)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            row = await cursor.fetchone()
        assert row is not None  # noqa: S101 - an aggregate returns one row
        return str(row[0])

    async def csv_rows(self, filters: Filters) -> AsyncIterator[tuple[Any, ...]]:
        """(Execution ID, Status, Duration, Recipient, Created) of every match, newest first.

        Streamed from the server in batches: memory does not grow with the number of calls.
        """
        conditions, params = where(filters)
        statement = sql.SQL(
            "select call_id, status, duration_s, to_number, to_char(created_at, {iso})"
            " from {calls} where {conditions} order by created_at desc, call_id desc"
        ).format(iso=sql.SQL(ISO_UTC), calls=self.calls, conditions=conditions)
        async with self.pool.connection() as conn:
            async for row in stream(conn, statement, params):
                yield row


async def stream(
    conn: AsyncConnection, statement: sql.Composed, params: dict[str, Any]
) -> AsyncIterator[tuple[Any, ...]]:
    """Rows of one statement as PostgreSQL sends them (one snapshot, no client-side buffer)."""
    cursor = conn.cursor()
    async for row in cursor.stream(statement, params, size=CSV_BATCH_ROWS):
        yield row
