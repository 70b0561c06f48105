"""Date windows over `created_at` and the per-agent bookmark rules.

The executions endpoint filters on `created_at` only, inclusive at both ends, and rejects
ranges wider than 7 days. So a sync walks consecutive windows that share their edges; a call
exactly on an edge arrives twice and is emitted once. A call's status changes after it is
created, so calls seen while still pending are kept in the bookmark and fetched again later.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from dataclasses import dataclass, field

import pendulum

from tap_bolna.schemas import PENDING_EXECUTION_STATUSES

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

PENDING_STATUSES = frozenset(PENDING_EXECUTION_STATUSES)

# The API's documented timestamp form ("2025-05-07T00:00:00.000Z"): milliseconds, UTC.
_PRECISION = dt.timedelta(milliseconds=1)


def parse_timestamp(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp to an aware UTC datetime; naive values are taken as UTC."""
    try:
        # Fast path for the API's own form (Python 3.11+ reads "Z"); it runs once per record.
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = _parse_with_pendulum(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _parse_with_pendulum(value: str) -> dt.datetime:
    """Any other ISO 8601 form pendulum accepts, as a plain (not pendulum) datetime."""
    parsed = pendulum.parse(value, tz="UTC")
    if not isinstance(parsed, dt.datetime):
        msg = f"{value!r} is a date or duration, not a timestamp"
        raise TypeError(msg)
    # pendulum's DateTime loses its tzinfo in some arithmetic; keep the stdlib type.
    utc = parsed.in_timezone("UTC")
    return dt.datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
        tzinfo=dt.timezone.utc,
    )  # fmt: skip


def floor_to_api_precision(moment: dt.datetime) -> dt.datetime:
    """Round down to whole milliseconds, so window edges are exactly what we send."""
    moment = moment.astimezone(dt.timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_timestamp(moment: dt.datetime) -> str:
    """The form sent as `from`/`to` and kept in state: `2025-05-07T00:00:00.000Z`."""
    moment = floor_to_api_precision(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Window:
    """One `from`..`to` request range, both ends inclusive."""

    start: dt.datetime
    end: dt.datetime
    # A re-check window only revisits calls that were pending; it never advances the bookmark.
    recheck: bool = False

    def params(self) -> dict[str, str]:
        """The query parameters for this window."""
        return {"from": format_timestamp(self.start), "to": format_timestamp(self.end)}


def forward_windows(start: dt.datetime, end: dt.datetime, width: dt.timedelta) -> Iterator[Window]:
    """Consecutive windows of at most `width` from `start` to `end`, sharing their edges."""
    start, end = floor_to_api_precision(start), floor_to_api_precision(end)
    while start < end:
        window_end = min(start + width, end)
        yield Window(start, window_end)
        start = window_end


def recheck_windows(created: list[dt.datetime], width: dt.timedelta) -> Iterator[Window]:
    """The fewest windows of at most `width` that cover every given creation time.

    Each window spans only from one pending call to the last one within `width`, so the
    requests scale with the pending calls, not with everything created around them.
    """
    remaining = sorted(floor_to_api_precision(moment) for moment in created)
    while remaining:
        first = remaining[0]
        inside = [moment for moment in remaining if moment <= first + width]
        # End one tick after the last call: the API compares created_at at full precision.
        yield Window(first, inside[-1] + _PRECISION, recheck=True)
        remaining = remaining[len(inside) :]


class PendingCall(t.TypedDict):
    """A call last emitted with a status that can still change."""

    created_at: str
    status: str


@dataclass
class AgentBookmark:
    """One agent's state partition: synced through when, and which calls were still pending.

    `synced_through` is the `to` of the last completed window: every call created at or
    before it has been emitted. `pending` maps execution id -> {created_at, status} for calls
    that were emitted with a status that can still change.
    """

    synced_through: dt.datetime | None = None
    pending: dict[str, PendingCall] = field(default_factory=dict)

    REPLICATION_KEY: t.ClassVar[str] = "created_at"

    @classmethod
    def from_state(cls, partition_state: Mapping[str, t.Any]) -> AgentBookmark:
        """Read the bookmark the SDK keeps for one partition (absent values mean 'never synced')."""
        value = partition_state.get("replication_key_value")
        same_key = partition_state.get("replication_key") == cls.REPLICATION_KEY
        return cls(
            synced_through=parse_timestamp(value) if value and same_key else None,
            pending=dict(partition_state.get("pending_calls") or {}),
        )

    def write_to(self, partition_state: dict[str, t.Any]) -> None:
        """Store the bookmark in the SDK's partition state, in a form a person can read."""
        if self.synced_through is not None:
            partition_state["replication_key"] = self.REPLICATION_KEY
            partition_state["replication_key_value"] = format_timestamp(self.synced_through)
        partition_state["pending_calls"] = dict(sorted(self.pending.items()))


@dataclass
class SyncPlan:
    """Which windows one agent's sync walks, oldest first."""

    windows: list[Window]
    # Pending calls too old to re-check any more (the caller warns).
    expired_pending: dict[str, PendingCall]


def plan_sync(  # noqa: PLR0913
    bookmark: AgentBookmark,
    *,
    first_created_at: dt.datetime | None,
    end: dt.datetime,
    now: dt.datetime,
    window_days: int,
    pending_lookback_days: int,
) -> SyncPlan:
    """Plan the windows for one agent.

    `first_created_at` is where a sync with no bookmark starts (start_date, or the agent's
    oldest call); it is ignored once a bookmark exists, except that a later start_date wins.
    """
    width = dt.timedelta(days=window_days)
    horizon = now - dt.timedelta(days=pending_lookback_days)
    expired = {
        call_id: call
        for call_id, call in bookmark.pending.items()
        if parse_timestamp(call["created_at"]) < horizon
    }
    still_followed = [
        parse_timestamp(call["created_at"])
        for call_id, call in bookmark.pending.items()
        if call_id not in expired
    ]
    windows = list(recheck_windows(still_followed, width))

    start = bookmark.synced_through
    if first_created_at is not None and (start is None or first_created_at > start):
        start = first_created_at
    if start is not None:
        windows.extend(forward_windows(start, end, width))
    return SyncPlan(windows=windows, expired_pending=expired)


class EmitFilter:
    """Decides, record by record, what a window emits, and keeps the bookmark up to date.

    A record is emitted when it is newer than `synced_through`, or was pending last time and
    its status has changed since; and only once per sync: a call on a shared window edge, or
    a pending call that a re-check window and the first forward window both return,
    arrives twice.
    """

    def __init__(self, bookmark: AgentBookmark, lower_bound: dt.datetime | None) -> None:
        """Start from the stored bookmark; `lower_bound` (inclusive) applies when there is none."""
        self.bookmark = bookmark
        self._emitted_through = bookmark.synced_through
        if self._emitted_through is None and lower_bound is not None:
            self._emitted_through = lower_bound - dt.timedelta(microseconds=1)
        # Emitted ids that a later window of this sync returns again: never emitted twice.
        self._may_arrive_again: set[str] = set()

    def should_emit(self, record: Mapping[str, t.Any], window: Window) -> bool:
        """Whether to emit this record; updates the pending set when it is emitted."""
        call_id = str(record["id"])
        if call_id in self._may_arrive_again:
            return False
        created = parse_timestamp(record["created_at"])
        status = str(record.get("status"))
        is_new = self._emitted_through is None or created > self._emitted_through
        if not is_new:
            previous = self.bookmark.pending.get(call_id)
            if previous is None or previous["status"] == status:
                return False  # emitted before, and unchanged since
            self._may_arrive_again.add(call_id)
        elif window.recheck:
            return False
        elif created >= window.end:
            self._may_arrive_again.add(call_id)  # on the edge the next window starts from
        if status in PENDING_STATUSES:
            self.bookmark.pending[call_id] = {"created_at": record["created_at"], "status": status}
        else:
            self.bookmark.pending.pop(call_id, None)
        return True

    def complete(self, window: Window) -> None:
        """Mark a window done: everything created up to its end has been emitted."""
        if window.recheck:
            return
        self._emitted_through = window.end
        if self.bookmark.synced_through is None or window.end > self.bookmark.synced_through:
            self.bookmark.synced_through = window.end
