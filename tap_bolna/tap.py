"""TapBolna: settings, start-up validation and the stream list."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import sys
import typing as t
from pathlib import Path
from urllib.parse import urlparse

from singer_sdk import Tap
from singer_sdk import typing as th

# Private, but the one function that reads TAP_BOLNA_* with the SDK's own type rules.
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError, RetriableAPIError
from singer_sdk.tap_base import CliTestOptionValue

from tap_bolna import streams
from tap_bolna.accounts import AccountKeys
from tap_bolna.client import (
    BACKOFF_MAX_TRIES,
    RETRIABLE_ERRORS,
    BolnaAPIError,
    BolnaStream,
    ServerClock,
    describe_failure,
)
from tap_bolna.limits import EXECUTIONS_ROUTES, OTHER_ROUTES, AdaptiveConcurrency, Pacing
from tap_bolna.progress import SyncStats
from tap_bolna.statuses import EXECUTION_STATUSES
from tap_bolna.windows import LookBack, Window, parse_timestamp

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import click

MAX_PAGE_SIZE = 50  # the API's own limit
MAX_WINDOW_DAYS = 7  # wider from/to ranges get HTTP 400
MAX_WORKERS = 8  # within the HTTP connection pool's default size of 10
# Failures the tap reports itself, in one line, when the sync ends on them.
ONE_LINE_FAILURES: tuple[type[Exception], ...] = (
    ConfigValidationError,
    BolnaAPIError,
    *RETRIABLE_ERRORS,
)
# The state keeps every call of the look-back: a day of a busy agent is already a lot.
MAX_LOOKBACK_MINUTES = 1440
# The default paces: Bolna allows 500 and 1,000 requests a minute per organisation, shared with
# the customer's own apps; the tap takes 60 % of each and leaves the rest to them.
DEFAULT_EXECUTIONS_PER_MINUTE = 300
DEFAULT_OTHER_PER_MINUTE = 600


class TapBolna(Tap):
    """Singer tap for the Bolna voice-AI API: agents, their calls (executions) and account data."""

    name = "tap-bolna"
    # msgspec serialises records several times faster than the default writer.
    message_writer_class = MsgSpecWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Bolna API key (dashboard → Developers), sent as `Authorization: Bearer`.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.bolna.ai",
            description=(
                "Base URL of the Bolna API: `https://`, or `http://` to this machine only "
                "(127.0.0.1, localhost, [::1]), so the key never travels in clear text."
            ),
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description=(
                "Earliest call `created_at` to extract (ISO 8601, UTC if no offset). Without it "
                "the first sync reads each agent's whole history, in 7-day windows from the "
                "agent's `created_at` (2 years back for an agent Bolna gives none)."
            ),
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            description="Latest call `created_at` to extract (ISO 8601), for bounded backfills.",
        ),
        th.Property(
            "agent_ids",
            th.ArrayType(th.StringType),
            description="Only these agents (default: every agent from `GET /v2/agent/all`).",
        ),
        th.Property(
            "include_sub_accounts",
            th.BooleanType,
            default=False,
            description=(
                "Also sync every sub-account of this (enterprise, parent) key: the tap lists "
                "them with `GET /sub-accounts/all` and reads each one's agents, calls and "
                "batches with that sub-account's own key, which it keeps in memory for the "
                "run only. Records carry `sub_account_id` (null for the parent's own data)."
            ),
        ),
        th.Property(
            "sub_account_ids",
            th.ArrayType(th.StringType),
            description=(
                "Only these sub-accounts (default: every one listed); needs `include_sub_accounts`."
            ),
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=MAX_PAGE_SIZE),
            default=MAX_PAGE_SIZE,
            description="Executions per request (the API allows at most 50).",
        ),
        th.Property(
            "window_days",
            th.IntegerType(minimum=1, maximum=MAX_WINDOW_DAYS),
            default=MAX_WINDOW_DAYS,
            description="Width in days of each `from`/`to` window (the API allows at most 7).",
        ),
        th.Property(
            "pending_lookback_days",
            th.IntegerType(minimum=1),
            default=LookBack.pending_days,
            description=(
                "How many days after it was created a call in a status that can still change "
                "(scheduled, prepared, queued, ringing, call-disconnected, or one the tap does "
                "not know) is followed by later syncs until it is final. Batches can be "
                "scheduled 30 days ahead."
            ),
        ),
        th.Property(
            "retry_horizon_hours",
            th.IntegerType(minimum=0),
            default=LookBack.retry_hours,
            description=(
                "How many hours after its last change a no-answer, busy, failed or error call "
                "is still followed, because Bolna's auto-retry can put it back to scheduled "
                "under the same id (by default 30, 60 and 120 minutes apart). Longer catches "
                "longer retry intervals and costs a re-check per sync for each such call; "
                "0 takes these statuses as final."
            ),
        ),
        th.Property(
            "lookback_minutes",
            th.IntegerType(minimum=0, maximum=MAX_LOOKBACK_MINUTES),
            default=LookBack.minutes,
            description=(
                "Every incremental sync reads at least this many minutes before each agent's "
                "bookmark again, so calls Bolna lists late, and data filled in after a call "
                "ended, are still emitted (each once). Costs no extra request when the agent "
                "is active; the state keeps each call of that span (id, created_at, "
                "updated_at). 0 turns it off: a call listed after the sync that should have "
                "seen it is then emitted only if it is newer than the newest call seen."
            ),
        ),
        th.Property(
            "status",
            th.StringType(allowed_values=list(EXECUTION_STATUSES)),
            description=(
                "Only calls with this status (passed to the API as a filter). A call that "
                "moves to another status is then no longer listed, and is not followed."
            ),
        ),
        th.Property(
            "call_type",
            th.StringType(allowed_values=["inbound", "outbound"]),
            description="Only inbound or only outbound calls.",
        ),
        th.Property(
            "provider",
            th.StringType(allowed_values=["plivo", "twilio", "websocket", "web-call"]),
            description="Only calls through this provider.",
        ),
        th.Property(
            "answered_by_voice_mail",
            th.BooleanType,
            description="Only calls answered (true) or not answered (false) by voice mail.",
        ),
        th.Property(
            "batch_id",
            th.StringType,
            description="Only the executions of this batch campaign.",
        ),
        th.Property(
            "max_workers",
            th.IntegerType(minimum=1, maximum=MAX_WORKERS),
            default=MAX_WORKERS,
            description=(
                "Most requests in flight: the pages of a window, and the first pages of the "
                "next windows and agents, are fetched in parallel (1 = one request at a time). "
                "Records and state come out in the same order either way. Requests in flight "
                "start at 2, double while Bolna keeps up, and halve when it answers 429."
            ),
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType(minimum=1),
            default=DEFAULT_EXECUTIONS_PER_MINUTE,
            description=(
                "Pace of requests to Bolna's agent routes (executions, agents), spread evenly "
                "across all workers. Bolna allows an organisation 500 a minute there, shared "
                "with its own apps; the default leaves them 200. Lowered on HTTP 429 and "
                "raised again slowly, never above this."
            ),
        ),
        th.Property(
            "max_other_requests_per_minute",
            th.IntegerType(minimum=1),
            default=DEFAULT_OTHER_PER_MINUTE,
            description=(
                "Pace of requests to Bolna's other routes (a call by id, batches, phone "
                "numbers, account), where Bolna allows 1,000 a minute."
            ),
        ),
        th.Property(
            "max_requests_per_second",
            th.NumberType(exclusive_minimum=0),
            description=(
                "Deprecated: use max_requests_per_minute. When set, caps both paces at 60 "
                "times this (a WARNING says so)."
            ),
        ),
        additional_properties=False,  # a misspelt setting name fails instead of being ignored
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401
        """Validate what JSON Schema cannot: the key, the URL, date formats and their order."""
        try:
            super().__init__(*args, **kwargs)
        except ConfigValidationError as exc:  # its lines quote values, a mistyped api_key too
            errors = [hide_secret_value(error, self.config_jsonschema) for error in exc.errors]
            raise ConfigValidationError(str(exc), errors=errors, schema=exc.schema) from None
        errors = [
            *api_setting_errors(self.config),
            *date_setting_errors(self.config),
            *sub_account_setting_errors(self.config),
        ]
        if errors and kwargs.get("validate_config", True):
            msg = "Config validation failed"
            raise ConfigValidationError(msg, errors=errors)

    @property
    def _env_var_config(self) -> dict[str, t.Any]:  # type: ignore[override]
        """TAP_BOLNA_* settings from this process's environment, and from nothing else.

        The SDK first loads the `.env` it finds above its own install directory over the
        environment (python-dotenv's override=True). In a Meltano project that is the project's
        `.env`, so with `--config=ENV` (`meltano test`) it beat a variable exported in the
        shell. Meltano has already put `.env` into our environment, below the shell's values.
        """
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        return parse_environment_config(schema, self._env_var_prefix, dotenv_path=os.devnull)

    @classmethod
    @contextlib.contextmanager
    def one_line_failures(cls) -> Iterator[None]:
        """When a run fails on bad settings or on Bolna, end with the one line that says why.

        The SDK's excepthook would bury the message under a traceback, and a bad setting found
        in a command-line callback (`--test`) would not even reach it.
        """
        try:
            yield
        except ConfigValidationError as exc:
            cls.logger.error("Config validation failed: %s", "; ".join(exc.errors) or exc)  # noqa: TRY400
        except BolnaAPIError as exc:
            cls.logger.error("%s", exc)  # noqa: TRY400
        except RetriableAPIError as exc:  # still failing when the backoff gave up
            cls.logger.error("%s (gave up after %d tries)", exc, BACKOFF_MAX_TRIES)  # noqa: TRY400
        except RETRIABLE_ERRORS as exc:  # connection errors, when the backoff gave up
            what = describe_failure(exc)
            cls.logger.error("%s (gave up after %d tries)", what, BACKOFF_MAX_TRIES)  # noqa: TRY400
        else:
            return
        sys.exit(1)

    @classmethod
    @override
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run a sync; when it fails on settings or on Bolna, end with one line that says why."""
        with cls.one_line_failures():
            super().invoke(*args, **kwargs)

    @classmethod
    @override
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """Name a config file that cannot be used, in one line (the SDK ends in a traceback)."""
        for path in value:
            problem = None if path == "ENV" else config_file_problem(path)
            if problem:
                cls.logger.error("%s", problem)
                ctx.exit(1)
        return super().cb_config(ctx, param, value)

    @classmethod
    @override
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """`--test`: two requests and one line, instead of a dry-run sync of every stream.

        The SDK's connection test syncs every stream up to its first record and then aborts
        it with an exception, which the SDK logs as an ERROR for each stream although nothing
        failed; and it walks every empty window before an agent's first call.
        """
        if value != CliTestOptionValue.All.value:  # not asked, or --test=schema: the SDK's
            with cls.one_line_failures():
                super().cb_test(ctx, param, value)
            return
        config = ctx.params.get("config")
        with cls.one_line_failures():
            tap = cls(
                config=getattr(config, "config", {}),
                parse_env_config=getattr(config, "parse_env", False),
                validate_config=True,
            )
            cls.logger.info("%s", tap.check_connection())
        ctx.exit()

    def check_connection(self) -> str:
        """Ask Bolna for the agents and one call of one agent; say what it answered."""
        executions = t.cast("BolnaStream", self.streams["executions"])
        agents = t.cast("BolnaStream", self.streams["agents"]).get_json("/v2/agent/all", {})
        wanted = self.config.get("agent_ids") or [agent["id"] for agent in agents[:1]]
        found = f"{len(agents)} agents"
        requests = 1
        sub_accounts = t.cast("BolnaStream", self.streams["sub_accounts"])
        if sub_accounts.accounts is not None and sub_accounts.accounts.include_sub_accounts:
            listed = sub_accounts.accounts.sub_accounts(sub_accounts.get_json)
            found += f"; {len(listed)} sub-accounts"
            requests += 1
        if wanted:
            # Bolna requires a date range of at most 7 days on every executions request.
            now = executions.server_clock.now()
            week = Window(now - dt.timedelta(days=MAX_WINDOW_DAYS), now)
            page = executions.get_json(
                f"/v2/agent/{wanted[0]}/executions",
                {"page_number": 1, "page_size": 1, **week.params()},
            )
            requests += 1
            total = page.get("total", "an unknown number of")
            found += f"; agent {wanted[0]} has {total} calls in the last {MAX_WINDOW_DAYS} days"
        return (
            f"Connection test passed: {self.config['api_url']} accepted the API key; {found} "
            f"({requests} requests)"
        )

    @override
    def discover_streams(self) -> list[BolnaStream]:
        found = [
            streams.AgentsStream(self),
            streams.ExecutionsStream(self),
            streams.ExecutionLogsStream(self),
            streams.BatchesStream(self),
            streams.PhoneNumbersStream(self),
            streams.KnowledgebasesStream(self),
            streams.AccountStream(self),
            streams.SubAccountsStream(self),
            streams.SubAccountUsageStream(self),
        ]
        # One pace per route group for every stream and worker, and one view of Bolna's clock.
        pacing = Pacing(self.paces(), logger=self.logger)
        concurrency = AdaptiveConcurrency(self.config["max_workers"], logger=self.logger)
        clock = ServerClock()
        stats = SyncStats()
        # One place maps an account to its key; streams only see contexts.
        accounts = AccountKeys(
            self.config["api_key"],
            include_sub_accounts=self.config.get("include_sub_accounts", False),
            sub_account_ids=self.config.get("sub_account_ids"),
        )
        for stream in found:
            if not any(isinstance(f, ReportedFailureLogFilter) for f in stream.logger.filters):
                stream.logger.addFilter(ReportedFailureLogFilter())
            stream.pacing = pacing
            stream.concurrency = concurrency
            stream.server_clock = clock
            stream.stats = stats
            stream.accounts = accounts
        found[0].reports_sync_summary = True  # once, after every stream has synced
        return found

    def paces(self) -> dict[str, float]:
        """Requests a minute for each route group, with the deprecated per-second cap applied."""
        paces = {
            EXECUTIONS_ROUTES: float(self.config["max_requests_per_minute"]),
            OTHER_ROUTES: float(self.config["max_other_requests_per_minute"]),
        }
        per_second = self.config.get("max_requests_per_second")
        if per_second:
            cap = 60.0 * per_second
            self.logger.warning(
                "max_requests_per_second is deprecated: set max_requests_per_minute (and "
                "max_other_requests_per_minute) instead; %.6g a second caps both at %.6g a "
                "minute.",
                per_second,
                cap,
            )
            paces = {group: min(pace, cap) for group, pace in paces.items()}
        return paces


class ReportedFailureLogFilter(logging.Filter):
    """Drops the SDK's "An unhandled error occurred while syncing" for a failure we report.

    The SDK logs it at ERROR for the failing stream and again for each parent, before the
    exception reaches `TapBolna.one_line_failures`, which says what failed and where.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every other line, and this one when the failure is not one the tap reports."""
        if not str(record.msg).startswith("An unhandled error occurred while syncing"):
            return True
        return not isinstance(sys.exc_info()[1], ONE_LINE_FAILURES)  # logged in an except block


def config_file_problem(path: str) -> str | None:
    """Why a --config file cannot be used, in one line; None if it holds a JSON object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"Config file {path} not found"
    except OSError as exc:
        return f"Config file {path} cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return f"Config file {path} is not UTF-8 text"
    try:
        value = json.loads(text)  # the message gives the position, never the content
    except json.JSONDecodeError as exc:
        return f"Config file {path} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        return f"Config file {path} holds {kind}, not a JSON object of settings"
    return None


def api_setting_errors(config: Mapping[str, t.Any]) -> list[str]:
    """One line per unusable api_key or api_url, naming it (never quoting the key)."""
    errors: list[str] = []
    key = config.get("api_key")
    if isinstance(key, str) and not key.strip():
        errors.append("api_key is empty: set it to your Bolna API key (dashboard → Developers)")
    url = config.get("api_url")
    problem = api_url_problem(url) if isinstance(url, str) else None
    if problem:
        errors.append(problem)
    return errors


def api_url_problem(url: str) -> str | None:
    """api_url must be an absolute https URL, or http only to this machine (the fake API)."""
    parts = urlparse(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = urlparse("")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"api_url: {url!r} is not an absolute http(s) URL (like https://api.bolna.ai)"
    if parts.username or parts.password:  # not quoted: that part may be a secret
        return "api_url must not hold a user name or password (the key goes in api_key)"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (
            f"api_url: {url!r} would send the API key in clear text; use https:// "
            "(plain http:// is only allowed to 127.0.0.1, localhost or [::1])"
        )
    return None


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hide_secret_value(error: str, config_schema: Mapping[str, t.Any]) -> str:
    """A schema error about a secret setting, without the value the validator quotes."""
    for name, schema in config_schema.get("properties", {}).items():
        if schema.get("secret") and error.endswith(f" in config[{name!r}]"):
            declared = schema.get("type", [])
            kinds = [declared] if isinstance(declared, str) else list(declared)
            kinds = [kind for kind in kinds if kind != "null"]
            expected = " or ".join(kinds) or "valid value"
            return f"{name} must be a {expected} (the value given is not shown: it is secret)"
    return error


def sub_account_setting_errors(config: Mapping[str, t.Any]) -> list[str]:
    """sub_account_ids without include_sub_accounts would silently sync no sub-account."""
    if config.get("sub_account_ids") and not config.get("include_sub_accounts"):
        return ["sub_account_ids is set but include_sub_accounts is not: set it to true"]
    return []


def date_setting_errors(config: Mapping[str, t.Any]) -> list[str]:
    """One line per bad date setting, naming it (the SDK does not check `format`)."""
    errors: list[str] = []
    parsed = {}
    for setting in ("start_date", "end_date"):
        value = config.get(setting)
        if value is None:
            continue
        try:
            parsed[setting] = parse_timestamp(str(value))
        except (ValueError, TypeError):
            errors.append(
                f"{setting}: {value!r} is not an ISO 8601 date or timestamp "
                "(for example 2026-01-31 or 2026-01-31T08:00:00Z)"
            )
    if len(parsed) == 2 and parsed["end_date"] <= parsed["start_date"]:  # noqa: PLR2004
        errors.append("end_date must be later than start_date")
    return errors


if __name__ == "__main__":
    TapBolna.cli()
