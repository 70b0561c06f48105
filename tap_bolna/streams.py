"""Stream definitions for tap-bolna: declarative, with the window walk in one place."""

from __future__ import annotations

import datetime as dt
import decimal
import sys
import typing as t
from http import HTTPStatus
from urllib.parse import urlparse

from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_bolna import schemas
from tap_bolna.accounts import PARENT, SUB_ACCOUNT_ID, SUB_ACCOUNTS_PATH, Account
from tap_bolna.client import BolnaAPIError, BolnaStream, response_json
from tap_bolna.fetch_plan import (
    AgentFetches,
    CancelledFetchLogFilter,
    FetchPlan,
    Page,
    WindowJob,
)
from tap_bolna.progress import AgentProgress
from tap_bolna.windows import (
    FALLBACK_HISTORY_DAYS,
    AgentBookmark,
    AgentSync,
    EmitFilter,
    LookBack,
    parse_timestamp,
    plan_agent,
)

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    import requests
    from singer_sdk.helpers.types import Context, Record

# A clock difference with Bolna worth one INFO line at the start of a sync.
CLOCK_OFFSET_WORTH_SAYING_SECONDS = 60
# Settings passed through unchanged to the executions endpoint as filters.
EXECUTION_FILTERS = ("status", "call_type", "provider", "batch_id")
# How Bolna answers a sub-account key it does not accept (or a sub-account deleted meanwhile).
ACCOUNT_REFUSALS = (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND)
# Bolna sums usage over at most 32 days per request (from the start of the first day to the
# end of the last one: 32 calendar days).
USAGE_MAX_DAYS = 32
# Usage of a day moves while its calls finish: every sync reads today and these days again.
USAGE_REREAD_DAYS = 3


class AgentsStream(BolnaStream):
    """Every agent of the account (or only those in `agent_ids`); parent of per-agent streams."""

    name = "agents"
    path = "/v2/agent/all"
    primary_keys = ("id",)
    schema = schemas.AGENT_SCHEMA.to_dict()

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        agents: list[dict[str, t.Any]] = []
        for account in self.account_list():
            agents += self.list_agents(account)
        wanted = list(dict.fromkeys(self.config.get("agent_ids") or []))
        if wanted:
            listed = {agent["id"]: agent for agent in agents}
            # Resolve every configured id before emitting anything, so a typo fails fast.
            agents = [listed.get(agent_id) or self.fetch_agent(agent_id) for agent_id in wanted]
        self.announce_to_children(agents)
        yield from agents

    def account_list(self) -> list[Account]:
        """The parent account, and the sub-accounts when `include_sub_accounts` is set."""
        if self.accounts is None:
            return [PARENT]
        accounts = self.accounts.accounts(self.get_json)
        unlisted = self.accounts.unlisted()
        if unlisted:
            self.logger.warning(
                "Bolna lists no sub-account %s (deleted, or not this organisation's): "
                "skipped; the other accounts are synced.",
                ", ".join(unlisted),
            )
        return accounts

    def list_agents(self, account: Account) -> list[dict[str, t.Any]]:
        """One account's agents, with that account's key; a refused sub-account has none."""
        try:
            agents = self.get_json(self.path or "", {}, account.context)
        except BolnaAPIError as exc:
            refused = exc.status_code in ACCOUNT_REFUSALS
            if account.sub_account_id is None or not refused or self.accounts is None:
                raise
            self.accounts.refuse(account.sub_account_id)
            self.logger.warning(
                "Bolna refused the key of %s (HTTP %s on %s): skipped this sync; the other "
                "accounts are synced.",
                account.label,
                exc.status_code,
                self.path,
            )
            return []
        if not isinstance(agents, list):
            msg = f"Bolna answered {self.path} with {type(agents).__name__}, expected a JSON array"
            raise BolnaAPIError(msg)
        for agent in agents:
            agent[SUB_ACCOUNT_ID] = account.sub_account_id
        return agents

    def announce_to_children(self, agents: list[dict[str, t.Any]]) -> None:
        """Tell per-agent streams which agents come, in order, before their syncs start."""
        contexts = [self.get_child_context(agent, None) for agent in agents]
        for child in self.child_streams:
            if isinstance(child, AgentScopedStream):
                child.announce_agents(contexts, {agent["id"]: agent for agent in agents})

    def fetch_agent(self, agent_id: str) -> dict[str, t.Any]:
        """An agent the list does not show; a 404 names the configured id."""
        try:
            agent = t.cast("dict[str, t.Any]", self.get_json(f"/v2/agent/{agent_id}", {}))
        except BolnaAPIError as exc:
            if exc.status_code != 404:  # noqa: PLR2004
                raise
            msg = f"Unknown agent {agent_id!r} in agent_ids: Bolna answered HTTP 404 ({exc.detail})"
            raise BolnaAPIError(msg, status_code=404, detail=exc.detail) from None
        agent[SUB_ACCOUNT_ID] = None  # read with the parent key: the parent's own agent
        return agent

    @override
    def get_child_context(self, record: Record, context: Context | None) -> Context:
        # The account is one more level of the partition: absent for the parent's own agents.
        return {**account_context(record), "agent_id": record["id"]}

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        ingest = row.get("ingest_source_config")
        if isinstance(ingest, dict):
            # A credential for the agent's lead source: it has no place in a warehouse, and
            # the SDK would warn on every sync that the schema lacks it.
            ingest.pop("source_auth_token", None)
        return row


class AgentScopedStream(BolnaStream):
    """A stream read once per agent; `agent_id` is set on every record from the context."""

    parent_stream_type = AgentsStream

    def announce_agents(self, contexts: list[Context], agents: dict[str, Record]) -> None:
        """The agents the parent is about to sync, in order, and their records by id."""

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        if context and row.get("agent_id") is None:
            row["agent_id"] = context["agent_id"]
        row[SUB_ACCOUNT_ID] = (context or {}).get(SUB_ACCOUNT_ID)
        return row


class BatchesStream(AgentScopedStream):
    """Batch campaigns of each agent (`GET /batches/{agent_id}/all`, a bare array)."""

    name = "batches"
    path = "/batches/{agent_id}/all"
    primary_keys = ("batch_id",)
    schema = schemas.BATCH_SCHEMA.to_dict()
    # A full-table stream keeps no bookmark: no empty state partition per agent.
    state_partitioning_keys = ()


class PhoneNumbersStream(BolnaStream):
    """Phone numbers rented or linked in the account (`GET /phone-numbers/all`)."""

    name = "phone_numbers"
    path = "/phone-numbers/all"
    primary_keys = ("id",)
    schema = schemas.PHONE_NUMBER_SCHEMA.to_dict()


class KnowledgebasesStream(BolnaStream):
    """Knowledge bases (RAG documents) of the account (`GET /knowledgebase/all`)."""

    name = "knowledgebases"
    path = "/knowledgebase/all"
    primary_keys = ("rag_id",)
    schema = schemas.KNOWLEDGEBASE_SCHEMA.to_dict()


class AccountStream(BolnaStream):
    """One snapshot of the account (`GET /user/me`) per sync, stamped with the sync time.

    Incremental on `synced_at`, so rows accumulate into a balance history instead of a
    full-table reload replacing (or soft-deleting) the previous snapshot.
    """

    name = "account"
    path = "/user/me"
    primary_keys = ("id", "synced_at")
    replication_key = "synced_at"
    is_sorted = True
    schema = schemas.ACCOUNT_SCHEMA.to_dict()

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        account = response_json(response)
        if not account:  # [], {} or null: nothing to snapshot, which is no reason to fail a sync
            self.logger.warning("Bolna answered %s with an empty body; no account row.", self.path)
            return
        if not isinstance(account, dict):
            msg = f"Bolna answered {self.path} with {type(account).__name__}, expected an object"
            raise BolnaAPIError(msg)
        account["synced_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        yield account


class SubAccountsStream(BolnaStream):
    """The sub-accounts of an agency's parent key (`GET /sub-accounts/all`), without their keys.

    Emits nothing unless `include_sub_accounts` is set. The listing is read once per run and
    shared with the agents stream (`accounts.AccountKeys`), which keeps the keys.
    """

    name = "sub_accounts"
    path = SUB_ACCOUNTS_PATH
    primary_keys = ("id",)
    schema = schemas.SUB_ACCOUNT_SCHEMA.to_dict()

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        if self.accounts is not None:
            yield from self.accounts.sub_accounts(self.get_json)


class SubAccountUsageStream(BolnaStream):
    """Each sub-account's usage and cost per UTC day (`GET /sub-accounts/all/usage`).

    One request per day with usage, for every sub-account at once, after one request per
    32 days (Bolna's longest range) that finds the days worth asking about. Today and the
    `USAGE_REREAD_DAYS` before it are read again by every sync: a day's usage still moves
    while its calls finish. Days without calls or cost give no row.
    """

    name = "sub_account_usage"
    path = "/sub-accounts/all/usage"
    primary_keys = ("sub_account_id", "date")
    replication_key = "date"
    is_sorted = False
    schema = schemas.SUB_ACCOUNT_USAGE_SCHEMA.to_dict()

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        if self.accounts is None:
            return
        wanted = {item["id"] for item in self.accounts.sub_accounts(self.get_json)}
        if not wanted:
            return
        first, last = self.usage_days(context)
        for chunk in day_ranges(first, last, USAGE_MAX_DAYS):
            totals = self.usage(chunk[0], chunk[-1])
            if not any(row.get(SUB_ACCOUNT_ID) in wanted and has_usage(row) for row in totals):
                continue  # nothing in these days: no request per day
            for day in chunk:
                rows = totals if len(chunk) == 1 else self.usage(day, day)
                for row in rows:
                    if row.get(SUB_ACCOUNT_ID) in wanted and has_usage(row):
                        yield {**row, "date": day.isoformat()}
        # The bookmark is the last day read, with or without usage (see _increment_stream_state).
        state = self.get_context_state(context)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = last.isoformat()

    def usage_days(self, context: Context | None) -> tuple[dt.date, dt.date]:
        """The first and last UTC day this sync reads."""
        today = self.server_clock.now().date()
        end_date = self.config.get("end_date")
        last = min(today, parse_timestamp(end_date).date()) if end_date else today
        state = self.get_context_state(context)
        stored = state.get("replication_key_value")
        start_date = self.config.get("start_date")
        if stored and state.get("replication_key") == self.replication_key:
            first = dt.date.fromisoformat(str(stored)) - dt.timedelta(days=USAGE_REREAD_DAYS)
            if start_date:
                first = max(first, parse_timestamp(start_date).date())
        elif start_date:
            first = parse_timestamp(start_date).date()
        else:
            first = today - dt.timedelta(days=FALLBACK_HISTORY_DAYS)
        return min(first, last), last

    def usage(self, first: dt.date, last: dt.date) -> list[dict[str, t.Any]]:
        """Every sub-account's usage from the start of `first` to the end of `last` (UTC)."""
        start = dt.datetime.combine(first, dt.time(), tzinfo=dt.timezone.utc)
        end = dt.datetime.combine(last, dt.time.max, tzinfo=dt.timezone.utc)
        params = {
            "from": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "to": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        body = self.get_json(self.path or "", params)
        if not isinstance(body, list):
            msg = f"Bolna answered {self.path} with {type(body).__name__}, expected a JSON array"
            raise BolnaAPIError(msg)
        return [row for row in body if isinstance(row, dict)]

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        # `from` and `to` say which range was summed: here always the row's `date`.
        row.pop("from", None)
        row.pop("to", None)
        return row

    @override
    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        # The bookmark is the last day read (get_records), not the newest day with usage:
        # an idle stretch must not be read again by every sync. (No public hook for this.)
        return


def day_ranges(first: dt.date, last: dt.date, days: int) -> Iterator[list[dt.date]]:
    """The days from `first` to `last`, in runs of at most `days`."""
    chunk: list[dt.date] = []
    day = first
    while day <= last:
        chunk.append(day)
        if len(chunk) == days:
            yield chunk
            chunk = []
        day += dt.timedelta(days=1)
    if chunk:
        yield chunk


def has_usage(row: Mapping[str, t.Any]) -> bool:
    """Whether a usage row counts any call or any cost."""
    return bool(row.get("total_records") or row.get("total_cost"))


class ExecutionsStream(AgentScopedStream):
    """Every call (execution) of each agent, synced incrementally in `created_at` windows.

    Which windows an agent needs and which records they emit is decided in `windows.py`;
    how their pages are fetched (in parallel, handed back in order) in `fetch_plan.py`. The
    SDK still does emission, state output and the child stream.
    """

    name = "executions"
    path = "/v2/agent/{agent_id}/executions"
    primary_keys = ("id",)
    replication_key = "created_at"
    # Newest first within a window: the bookmark is set per window, not per record.
    is_sorted = False
    schema = schemas.EXECUTION_SCHEMA.to_dict()
    # The SDK's recursive conformance was the tap's largest CPU cost. Records are decoded
    # JSON (no datetimes, bytes or NaN to convert) and post_process already fixes the one
    # mixed type (durations) and drops unknown top-level fields, so the output is the same
    # (tests/test_output_identity.py); see BolnaStream for what else that allows.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401
        """Per-run plans, and the agents the parent announced for fetching ahead."""
        super().__init__(*args, **kwargs)
        self._sync_time = dt.datetime.now(dt.timezone.utc)
        self.fetches = AgentFetches(self.plan_agent, self.new_fetch_plan)
        self._page_request: t.Callable[..., requests.Response] | None = None
        self._agents: dict[str, Record] = {}
        self._said_history_assumed = False

    @property
    def lookback(self) -> LookBack:
        """How far incremental syncs read again, and how long they follow calls."""
        return LookBack(
            self.config["lookback_minutes"],
            self.config["pending_lookback_days"],
            self.config["retry_horizon_hours"],
        )

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        yield from response_json(response).get("data") or ()

    def filter_params(self) -> dict[str, t.Any]:
        """The user's execution filters, as query parameters."""
        params = {key: self.config[key] for key in EXECUTION_FILTERS if self.config.get(key)}
        voice_mail = self.config.get("answered_by_voice_mail")
        if voice_mail is not None:
            params["answered_by_voice_mail"] = "true" if voice_mail else "false"
        return params

    @override
    def get_url_params(self, context: Context | None, next_page_token: t.Any | None) -> dict:
        if not context or "from" not in context or "to" not in context:  # pragma: no cover
            msg = "an executions request without from/to: Bolna refuses it (a bug in the tap)"
            raise RuntimeError(msg)
        params = {"page_number": next_page_token or 1, "page_size": self.config["page_size"]}
        params.update(self.filter_params())
        params["from"], params["to"] = context["from"], context["to"]
        return params

    @override
    def announce_agents(self, contexts: list[Context], agents: dict[str, Record]) -> None:
        # A new sync of the parent starts: one "now", on Bolna's clock, for every agent.
        self._sync_time = self.server_clock.now()
        self._agents = agents
        self._said_history_assumed = False
        self.fetches.announce(contexts if self.selected else [])
        offset = self.server_clock.offset.total_seconds()
        if abs(offset) >= CLOCK_OFFSET_WORTH_SAYING_SECONDS:
            self.logger.info(
                "Bolna's clock is %.0f s %s this machine's; windows end at Bolna's time.",
                abs(offset),
                "behind" if offset < 0 else "ahead of",
            )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        if context is None:  # pragma: no cover - always called per agent by the parent
            return
        agent = self.fetches.agent(context)
        emit = EmitFilter(
            agent.bookmark,
            lower_bound=agent.lower_bound,
            now=self._sync_time,
            lookback=self.lookback,
        )
        name = (self._agents.get(agent.agent_id) or {}).get("agent_name") or "unnamed"
        label = f"{name} ({agent.agent_id})" if agent.agent_id in self._agents else agent.agent_id
        progress = AgentProgress(self.logger, label, len(agent.windows))
        try:
            with self.get_http_request_counter() as request_counter:
                request_counter.with_context(context)
                for window, read in self.fetches.reads(agent):
                    for record in read.records():
                        if emit.should_emit(record, window):
                            progress.record_emitted()
                            yield record
                        progress.heartbeat(window, read.pages)
                    request_counter.increment(read.pages)
                    emit.complete(window)
                    self.checkpoint(context, agent.bookmark)
                    progress.window_done(window)
                    if emit.gone:
                        self.warn_gone(agent, emit.gone)
                        emit.gone.clear()
        except BaseException:
            self.fetches.close()  # an error or a signal ends the sync: stop the workers
            raise
        progress.agent_done(new=emit.new, changed=emit.changed, pending=len(agent.bookmark.pending))
        self.stats.count_agent(progress.emitted)

    def plan_agent(self, context: Context) -> AgentSync:
        """Plan one agent's sync from its stored bookmark (see `windows.plan_agent`)."""
        created_at = (self._agents.get(context["agent_id"]) or {}).get("created_at")
        agent = plan_agent(
            context,
            AgentBookmark.from_state(self.stored_partition_state(context)),
            now=self._sync_time,
            start_date=self.configured_time("start_date"),
            end_date=self.configured_time("end_date"),
            window_days=self.config["window_days"],
            page_size=self.config["page_size"],
            lookback=self.lookback,
            agent_created_at=parse_timestamp(str(created_at)) if created_at else None,
        )
        if agent.expired_pending:
            self.warn_expired_pending(agent)
        if agent.history_assumed and not self._said_history_assumed:
            self._said_history_assumed = True  # once a sync: it is the same for every agent
            self.logger.warning(
                "Bolna gave agent %s no created_at: its history is read from %d days ago "
                "(%s); set start_date to read from elsewhere.",
                agent.agent_id,
                FALLBACK_HISTORY_DAYS,
                agent.windows[0].params()["from"] if agent.windows else "nothing to read",
            )
        return agent

    def stored_partition_state(self, context: Context) -> Mapping[str, t.Any]:
        """The agent's partition as stored, without creating one as `get_context_state` does.

        Agents are planned ahead of their sync: that must not change what STATE says.
        """
        for partition in self.stream_state.get("partitions") or ():
            if partition.get("context") == context:
                return t.cast("Mapping[str, t.Any]", partition)
        return {}

    def new_fetch_plan(self, windows: Iterator[WindowJob]) -> FetchPlan:
        """A fetch plan over `windows` with this sync's workers."""
        if not any(isinstance(f, CancelledFetchLogFilter) for f in self.logger.filters):
            self.logger.addFilter(CancelledFetchLogFilter())
        return FetchPlan(
            windows,
            self.fetch_page,
            workers=self.config["max_workers"],
            page_size=self.config["page_size"],
            record_key=lambda record: record["id"],
            logger=self.logger,
        )

    def fetch_page(self, job: WindowJob, page_number: int) -> Page:
        """One page of one window (called in a worker thread when max_workers > 1).

        Not the SDK's paginator: it fetches a window's pages one after another, and the
        fetch plan needs any page of any window, in parallel.
        """
        window = job.window
        if window.call_id is not None and page_number == 1:
            try:
                record = self.get_json(f"/executions/{window.call_id}", {}, job.context)
            except BolnaAPIError as exc:
                if exc.status_code != HTTPStatus.NOT_FOUND:
                    raise
                # Not found by id: read its window once before it is dropped (EmitFilter.gone).
            else:
                return Page(records=[record], total=1, has_more=False)
        context = {**job.context, **window.params()}
        prepared = self.build_prepared_request(
            method="GET",
            url=self.get_url(context),
            params=self.get_url_params(context, page_number),
            headers=self.http_headers,
        )
        if self._page_request is None:
            # The SDK's own request (auth, timeout, duration METRIC) with our retries.
            self._page_request = self.request_decorator(self._request)
        response = self._page_request(prepared, context)
        body = response_json(response)
        total = body.get("total")
        return Page(
            records=list(self.parse_response(response)),
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
            has_more=bool(body.get("has_more")),
        )

    @override
    def finalize_state_progress_markers(self, state: dict | None = None) -> None:
        if state is None:
            self.fetches.close()  # the stream's last call of a sync
        super().finalize_state_progress_markers(state)

    def checkpoint(self, context: Context, bookmark: AgentBookmark) -> None:
        """Write the agent's bookmark and emit STATE, right after a window's last record.

        The SDK only finalizes unsorted bookmarks when a partition ends; a long backfill
        killed half way would start over.
        """
        partition_state = self.get_context_state(context)
        bookmark.write_to(partition_state)
        self.finalize_state_progress_markers(partition_state)

    @override
    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        # The window walk owns this stream's bookmark (see checkpoint). The SDK's per-record
        # "progress markers" would be promoted at partition end and overwrite it with the
        # newest created_at seen, so they are not kept at all. (No public hook for this.)
        return

    def warn_gone(self, agent: AgentSync, gone: list[str]) -> None:
        """Say that followed calls Bolna no longer has are no longer followed."""
        self.logger.warning(
            "Agent %s: %d followed call(s) are gone (HTTP 404 by id, and not listed in their "
            "window), e.g. %s; no longer followed.",
            agent.agent_id,
            len(gone),
            gone[0],
        )

    def warn_expired_pending(self, agent: AgentSync) -> None:
        """Say that calls pending for longer than the follow horizon are no longer followed."""
        expired = agent.expired_pending
        self.logger.warning(
            "Agent %s: %d call(s) still pending after %d days (oldest created %s, e.g. %s) "
            "are no longer re-checked; raise pending_lookback_days to follow them longer.",
            agent.agent_id,
            len(expired),
            self.config["pending_lookback_days"],
            min(call["created_at"] for call in expired.values()),
            next(iter(sorted(expired))),
        )

    def configured_time(self, setting: str) -> dt.datetime | None:
        """A date setting as an aware UTC datetime (already validated by the tap)."""
        value = self.config.get(setting)
        return parse_timestamp(value) if value else None

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        row = self.drop_unknown_fields(normalize_execution(row))
        return super().post_process(row, context)

    @override
    def get_child_context(self, record: Record, context: Context | None) -> Context:
        return {**account_context(record), "execution_id": record["id"]}


class ExecutionLogsStream(BolnaStream):
    """Raw request/response log lines of each call emitted by this sync (one request per call).

    Not selected by default: it multiplies the requests of a sync by the number of calls.
    """

    name = "execution_logs"
    path = "/executions/{execution_id}/log"
    primary_keys = ("execution_id", "position")
    parent_stream_type = ExecutionsStream
    selected_by_default = False
    schema = schemas.EXECUTION_LOG_SCHEMA.to_dict()
    # No bookmark per call: the parent decides which calls are read.
    state_partitioning_keys = ()

    @override
    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == HTTPStatus.NOT_FOUND:
            # A call deleted since it was listed has no log: not a reason to stop the sync.
            self.logger.warning("No log for %s (HTTP 404); skipped.", urlparse(response.url).path)
            return
        super().validate_response(response)

    @override
    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        if response.status_code == HTTPStatus.NOT_FOUND:
            return
        body = response_json(response)
        lines = body.get("data") if isinstance(body, dict) else body
        for position, line in enumerate(lines or ()):
            yield {**line, "position": position}

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        # Half the key; with no state partition per call the SDK does not copy it in.
        if context:
            row["execution_id"] = context["execution_id"]
        row[SUB_ACCOUNT_ID] = (context or {}).get(SUB_ACCOUNT_ID)
        return row


def account_context(record: Mapping[str, t.Any]) -> dict[str, str]:
    """The account part of a child's context, from a record's `sub_account_id` (None: nothing)."""
    sub_account_id = record.get(SUB_ACCOUNT_ID)
    return {} if sub_account_id is None else {SUB_ACCOUNT_ID: str(sub_account_id)}


def normalize_execution(row: dict[str, t.Any]) -> dict[str, t.Any]:
    """One type per column: durations as integers, the current field names only."""
    if "conversation_duration" not in row and "conversation_time" in row:
        row["conversation_duration"] = row.pop("conversation_time")
    for nested in ("telephony_data", "transfer_call_data"):
        part = row.get(nested)
        if isinstance(part, dict) and "duration" in part:
            part["duration"] = as_integer(part["duration"])
    return row


def as_integer(value: object) -> int | None:
    """Whole seconds from an int, a float or a numeric string ("42", "42.0"); else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(decimal.Decimal(str(value).strip()).to_integral_value(decimal.ROUND_HALF_UP))
    except (decimal.InvalidOperation, ValueError):
        return None
