"""Date windows over `created_at` and the per-agent bookmark rules.

The executions endpoint filters on `created_at` only, inclusive at both ends, requires both
ends on every request and rejects ranges wider than 7 days. So a sync walks consecutive
windows that share their edges, from where the agent's history begins; a call exactly on an
edge arrives twice and is emitted once. A call changes after it is created, so calls seen in
a status that can still change (`statuses.follow_rule`) are kept in the bookmark and read
again by later syncs, by id or through a narrow window, whichever costs fewer requests.
"""

from __future__ import annotations

import datetime as dt
import math
import typing as t
from dataclasses import dataclass, field

import pendulum

from tap_bolna.statuses import Follow, follow_rule

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

# The API's documented timestamp form ("2025-05-07T00:00:00.000Z"): milliseconds, UTC.
_PRECISION = dt.timedelta(milliseconds=1)
_DAY = dt.timedelta(days=1)
# No call is older than its agent; this margin costs at most one more window.
AGENT_CREATED_MARGIN = _DAY
# Where an agent's history begins when Bolna gives it no created_at (and no start_date is set).
FALLBACK_HISTORY_DAYS = 730
# Calls listed late are created after the newest call seen; an idle agent is read again this
# far back for them (one window).
LATE_LISTING_DAYS = 7
# The rules the bookmark was written under; state without it followed call-disconnected,
# no-answer, busy, failed and error calls as final, and is read again once (see AgentBookmark).
STATE_VERSION = 2


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
    # A re-check window only revisits calls that were followed; it never advances the bookmark.
    recheck: bool = False
    # A re-check of this one call by id (`GET /executions/{id}`); its range is the call's own
    # millisecond, read when the id is not found.
    call_id: str | None = None

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


def recheck_windows(
    followed: Mapping[str, dt.datetime],
    width: dt.timedelta,
    *,
    page_size: int = 50,
    calls_per_day: Mapping[str, int] | None = None,
) -> Iterator[Window]:
    """The re-checks of followed calls (id -> created_at), oldest first, in the fewest requests.

    Calls are grouped while the group spans less than `width` and the calls between two of
    them (estimated from `calls_per_day`) fit on less than a page. A group is read through its
    window when that takes fewer pages than it has calls, else each call by id: so a few calls
    in a busy history cost a request each, and many calls close together a few pages.
    """
    per_day = calls_per_day or {}
    groups: list[list[tuple[dt.datetime, str]]] = []
    for call_id, created in sorted(followed.items(), key=lambda item: (item[1], item[0])):
        moment = floor_to_api_precision(created)
        if groups:
            group = groups[-1]
            close = estimated_calls(per_day, group[-1][0], moment) < page_size
            if close and moment < group[0][0] + width:
                group.append((moment, call_id))
                continue
        groups.append([(moment, call_id)])
    for group in groups:
        first, last = group[0][0], group[-1][0]
        # End one tick after the last call: the API compares created_at at full precision.
        end = last + _PRECISION
        calls = max(estimated_calls(per_day, first, end), len(group))
        if len(group) <= max(1, math.ceil(calls / page_size)):
            for moment, call_id in group:
                yield Window(moment, moment + _PRECISION, recheck=True, call_id=call_id)
        else:
            yield Window(first, end, recheck=True)


def estimated_calls(
    calls_per_day: Mapping[str, int], start: dt.datetime, end: dt.datetime
) -> float:
    """Calls created from `start` to `end`, from the calls seen per UTC day (spread evenly)."""
    if not calls_per_day or end <= start:
        return 0.0
    total = 0.0
    day = dt.datetime.combine(start.date(), dt.time(), tzinfo=dt.timezone.utc)
    while day < end:
        overlap = min(end, day + _DAY) - max(start, day)
        total += calls_per_day.get(day.date().isoformat(), 0) * (overlap / _DAY)
        day += _DAY
    return total


class PendingCall(t.TypedDict, total=False):
    """A call last emitted with a status that can still change (a followed call)."""

    created_at: str
    status: str
    updated_at: str  # absent in state written before updates were compared


class RecentCall(t.TypedDict):
    """A final call created inside the range the next sync reads again, as last emitted."""

    created_at: str
    updated_at: str


@dataclass(frozen=True)
class LookBack:
    """How far an incremental sync reads again behind its bookmark.

    Its defaults are the tap's setting defaults (`lookback_minutes`, `pending_lookback_days`,
    `retry_horizon_hours`).
    """

    # Calls listed (or finished) up to this late are still emitted by the next sync.
    minutes: int = 60
    # Calls in a pending status are followed this long after they were created: batches can
    # be scheduled 30 days ahead.
    pending_days: int = 35
    # no-answer, busy, failed and error calls are followed this long after their updated_at,
    # for Bolna's auto-retry (by default 30, 60 and 120 minutes apart) to put them back.
    retry_hours: int = 6

    def horizon(self, now: dt.datetime) -> dt.datetime:
        """The oldest `created_at` of a call a sync at `now` still follows."""
        return now - dt.timedelta(days=self.pending_days)

    def retry_open(self, updated: dt.datetime, now: dt.datetime) -> bool:
        """Whether a call that failed at `updated` may still be retried by Bolna at `now`."""
        return updated > now - dt.timedelta(hours=self.retry_hours)


@dataclass
class AgentBookmark:
    """One agent's state partition: how far it is synced, and what the next sync reads again.

    `synced_through` is the `to` of the last completed window, on Bolna's clock.
    `newest_created_at` is the newest call the API has shown for the agent: calls listed late
    can be created at any moment after it, so the next sync never starts later than it.
    `pending` maps execution id -> {created_at, status, updated_at} for calls emitted with a
    status that can still change; `recent` the same for final calls created in the range the
    next sync reads again, so that it emits them only if they changed. `recent` is None for
    state written before the look-back existed. `calls_per_day` counts the calls seen per UTC
    day of creation, within the follow horizon, to price re-checks (`recheck_windows`).

    `legacy`: written before STATE_VERSION, when call-disconnected and failed calls were
    taken as final. The next sync reads the follow horizon again once and emits the calls
    that changed after the bookmark (their `updated_at` is later), so none stays stale.
    """

    synced_through: dt.datetime | None = None
    newest_created_at: dt.datetime | None = None
    pending: dict[str, PendingCall] = field(default_factory=dict)
    recent: dict[str, RecentCall] | None = field(default_factory=dict)
    calls_per_day: dict[str, int] = field(default_factory=dict)
    legacy: bool = False

    REPLICATION_KEY: t.ClassVar[str] = "created_at"

    @classmethod
    def from_state(cls, partition_state: Mapping[str, t.Any]) -> AgentBookmark:
        """Read the bookmark the SDK keeps for one partition (absent values mean 'never synced')."""
        value = partition_state.get("replication_key_value")
        same_key = partition_state.get("replication_key") == cls.REPLICATION_KEY
        newest = partition_state.get("newest_created_at")
        recent = partition_state.get("recent_calls")
        synced_through = parse_timestamp(value) if value and same_key else None
        per_day = partition_state.get("calls_per_day")
        return cls(
            synced_through=synced_through,
            newest_created_at=parse_timestamp(newest) if newest else None,
            pending=dict(partition_state.get("pending_calls") or {}),
            recent=dict(recent) if isinstance(recent, dict) else None,
            calls_per_day=dict(per_day) if isinstance(per_day, dict) else {},
            legacy=synced_through is not None
            and (partition_state.get("state_version") != STATE_VERSION or recent is None),
        )

    def write_to(self, partition_state: dict[str, t.Any]) -> None:
        """Store the bookmark in the SDK's partition state, in a form a person can read."""
        if self.synced_through is not None:
            partition_state["replication_key"] = self.REPLICATION_KEY
            partition_state["replication_key_value"] = format_timestamp(self.synced_through)
        if self.newest_created_at is not None:
            partition_state["newest_created_at"] = format_timestamp(self.newest_created_at)
        partition_state["pending_calls"] = dict(sorted(self.pending.items()))
        partition_state["recent_calls"] = dict(sorted((self.recent or {}).items()))
        partition_state["calls_per_day"] = dict(sorted(self.calls_per_day.items()))
        if not self.legacy:
            partition_state["state_version"] = STATE_VERSION


def resume_from(
    bookmark: AgentBookmark, *, now: dt.datetime, lookback: LookBack
) -> dt.datetime | None:
    """Where an incremental sync starts walking forward (None: never synced).

    At least `lookback.minutes` before the bookmark, and never after the newest call the API
    has shown (calls listed late are created after it), but no further back than
    LATE_LISTING_DAYS, so an idle agent costs a window, not its whole history. A legacy
    bookmark reads the whole follow horizon again, once.
    """
    if bookmark.synced_through is None:
        return None
    if bookmark.legacy:
        reach_back = lookback.horizon(now)
    else:
        late = now - dt.timedelta(days=LATE_LISTING_DAYS)
        newest = bookmark.newest_created_at
        reach_back = late if newest is None else max(newest, late)
    return min(bookmark.synced_through - dt.timedelta(minutes=lookback.minutes), reach_back)


@dataclass
class SyncPlan:
    """Which windows one agent's sync walks, oldest first."""

    windows: list[Window]
    # Pending calls too old to re-check any more (the caller warns).
    expired_pending: dict[str, PendingCall]
    # Where the forward walk starts (None: nothing to walk).
    start: dt.datetime | None


def plan_sync(  # noqa: PLR0913
    bookmark: AgentBookmark,
    *,
    first_created_at: dt.datetime | None,
    end: dt.datetime,
    now: dt.datetime,
    window_days: int,
    lookback: LookBack,
    page_size: int = 50,
) -> SyncPlan:
    """Plan the windows for one agent.

    `first_created_at` is where a sync with no bookmark starts (start_date, or where the
    agent's history begins); once a bookmark exists it only matters if it is later (a later
    start_date wins). Followed calls older than the start are re-checked first (by id or
    through narrow windows); newer ones are read again by the forward walk anyway.
    """
    width = dt.timedelta(days=window_days)
    horizon = lookback.horizon(now)
    created = {
        call_id: parse_timestamp(call["created_at"]) for call_id, call in bookmark.pending.items()
    }
    expired = {
        call_id: bookmark.pending[call_id]
        for call_id, moment in created.items()
        if moment < horizon
    }

    start = resume_from(bookmark, now=now, lookback=lookback)
    if first_created_at is not None and (start is None or first_created_at > start):
        start = first_created_at
    before_start = {
        call_id: moment
        for call_id, moment in created.items()
        if call_id not in expired and (start is None or moment < start)
    }
    windows = list(
        recheck_windows(
            before_start, width, page_size=page_size, calls_per_day=bookmark.calls_per_day
        )
    )
    if start is not None:
        windows.extend(forward_windows(start, end, width))
    return SyncPlan(windows=windows, expired_pending=expired, start=start)


@dataclass
class AgentSync:
    """What one agent's sync will do, decided before its first request."""

    context: Mapping[str, t.Any]  # the agent's partition context, {"agent_id": ...}
    bookmark: AgentBookmark
    windows: list[Window]
    lower_bound: dt.datetime | None  # start_date: nothing created before it is emitted
    end: dt.datetime
    # Followed calls too old to follow any more, already dropped from the bookmark.
    expired_pending: dict[str, PendingCall] = field(default_factory=dict)
    # Bolna gave the agent no created_at: its history is read from FALLBACK_HISTORY_DAYS ago.
    history_assumed: bool = False

    @property
    def agent_id(self) -> str:
        """The agent's id."""
        return str(self.context["agent_id"])


def history_start(
    *, start_date: dt.datetime | None, agent_created_at: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime, bool]:
    """Where an agent's first sync starts, and whether that was assumed (no created_at).

    No call is older than its agent, so a start_date before the agent existed is skipped.
    """
    if agent_created_at is None:
        if start_date is not None:
            return start_date, False
        return now - dt.timedelta(days=FALLBACK_HISTORY_DAYS), True
    begins = agent_created_at - AGENT_CREATED_MARGIN
    return (begins if start_date is None else max(start_date, begins)), False


def plan_agent(  # noqa: PLR0913
    context: Mapping[str, t.Any],
    bookmark: AgentBookmark,
    *,
    now: dt.datetime,
    start_date: dt.datetime | None,
    end_date: dt.datetime | None,
    window_days: int,
    page_size: int,
    lookback: LookBack,
    agent_created_at: dt.datetime | None,
) -> AgentSync:
    """Plan one agent's sync: where it starts, its windows, the followed calls it drops.

    Every request needs a date range of at most 7 days, so even the first full backfill walks
    windows from where the agent's history begins (its created_at), checkpoints, resumes.
    """
    end = min(end_date or now, now)
    first_created_at, assumed = history_start(
        start_date=start_date, agent_created_at=agent_created_at, now=now
    )
    plan = plan_sync(
        bookmark,
        first_created_at=first_created_at,
        end=end,
        now=now,
        window_days=window_days,
        lookback=lookback,
        page_size=page_size,
    )
    for call_id in plan.expired_pending:
        bookmark.pending.pop(call_id, None)
    return AgentSync(
        context,
        bookmark,
        plan.windows,
        start_date,
        end,
        plan.expired_pending,
        history_assumed=assumed and bookmark.synced_through is None,
    )


def _changed(known: PendingCall | RecentCall, status: str, updated_at: str | None) -> bool:
    """Whether a call moved since it was emitted: its updated_at, else (old state) its status."""
    if status != known.get("status", status):
        return True
    before = known.get("updated_at")
    return before is not None and updated_at is not None and before != updated_at


class EmitFilter:
    """Decides, record by record, what an agent's sync emits, and keeps its bookmark up to date.

    A record is emitted when the previous syncs did not emit it (new, or listed late inside
    the range read again), or did and it has changed since (status or `updated_at`). Within
    one sync a call is emitted once, although it can arrive twice: on the edge two windows
    share, on two pages when calls shift while a window is paged, or in a window read again.
    A call is followed (kept in the bookmark, read again by later syncs) as long as
    `statuses.follow_rule` and the look-back say it can still change.
    """

    def __init__(
        self,
        bookmark: AgentBookmark,
        *,
        lower_bound: dt.datetime | None,
        now: dt.datetime,
        lookback: LookBack,
    ) -> None:
        """Start from the stored bookmark; nothing created before `lower_bound` is emitted."""
        self.bookmark = bookmark
        self._lower_bound = lower_bound
        self._now = now
        self._lookback = lookback
        # A legacy bookmark: calls created up to it were emitted as they were when it was set.
        self._legacy_through = bookmark.synced_through if bookmark.legacy else None
        if bookmark.recent is None:
            bookmark.recent = {}
        self._recent: dict[str, RecentCall] = bookmark.recent
        # The earliest created_at the next sync can read again, at least (it only rises).
        self._floor = resume_from(bookmark, now=now, lookback=lookback)
        self._window_floor: tuple[Window, dt.datetime | None] | None = None
        # Ids decided in the current window (with created_at), so a second arrival is ignored.
        self._decided: dict[str, dt.datetime] = {}
        self._window_newest: dt.datetime | None = None
        self._target_found = False  # the call a by-id re-check is for has been seen
        # Emitted calls no earlier sync emitted, and calls emitted again because they changed.
        self.new = 0
        self.changed = 0
        # Followed calls Bolna no longer has (404 by id, and not listed in their window).
        self.gone: list[str] = []

    def should_emit(self, record: Mapping[str, t.Any], window: Window) -> bool:
        """Whether to emit this record; remembers it for the next sync if it is in range."""
        call_id = str(record["id"])
        if call_id == window.call_id:
            self._target_found = True
        if call_id in self._decided:
            return False
        created_at = str(record["created_at"])
        created = parse_timestamp(created_at)
        if self._window_newest is None or created > self._window_newest:
            self._window_newest = created
        status = str(record.get("status"))
        updated_at = record.get("updated_at")
        updated_at = None if updated_at is None else str(updated_at)
        known = self.bookmark.pending.get(call_id) or self._recent.get(call_id)
        if known is not None:
            emit = _changed(known, status, updated_at)
            self.changed += emit
        elif window.recheck or (self._lower_bound is not None and created < self._lower_bound):
            return False  # a call no earlier sync followed, outside what this one reads
        else:
            self._count_day(created)
            legacy_through = self._legacy_through
            if legacy_through is not None and created <= legacy_through:
                # Emitted before, as it was then: again only if it changed after that sync.
                emit = updated_at is not None and parse_timestamp(updated_at) > legacy_through
                self.changed += emit
            else:
                emit = True  # new, or listed after the sync that should have seen it
                self.new += 1
        self._decided[call_id] = created
        self._remember(
            window, call_id, created, created_at=created_at, status=status, updated_at=updated_at
        )
        return emit

    def follows(self, status: str, created: dt.datetime, updated_at: str | None) -> bool:
        """Whether a call in `status` can still change, so later syncs read it again."""
        rule = follow_rule(status)
        if rule is Follow.RETRY_HORIZON:
            changed = created if updated_at is None else parse_timestamp(updated_at)
            return self._lookback.retry_open(changed, self._now)
        return rule is Follow.UNTIL_FINAL

    def _count_day(self, created: dt.datetime) -> None:
        day = created.date().isoformat()
        self.bookmark.calls_per_day[day] = self.bookmark.calls_per_day.get(day, 0) + 1

    def _floor_after(self, window: Window) -> dt.datetime | None:
        """The floor once `window` is done, as far as known now (it can only rise).

        So a dense backfill window does not keep every call it emits until it ends.
        """
        if self._window_floor is None or self._window_floor[0] is not window:
            synced = self.bookmark.synced_through
            if not window.recheck and (synced is None or window.end > synced):
                synced = window.end
            after = AgentBookmark(synced, self.bookmark.newest_created_at)
            self._window_floor = (
                window,
                resume_from(after, now=self._now, lookback=self._lookback),
            )
        return self._window_floor[1]

    def _remember(  # noqa: PLR0913
        self,
        window: Window,
        call_id: str,
        created: dt.datetime,
        *,
        created_at: str,
        status: str,
        updated_at: str | None,
    ) -> None:
        if self.follows(status, created, updated_at):
            pending: PendingCall = {"created_at": created_at, "status": status}
            if updated_at is not None:
                pending["updated_at"] = updated_at
            self.bookmark.pending[call_id] = pending
            self._recent.pop(call_id, None)
            return
        self.bookmark.pending.pop(call_id, None)
        floor = self._floor_after(window)
        if floor is None or created >= floor:
            self._recent[call_id] = {"created_at": created_at, "updated_at": updated_at or ""}
        else:
            self._recent.pop(call_id, None)  # decided here, and the next sync won't read it

    def complete(self, window: Window) -> None:
        """Mark a window done: move the bookmark and forget what the next sync won't read."""
        bookmark = self.bookmark
        missing = window.call_id if not self._target_found else None
        if missing is not None and bookmark.pending.pop(missing, None) is not None:
            self.gone.append(missing)
        self._target_found = False
        if not window.recheck and (
            bookmark.synced_through is None or window.end > bookmark.synced_through
        ):
            bookmark.synced_through = window.end
        if (
            self._legacy_through is not None
            and not window.recheck
            and window.end >= self._legacy_through
        ):
            bookmark.legacy = False  # read again past the old bookmark: current from here on
            self._legacy_through = None
        newest = self._window_newest
        if newest is not None and (
            bookmark.newest_created_at is None or newest > bookmark.newest_created_at
        ):
            bookmark.newest_created_at = newest
        self._window_newest = None
        self._window_floor = None
        # A call on the edge the next window starts from arrives again there.
        self._decided = {
            call_id: created for call_id, created in self._decided.items() if created >= window.end
        }
        oldest_day = self._lookback.horizon(self._now).date().isoformat()
        for day in [day for day in bookmark.calls_per_day if day < oldest_day]:
            del bookmark.calls_per_day[day]
        self._floor = resume_from(bookmark, now=self._now, lookback=self._lookback)
        if self._floor is not None:
            floor = self._floor
            for call_id in [
                call_id
                for call_id, call in self._recent.items()
                if parse_timestamp(call["created_at"]) < floor
            ]:
                del self._recent[call_id]
