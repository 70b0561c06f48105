"""Query parameters: read, checked, and turned into values that are bound into SQL.

Every problem is a BadParameterError whose message is one line: which parameter, and why.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.datastructures import QueryParams

# Bolna's 16 call statuses (transform/dbt_project.yml vars; tests/test_api.py checks they agree).
STATUSES = (
    "scheduled",
    "prepared",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "call-disconnected",
    "busy",
    "no-answer",
    "failed",
    "canceled",
    "balance-low",
    "stopped",
    "error",
)
CALL_TYPES = ("inbound", "outbound")
FILTERS = ("agent_id", "batch_id", "sub_account_id", "status", "call_type", "from", "to")
PAGING = ("page_number", "page_size", "cursor")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
MAX_TEXT = 200  # longer ids are no id of Bolna's; refused before they reach SQL


class BadParameterError(ValueError):
    """A query parameter the endpoint cannot use; the message names it and says why."""


@dataclass(frozen=True)
class Filters:
    """Which calls: every given filter must match. Timestamps are naive UTC, as loaded."""

    agent_id: str | None = None
    batch_id: str | None = None
    sub_account_id: str | None = None
    status: str | None = None
    call_type: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this call, in newest-first order."""

    created_at: dt.datetime
    call_id: str
    page_number: int

    def encode(self) -> str:
        """The opaque `cursor` value of the Link header."""
        moment = self.created_at.isoformat(timespec="microseconds")
        text = f"{moment}|{self.call_id}|{self.page_number}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Read a cursor this endpoint gave; BadParameterError for anything else."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            created_at, call_id, page_number = text.split("|")
            cursor = cls(dt.datetime.fromisoformat(created_at), call_id, int(page_number))
            if cursor.page_number < 2 or cursor.created_at.tzinfo is not None:  # noqa: PLR2004
                raise ValueError(text)  # noqa: TRY301 - one message for every bad cursor
        except (ValueError, binascii.Error, UnicodeDecodeError):
            msg = "cursor: not a cursor this endpoint gave (use the Link header's URL as it is)"
            raise BadParameterError(msg) from None
        return cursor


@dataclass(frozen=True)
class Page:
    """Which page: by number, or after a cursor."""

    number: int = 1
    size: int = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None

    @property
    def offset(self) -> int:
        """Calls before this page (page_number paging)."""
        return (self.number - 1) * self.size


def single_values(query: QueryParams, allowed: Iterable[str]) -> dict[str, str]:
    """The parameters as a dict; BadParameterError for an unknown or repeated one."""
    known = tuple(allowed)
    values: dict[str, str] = {}
    for name, value in query.multi_items():
        if name not in known:
            takes = f"known: {', '.join(known)}" if known else "this endpoint takes none"
            msg = f"{name}: unknown parameter ({takes})"
            raise BadParameterError(msg)
        if name in values:
            msg = f"{name}: given twice; give one value"
            raise BadParameterError(msg)
        if len(value) > MAX_TEXT:
            msg = f"{name}: longer than {MAX_TEXT} characters"
            raise BadParameterError(msg)
        values[name] = value
    return values


def parse_filters(values: dict[str, str]) -> Filters:
    """agent_id, batch_id, sub_account_id, status, call_type, from, to."""
    status = values.get("status") or None
    if status is not None and status not in STATUSES:
        msg = f"status: unknown status {status!r} (one of: {', '.join(STATUSES)})"
        raise BadParameterError(msg)
    call_type = values.get("call_type") or None
    if call_type is not None and call_type not in CALL_TYPES:
        msg = f"call_type: must be inbound or outbound, got {call_type!r}"
        raise BadParameterError(msg)
    created_from = parse_timestamp("from", values.get("from"))
    created_to = parse_timestamp("to", values.get("to"))
    if created_from and created_to and created_from > created_to:
        msg = "from: is after to"
        raise BadParameterError(msg)
    return Filters(
        agent_id=values.get("agent_id") or None,
        batch_id=values.get("batch_id") or None,
        sub_account_id=values.get("sub_account_id") or None,
        status=status,
        call_type=call_type,
        created_from=created_from,
        created_to=created_to,
    )


def parse_page(values: dict[str, str]) -> Page:
    """page_number (from 1), page_size (1 to 100, default 50) and cursor."""
    number = parse_integer("page_number", values.get("page_number"), 1, 1, None)
    size = parse_integer("page_size", values.get("page_size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    token = values.get("cursor")
    if token and "page_number" in values:
        msg = "cursor: give page_number or cursor, not both"
        raise BadParameterError(msg)
    cursor = Cursor.decode(token) if token else None
    return Page(number=cursor.page_number if cursor else number, size=size, cursor=cursor)


def parse_integer(name: str, text: str | None, default: int, low: int, high: int | None) -> int:
    """A whole number in [low, high]."""
    if text is None or text == "":
        return default
    if (
        not (text.isascii() and text.isdigit())
        or (number := int(text)) < low
        or (high is not None and number > high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        msg = f"{name}: must be a whole number {bounds}, got {text!r}"
        raise BadParameterError(msg)
    return number


def parse_timestamp(name: str, text: str | None) -> dt.datetime | None:
    """ISO 8601 (`2026-01-31`, `2026-01-31T08:00:00Z`, `…+05:30`), as naive UTC."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        msg = f"{name}: not an ISO 8601 date or time, got {text!r} (e.g. 2026-01-31T08:00:00Z)"
        raise BadParameterError(msg) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment
